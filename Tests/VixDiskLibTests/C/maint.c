/* maint: the VixDiskLib calls vixcheck does not drive: Init (the older entry point),
 * WriteAsync, Grow, Shrink, Defragment, Rename, Unlink, SpaceNeededForClone, CheckRepair,
 * IsAttachPossible and Attach. VixMaintenanceTests compiles it with cc against the built library
 * and checks each result with qemu-img. Each subcommand prints key=value lines; exit 0 when the
 * calls behaved, 1 otherwise (with the call and its error text on stderr). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VIXTEST_NAME "maint"
#include "vixtest.h"

static void setup(void) {
  /* Init, not InitEx: the entry point of VDDK 1.x programs, still exported. */
  CHECK(VixDiskLib_Init(8, 0, NULL, NULL, NULL, NULL));
  CHECK(VixDiskLib_Connect(NULL, &conn));
}

static void teardown(void) {
  CHECK(VixDiskLib_Disconnect(conn));
  VixDiskLib_Exit();
}

static int progress_calls, progress_last;
static Bool progress(void *data, int percent) {
  (void)data;
  progress_calls++;
  progress_last = percent;
  return TRUE;
}

/* The byte every sector of request i holds. */
static uint8 pattern(unsigned i) { return (uint8)(0x41 + i % 50); }

static int completed, completed_ok;
static void done(void *data, VixError result) {
  (void)data;
  __atomic_add_fetch(&completed, 1, __ATOMIC_SEQ_CST);
  if (!VIX_FAILED(result)) __atomic_add_fetch(&completed_ok, 1, __ATOMIC_SEQ_CST);
}

/* writeasync PATH N: N WriteAsync requests of 64 KiB in flight at once, request i at sector
 * 256 * i (every other 64 KiB), filled with pattern(i); Wait; then Read checks them. */
static int cmd_writeasync(const char *path, unsigned n) {
  VixDiskLibHandle h = open_disk(path, 0);
  enum { SECTORS = 128 };
  uint8 *bufs = malloc((size_t)n * SECTORS * 512);
  if (!bufs) return 1;
  unsigned async = 0;
  for (unsigned i = 0; i < n; i++) {
    memset(bufs + (size_t)i * SECTORS * 512, pattern(i), SECTORS * 512);
    VixError e = VixDiskLib_WriteAsync(h, (VixDiskLibSectorType)i * 256, SECTORS,
                                       bufs + (size_t)i * SECTORS * 512, done, NULL);
    if (e == VIX_ASYNC) async++;
    else if (VIX_FAILED(e)) fail("VixDiskLib_WriteAsync", e);
  }
  CHECK(VixDiskLib_Wait(h));
  CHECK(VixDiskLib_Flush(h));
  uint8 *back = malloc(SECTORS * 512);
  unsigned bad = 0;
  for (unsigned i = 0; i < n && back; i++) {
    CHECK(VixDiskLib_Read(h, (VixDiskLibSectorType)i * 256, SECTORS, back));
    for (unsigned j = 0; j < SECTORS * 512; j++)
      if (back[j] != pattern(i)) {
        bad++;
        break;
      }
  }
  printf("async=%u\ncompleted=%d\ncompletedOK=%d\nbadRequests=%u\n", async, completed, completed_ok,
         bad);
  free(back);
  free(bufs);
  CHECK(VixDiskLib_Close(h));
  return bad == 0 && completed == (int)n ? 0 : 1;
}

/* grow PATH SECTORS */
static int cmd_grow(const char *path, unsigned long long sectors) {
  CHECK(VixDiskLib_Grow(conn, path, sectors, FALSE, progress, NULL));
  VixDiskLibHandle h = open_disk(path, VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  VixDiskLibInfo *info = NULL;
  CHECK(VixDiskLib_GetInfo(h, &info));
  printf("capacity=%llu\nprogressCalls=%d\nprogressLast=%d\n", (unsigned long long)info->capacity,
         progress_calls, progress_last);
  VixDiskLib_FreeInfo(info);
  CHECK(VixDiskLib_Close(h));
  return 0;
}

/* grow-smaller PATH SECTORS: Grow to fewer sectors must fail; prints its code. */
static int cmd_grow_smaller(const char *path, unsigned long long sectors) {
  VixError e = VixDiskLib_Grow(conn, path, sectors, FALSE, NULL, NULL);
  printf("code=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  return VIX_FAILED(e) ? 0 : 1;
}

/* shrink PATH / defragment PATH: on a writable handle, which stays usable after the call. */
static int cmd_rewrite(const char *path, int defragment) {
  VixDiskLibHandle h = open_disk(path, 0);
  if (defragment) CHECK(VixDiskLib_Defragment(h, progress, NULL));
  else CHECK(VixDiskLib_Shrink(h, progress, NULL));
  /* The handle still reads after the rewrite. */
  uint8 sector[512];
  CHECK(VixDiskLib_Read(h, 0, 1, sector));
  printf("progressCalls=%d\nprogressLast=%d\nfirstByte=%u\n", progress_calls, progress_last,
         sector[0]);
  CHECK(VixDiskLib_Close(h));
  return 0;
}

/* space PATH TYPE */
static int cmd_space(const char *path, int type) {
  VixDiskLibHandle h = open_disk(path, VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  uint64 needed = 0;
  CHECK(VixDiskLib_SpaceNeededForClone(h, (VixDiskLibDiskType)type, &needed));
  printf("spaceNeeded=%llu\n", (unsigned long long)needed);
  CHECK(VixDiskLib_Close(h));
  return 0;
}

/* checkrepair PATH REPAIR: prints the code (0 when clean or repaired). */
static int cmd_checkrepair(const char *path, int repair) {
  VixError e = VixDiskLib_CheckRepair(conn, path, repair ? TRUE : FALSE);
  char *text = VixDiskLib_GetErrorText(e, NULL);
  printf("code=%llu\ntext=%s\n", (unsigned long long)VIX_ERROR_CODE(e), text ? text : "");
  VixDiskLib_FreeErrorText(text);
  return 0;
}

/* attach PARENT CHILD: IsAttachPossible, then Attach; the child handle then reads the chain.
 * Prints both codes and, after Attach, the first byte of sector 0 read through the child. */
static int cmd_attach(const char *parent, const char *child) {
  VixDiskLibHandle p = open_disk(parent, VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  VixDiskLibHandle c = open_disk(child, 0);
  VixError possible = VixDiskLib_IsAttachPossible(p, c);
  printf("possible=%llu\n", (unsigned long long)VIX_ERROR_CODE(possible));
  if (VIX_FAILED(possible)) {
    CHECK(VixDiskLib_Close(c));
    CHECK(VixDiskLib_Close(p));
    return 0;
  }
  CHECK(VixDiskLib_Attach(p, c)); /* p is invalid from here on, as in VixDiskLib */
  uint8 sector[512];
  CHECK(VixDiskLib_Read(c, 0, 1, sector));
  VixDiskLibInfo *info = NULL;
  CHECK(VixDiskLib_GetInfo(c, &info));
  printf("firstByte=%u\nnumLinks=%d\n", sector[0], info->numLinks);
  VixDiskLib_FreeInfo(info);
  CHECK(VixDiskLib_Close(c));
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr,
            "usage: maint writeasync PATH N | grow PATH SECTORS | grow-smaller PATH SECTORS |\n"
            "       shrink PATH | defragment PATH | rename SRC DST | unlink PATH |\n"
            "       space PATH TYPE | checkrepair PATH 0|1 | attach PARENT CHILD\n");
    return 2;
  }
  setup();
  const char *cmd = argv[1];
  int rc = 2;
  if (!strcmp(cmd, "writeasync") && argc == 4) rc = cmd_writeasync(argv[2], (unsigned)atoi(argv[3]));
  else if (!strcmp(cmd, "grow") && argc == 4) rc = cmd_grow(argv[2], strtoull(argv[3], NULL, 10));
  else if (!strcmp(cmd, "grow-smaller") && argc == 4)
    rc = cmd_grow_smaller(argv[2], strtoull(argv[3], NULL, 10));
  else if (!strcmp(cmd, "shrink")) rc = cmd_rewrite(argv[2], 0);
  else if (!strcmp(cmd, "defragment")) rc = cmd_rewrite(argv[2], 1);
  else if (!strcmp(cmd, "rename") && argc == 4) {
    CHECK(VixDiskLib_Rename(argv[2], argv[3]));
    rc = 0;
  } else if (!strcmp(cmd, "unlink")) {
    CHECK(VixDiskLib_Unlink(conn, argv[2]));
    rc = 0;
  } else if (!strcmp(cmd, "space") && argc == 4) rc = cmd_space(argv[2], atoi(argv[3]));
  else if (!strcmp(cmd, "checkrepair") && argc == 4) rc = cmd_checkrepair(argv[2], atoi(argv[3]));
  else if (!strcmp(cmd, "attach") && argc == 4) rc = cmd_attach(argv[2], argv[3]);
  teardown();
  return rc;
}
