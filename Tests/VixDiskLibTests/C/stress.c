/* stress DIR DISKS THREADS ROUNDS [BASE]: DISKS disks, all open for writing at once; THREADS
 * pthreads each write their own sectors of every disk (a pattern of disk, thread and round)
 * and read them back, while reading another thread's sectors, for ROUNDS rounds. Then every
 * disk is closed, opened read-only again and every written sector checked.
 *
 * Without BASE the disks are made with VixDiskLib_Create. With BASE (a disk made by qemu-img
 * and qemu-io, see base_byte) the disks are VixDiskLib_CreateChild children of it, and each
 * thread also reads the base's part beyond the written sectors, through its child and through
 * one handle of BASE that all threads share, checking every byte against base_byte.
 *
 * Prints the counts; exit 1 on any wrong byte or failed call.
 *
 * stress race: two threads increment one counter without a lock (no VixDiskLib call), so that
 * a test can see that the ThreadSanitizer it runs under reports a race at all. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vixDiskLib.h"

enum {
  SECTORS_PER_THREAD = 16,
  MAX_DISKS = 1000,
  MAX_THREADS = 64,
  /* Sectors below this are the threads' own ranges; the base is checked from here on. */
  WRITTEN_AREA = SECTORS_PER_THREAD * MAX_THREADS,
  BASE_BLOCK = 128 /* sectors: the unit of the base's pattern */
};
static VixDiskLibConnection conn;
static VixDiskLibHandle disks[MAX_DISKS];
static VixDiskLibHandle base; /* shared by every thread */
static uint64 capacity = 8192;
static int ndisks, nthreads, rounds;
static int errors;
static long ops, baseSectors;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned char pattern(int d, int t, int r, int i) { return (unsigned char)(d * 7 + t * 31 + r * 13 + i + 1); }

/* The base's content, as the test wrote it with qemu-io: block k (128 sectors) of even k holds
 * the byte k % 250 + 1, odd blocks were never written (zeros). */
static unsigned char base_byte(uint64 sector) {
  uint64 k = sector / BASE_BLOCK;
  return k % 2 ? 0 : (unsigned char)(k % 250 + 1);
}

static void bad(const char *what, int d, int t, VixError e) {
  pthread_mutex_lock(&lock);
  if (errors++ < 10) {
    char *text = e ? VixDiskLib_GetErrorText(e, NULL) : NULL;
    fprintf(stderr, "stress: %s disk %d thread %d: %llu %s\n", what, d, t, (unsigned long long)VIX_ERROR_CODE(e),
            text ? text : "");
    VixDiskLib_FreeErrorText(text);
  }
  pthread_mutex_unlock(&lock);
}

/* Reads SECTORS_PER_THREAD sectors of the base's area at a place chosen by (d, t, r) through h;
 * returns how many were checked. */
static long check_base(VixDiskLibHandle h, const char *what, int d, int t, int r, unsigned char *back) {
  uint64 slots = (capacity - WRITTEN_AREA) / SECTORS_PER_THREAD;
  uint64 s = WRITTEN_AREA + ((uint64)d * 7919 + (uint64)t * 131 + (uint64)r * 17) % slots * SECTORS_PER_THREAD;
  VixError e = VixDiskLib_Read(h, s, SECTORS_PER_THREAD, back);
  if (VIX_FAILED(e)) {
    bad(what, d, t, e);
    return 0;
  }
  for (int i = 0; i < SECTORS_PER_THREAD; i++) {
    unsigned char want = base_byte(s + i);
    for (int j = 0; j < 512; j++)
      if (back[i * 512 + j] != want) {
        bad(what, d, t, 0);
        return 0;
      }
  }
  return SECTORS_PER_THREAD;
}

static void *worker(void *arg) {
  int t = (int)(long)arg;
  unsigned char buf[SECTORS_PER_THREAD * 512], back[SECTORS_PER_THREAD * 512];
  long mine = 0, fromBase = 0;
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < ndisks; k++) {
      int d = (k + t * 13) % ndisks; /* every thread starts on another disk */
      for (int i = 0; i < SECTORS_PER_THREAD; i++) memset(buf + i * 512, pattern(d, t, r, i), 512);
      VixError e = VixDiskLib_Write(disks[d], (uint64)t * SECTORS_PER_THREAD, SECTORS_PER_THREAD, buf);
      if (VIX_FAILED(e)) bad("Write", d, t, e);
      e = VixDiskLib_Read(disks[d], (uint64)t * SECTORS_PER_THREAD, SECTORS_PER_THREAD, back);
      if (VIX_FAILED(e))
        bad("Read", d, t, e);
      else if (memcmp(buf, back, sizeof buf) != 0)
        bad("read back differs", d, t, 0);
      /* Another thread's range: one of that thread's patterns, or what was there before (the
       * base's bytes or zeros), whole per sector. */
      int o = (t + 1) % nthreads;
      e = VixDiskLib_Read(disks[d], (uint64)o * SECTORS_PER_THREAD, SECTORS_PER_THREAD, back);
      if (VIX_FAILED(e)) bad("Read other", d, t, e);
      for (int i = 0; i < SECTORS_PER_THREAD && VIX_SUCCEEDED(e); i++)
        for (int j = 1; j < 512; j++)
          if (back[i * 512 + j] != back[i * 512]) {
            bad("torn sector", d, t, 0);
            break;
          }
      mine += 3;
      if (base) {
        fromBase += check_base(disks[d], "base through child", d, t, r, back);
        fromBase += check_base(base, "base through the shared handle", d, t, r + 1, back);
        mine += 2;
      }
    }
  }
  pthread_mutex_lock(&lock);
  ops += mine;
  baseSectors += fromBase;
  pthread_mutex_unlock(&lock);
  return NULL;
}

static long unguarded;
static void *racer(void *arg) {
  for (int i = 0; i < 100000; i++) unguarded++;
  return arg;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "race") == 0) {
    pthread_t a, b;
    pthread_create(&a, NULL, racer, NULL);
    pthread_create(&b, NULL, racer, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("unguarded=%ld\n", unguarded);
    return 0;
  }
  if (argc != 5 && argc != 6) {
    fprintf(stderr, "usage: stress DIR DISKS THREADS ROUNDS [BASE]\n");
    return 2;
  }
  ndisks = atoi(argv[2]);
  nthreads = atoi(argv[3]);
  rounds = atoi(argv[4]);
  if (ndisks < 1 || ndisks > MAX_DISKS || nthreads < 1 || nthreads > MAX_THREADS || rounds < 1) return 2;
  if (VIX_FAILED(VixDiskLib_InitEx(8, 0, NULL, NULL, NULL, NULL, NULL))) return 1;
  if (VIX_FAILED(VixDiskLib_Connect(NULL, &conn))) return 1;
  if (argc == 6) {
    VixError e = VixDiskLib_Open(conn, argv[5], VIXDISKLIB_FLAG_OPEN_READ_ONLY, &base);
    if (VIX_FAILED(e)) {
      bad("Open base", -1, -1, e);
      return 1;
    }
    VixDiskLibInfo *info = NULL;
    e = VixDiskLib_GetInfo(base, &info);
    if (VIX_FAILED(e)) {
      bad("GetInfo base", -1, -1, e);
      return 1;
    }
    capacity = info->capacity;
    VixDiskLib_FreeInfo(info);
    if (capacity < WRITTEN_AREA + SECTORS_PER_THREAD) {
      fprintf(stderr, "stress: the base must have more than %d sectors\n", WRITTEN_AREA);
      return 2;
    }
  }
  char path[4096];
  for (int d = 0; d < ndisks; d++) {
    snprintf(path, sizeof path, "%s/disk%03d.vmdk", argv[1], d);
    VixError e;
    if (base) {
      e = VixDiskLib_CreateChild(base, path, VIXDISKLIB_DISK_MONOLITHIC_SPARSE, NULL, NULL);
    } else {
      VixDiskLibCreateParams p = {VIXDISKLIB_DISK_MONOLITHIC_SPARSE, VIXDISKLIB_ADAPTER_SCSI_LSILOGIC, 6, capacity, 0, 0};
      e = VixDiskLib_Create(conn, path, &p, NULL, NULL);
    }
    if (VIX_FAILED(e)) {
      bad(base ? "CreateChild" : "Create", d, -1, e);
      return 1;
    }
    e = VixDiskLib_Open(conn, path, 0, &disks[d]);
    if (VIX_FAILED(e)) {
      bad("Open", d, -1, e);
      return 1;
    }
  }
  pthread_t threads[MAX_THREADS];
  for (int t = 0; t < nthreads; t++) pthread_create(&threads[t], NULL, worker, (void *)(long)t);
  for (int t = 0; t < nthreads; t++) pthread_join(threads[t], NULL);
  for (int d = 0; d < ndisks; d++) {
    VixError e = VixDiskLib_Close(disks[d]);
    if (VIX_FAILED(e)) bad("Close", d, -1, e);
  }
  /* Reopened: each thread's range holds its last round's pattern. */
  long checked = 0;
  unsigned char back[SECTORS_PER_THREAD * 512];
  for (int d = 0; d < ndisks; d++) {
    snprintf(path, sizeof path, "%s/disk%03d.vmdk", argv[1], d);
    VixDiskLibHandle h = NULL;
    VixError e = VixDiskLib_Open(conn, path, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &h);
    if (VIX_FAILED(e)) {
      bad("reopen", d, -1, e);
      continue;
    }
    for (int t = 0; t < nthreads; t++) {
      e = VixDiskLib_Read(h, (uint64)t * SECTORS_PER_THREAD, SECTORS_PER_THREAD, back);
      if (VIX_FAILED(e)) {
        bad("final Read", d, t, e);
        continue;
      }
      for (int i = 0; i < SECTORS_PER_THREAD; i++)
        for (int j = 0; j < 512; j++)
          if (back[i * 512 + j] != pattern(d, t, rounds - 1, i)) {
            bad("final content", d, t, 0);
            i = SECTORS_PER_THREAD;
            break;
          }
      checked += SECTORS_PER_THREAD;
    }
    /* Beyond the threads' ranges the child still reads as its base. */
    if (base) checked += check_base(h, "final base through child", d, nthreads, rounds, back);
    VixDiskLib_Close(h);
  }
  if (base) VixDiskLib_Close(base);
  VixDiskLib_Disconnect(conn);
  VixDiskLib_Exit();
  printf("disks=%d threads=%d ops=%ld checkedSectors=%ld baseSectors=%ld errors=%d\n", ndisks, nthreads, ops,
         checked, baseSectors, errors);
  return errors ? 1 : 0;
}
