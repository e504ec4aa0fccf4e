/* ext: the extensions of vixDiskLibExt.h through their C API, one subcommand per call; the
 * output is compared with vmdk-inspect's JSON by VixExtTests (InteropTests).
 *
 *   ext changeid DISK                    code=, id=
 *   ext changed DISK ID [START]          code=, text=, startOffset=, length=, then "area START LENGTH"
 *   ext write DISK SECTOR COUNT BYTE     VixDiskLib_Write of COUNT sectors of BYTE; code=
 *   ext status DISK [START COUNT [MAX]]  code=, then "extent OFFSET LENGTH FLAGS DEPTH" (sectors)
 *   ext statusall DISK MAX               the whole disk in calls of at most MAX extents, continuing
 *                                        from the end of each list; calls=, then the extents
 *   ext snapshots DISK                   code=, count=, "snapshot PATH" lines, small= (the code with
 *                                        a 1-byte buffer), required=, writeOpen= (code of a
 *                                        writable VixDiskLib_Open of DISK)
 * Exit 0 unless the program itself went wrong (a call's failure is printed as its code). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vixDiskLib.h"
#include "vixDiskLibExt.h"

/* The layouts vixDiskLibExt.h promises (x86-64 and arm64). */
_Static_assert(offsetof(VixDiskLibExtChangeInfo, changedArea) == 24, "changedArea at 24");
_Static_assert(sizeof(VixDiskLibExtChangeInfo) == 40, "ChangeInfo 40 bytes");
_Static_assert(sizeof(VixDiskLibExtChangedArea) == 16, "ChangedArea 16 bytes");
_Static_assert(offsetof(VixDiskLibExtBlockStatus, extents) == 8, "extents at 8");
_Static_assert(sizeof(VixDiskLibExtBlockExtent) == 24, "BlockExtent 24 bytes");
_Static_assert(offsetof(VixDiskLibExtBlockExtent, depth) == 20, "depth at 20");

static VixDiskLibConnection conn;

static void text_of(VixError e) {
  char *t = VixDiskLib_GetErrorText(e, NULL);
  printf("text=%s\n", t ? t : "(null)");
  VixDiskLib_FreeErrorText(t);
}

static VixDiskLibHandle open_or_exit(const char *path, uint32 flags) {
  VixDiskLibHandle h = NULL;
  VixError e = VixDiskLib_Open(conn, path, flags, &h);
  if (VIX_FAILED(e)) {
    printf("code=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
    text_of(e);
    exit(0);
  }
  return h;
}

static int cmd_changeid(const char *path) {
  VixDiskLibHandle h = open_or_exit(path, VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  char id[256];
  size_t need = 0;
  /* Too small first: the length needed comes back with BUFFER_TOOSMALL. */
  VixError e = VixDiskLibExt_GetChangeId(h, id, 4, &need);
  printf("small=%llu\nrequired=%zu\n", (unsigned long long)VIX_ERROR_CODE(e), need);
  e = VixDiskLibExt_GetChangeId(h, id, sizeof id, &need);
  printf("code=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  if (VIX_SUCCEEDED(e)) printf("id=%s\nlen=%zu\n", id, strlen(id) + 1);
  else text_of(e);
  VixDiskLib_Close(h);
  return 0;
}

static int cmd_changed(const char *path, const char *id, uint64 start) {
  VixDiskLibHandle h = open_or_exit(path, VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  VixDiskLibExtChangeInfo *info = NULL;
  VixError e = VixDiskLibExt_QueryChangedDiskAreas(h, id, start, &info);
  printf("code=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  if (VIX_FAILED(e)) {
    text_of(e);
    printf("null=%d\n", info == NULL);
  } else {
    printf("startOffset=%llu\nlength=%llu\nnum=%u\n", (unsigned long long)info->startOffset,
           (unsigned long long)info->length, info->numChangedAreas);
    for (uint32 i = 0; i < info->numChangedAreas; i++)
      printf("area %llu %llu\n", (unsigned long long)info->changedArea[i].start,
             (unsigned long long)info->changedArea[i].length);
    VixDiskLibExt_FreeChangeInfo(info);
  }
  VixDiskLib_Close(h);
  return 0;
}

static int cmd_write(const char *path, uint64 sector, uint64 count, int byte) {
  VixDiskLibHandle h = open_or_exit(path, 0);
  uint8 *buf = malloc(count * 512);
  memset(buf, byte, count * 512);
  VixError e = VixDiskLib_Write(h, sector, count, buf);
  printf("code=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  free(buf);
  e = VixDiskLib_Close(h);
  printf("close=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  return 0;
}

static int print_status(VixDiskLibHandle h, uint64 start, uint64 count, uint32 max,
                        uint64 *end) {
  VixDiskLibExtBlockStatus *st = NULL;
  VixError e = VixDiskLibExt_QueryBlockStatus(h, start, count, max, &st);
  if (VIX_FAILED(e)) {
    printf("code=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
    text_of(e);
    return -1;
  }
  int n = (int)st->numExtents;
  for (uint32 i = 0; i < st->numExtents; i++) {
    VixDiskLibExtBlockExtent *x = &st->extents[i];
    printf("extent %llu %llu %u %d\n", (unsigned long long)x->offset,
           (unsigned long long)x->length, x->flags, x->depth);
    if (end) *end = x->offset + x->length;
  }
  VixDiskLibExt_FreeBlockStatus(st);
  return n;
}

static uint64 capacity_of(VixDiskLibHandle h) {
  VixDiskLibInfo *info = NULL;
  if (VIX_FAILED(VixDiskLib_GetInfo(h, &info))) exit(1);
  uint64 c = info->capacity;
  VixDiskLib_FreeInfo(info);
  return c;
}

static int cmd_status(const char *path, int argc, char **argv) {
  VixDiskLibHandle h = open_or_exit(path, VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  uint64 start = argc > 0 ? strtoull(argv[0], NULL, 0) : 0;
  uint64 count = argc > 1 ? strtoull(argv[1], NULL, 0) : capacity_of(h);
  uint32 max = argc > 2 ? (uint32)strtoul(argv[2], NULL, 0) : 0;
  if (print_status(h, start, count, max, NULL) >= 0) printf("code=0\n");
  VixDiskLib_Close(h);
  return 0;
}

static int cmd_statusall(const char *path, uint32 max) {
  VixDiskLibHandle h = open_or_exit(path, VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  uint64 capacity = capacity_of(h), next = 0;
  int calls = 0;
  while (next < capacity && calls < 100000) {
    uint64 end = next;
    int n = print_status(h, next, capacity - next, max, &end);
    calls++;
    if (n <= 0 || end <= next) {
      printf("stuck=%llu\n", (unsigned long long)next);
      break;
    }
    if ((uint32)n > max) printf("overfull=%d\n", n);
    next = end;
  }
  printf("calls=%d\ncode=0\n", calls);
  VixDiskLib_Close(h);
  return 0;
}

static int cmd_snapshots(const char *path) {
  uint32 count = 99;
  size_t need = 0;
  char small[1];
  VixError e = VixDiskLibExt_SnapshotsOnTop(conn, path, &count, small, sizeof small, &need);
  printf("small=%llu\nrequired=%zu\n", (unsigned long long)VIX_ERROR_CODE(e), need);
  char *names = malloc(need ? need : 1);
  e = VixDiskLibExt_SnapshotsOnTop(conn, path, &count, names, need, &need);
  printf("code=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  if (VIX_FAILED(e)) {
    text_of(e);
    free(names);
    return 0;
  }
  printf("count=%u\n", count);
  for (char *p = names; *p; p += strlen(p) + 1) printf("snapshot %s\n", p);
  free(names);
  /* The count alone (names NULL) agrees. */
  uint32 again = 99;
  e = VixDiskLibExt_SnapshotsOnTop(conn, path, &again, NULL, 0, NULL);
  printf("countOnly=%u\ncountOnlyCode=%llu\n", again, (unsigned long long)VIX_ERROR_CODE(e));
  VixDiskLibHandle h = NULL;
  e = VixDiskLib_Open(conn, path, 0, &h);
  printf("writeOpen=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  if (VIX_FAILED(e)) text_of(e);
  if (h) VixDiskLib_Close(h);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: ext changeid|changed|write|status|statusall|snapshots DISK ...\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (VIX_FAILED(VixDiskLib_InitEx(7, 0, NULL, NULL, NULL, NULL, NULL))) return 1;
  if (VIX_FAILED(VixDiskLib_ConnectEx(NULL, 0, NULL, NULL, &conn))) return 1;
  const char *cmd = argv[1], *disk = argv[2];
  int rc = 2;
  if (strcmp(cmd, "changeid") == 0) rc = cmd_changeid(disk);
  else if (strcmp(cmd, "changed") == 0 && argc >= 4)
    rc = cmd_changed(disk, argv[3], argc > 4 ? strtoull(argv[4], NULL, 0) : 0);
  else if (strcmp(cmd, "write") == 0 && argc == 6)
    rc = cmd_write(disk, strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0), atoi(argv[5]));
  else if (strcmp(cmd, "status") == 0) rc = cmd_status(disk, argc - 3, argv + 3);
  else if (strcmp(cmd, "statusall") == 0 && argc == 4)
    rc = cmd_statusall(disk, (uint32)strtoul(argv[3], NULL, 0));
  else if (strcmp(cmd, "snapshots") == 0) rc = cmd_snapshots(disk);
  VixDiskLib_Disconnect(conn);
  VixDiskLib_Exit();
  return rc;
}
