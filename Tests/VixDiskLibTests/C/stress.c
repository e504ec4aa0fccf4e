/* stress DIR DISKS THREADS ROUNDS: DISKS disks made with VixDiskLib_Create, all open for
 * writing; THREADS pthreads each write their own sectors of every disk (a pattern of disk,
 * thread and round) and read them back, while reading the other threads' sectors, for ROUNDS
 * rounds. Then every disk is closed, opened read-only again and every sector checked. Prints
 * the counts; exit 1 on any wrong byte or failed call. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vixDiskLib.h"

enum { SECTORS_PER_THREAD = 16, MAX_DISKS = 1000, MAX_THREADS = 64 };
static VixDiskLibConnection conn;
static VixDiskLibHandle disks[MAX_DISKS];
static int ndisks, nthreads, rounds;
static int errors;
static long ops;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned char pattern(int d, int t, int r, int i) { return (unsigned char)(d * 7 + t * 31 + r * 13 + i + 1); }

static void bad(const char *what, int d, int t, VixError e) {
  pthread_mutex_lock(&lock);
  if (errors++ < 10) {
    char *text = VixDiskLib_GetErrorText(e, NULL);
    fprintf(stderr, "stress: %s disk %d thread %d: %llu %s\n", what, d, t, (unsigned long long)VIX_ERROR_CODE(e), text ? text : "");
    VixDiskLib_FreeErrorText(text);
  }
  pthread_mutex_unlock(&lock);
}

static void *worker(void *arg) {
  int t = (int)(long)arg;
  unsigned char buf[SECTORS_PER_THREAD * 512], back[SECTORS_PER_THREAD * 512];
  long mine = 0;
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < ndisks; k++) {
      int d = (k + t * 13) % ndisks; /* every thread starts on another disk */
      for (int i = 0; i < SECTORS_PER_THREAD; i++) memset(buf + i * 512, pattern(d, t, r, i), 512);
      VixError e = VixDiskLib_Write(disks[d], (uint64)t * SECTORS_PER_THREAD, SECTORS_PER_THREAD, buf);
      if (VIX_FAILED(e)) bad("Write", d, t, e);
      e = VixDiskLib_Read(disks[d], (uint64)t * SECTORS_PER_THREAD, SECTORS_PER_THREAD, back);
      if (VIX_FAILED(e)) bad("Read", d, t, e);
      else if (memcmp(buf, back, sizeof buf) != 0) bad("read back differs", d, t, 0);
      /* Another thread's range: it holds one of that thread's patterns or zeros, whole per sector. */
      int o = (t + 1) % nthreads;
      e = VixDiskLib_Read(disks[d], (uint64)o * SECTORS_PER_THREAD, SECTORS_PER_THREAD, back);
      if (VIX_FAILED(e)) bad("Read other", d, t, e);
      for (int i = 0; i < SECTORS_PER_THREAD && VIX_SUCCEEDED(e); i++)
        for (int j = 1; j < 512; j++)
          if (back[i * 512 + j] != back[i * 512]) { bad("torn sector", d, t, 0); break; }
      mine += 3;
    }
  }
  pthread_mutex_lock(&lock);
  ops += mine;
  pthread_mutex_unlock(&lock);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: stress DIR DISKS THREADS ROUNDS\n"); return 2; }
  ndisks = atoi(argv[2]);
  nthreads = atoi(argv[3]);
  rounds = atoi(argv[4]);
  if (ndisks < 1 || ndisks > MAX_DISKS || nthreads < 1 || nthreads > MAX_THREADS || rounds < 1) return 2;
  if (VIX_FAILED(VixDiskLib_InitEx(8, 0, NULL, NULL, NULL, NULL, NULL))) return 1;
  if (VIX_FAILED(VixDiskLib_Connect(NULL, &conn))) return 1;
  char path[4096];
  for (int d = 0; d < ndisks; d++) {
    snprintf(path, sizeof path, "%s/disk%03d.vmdk", argv[1], d);
    VixDiskLibCreateParams p = {VIXDISKLIB_DISK_MONOLITHIC_SPARSE, VIXDISKLIB_ADAPTER_SCSI_LSILOGIC, 6, 8192, 0, 0};
    VixError e = VixDiskLib_Create(conn, path, &p, NULL, NULL);
    if (VIX_FAILED(e)) { bad("Create", d, -1, e); return 1; }
    e = VixDiskLib_Open(conn, path, 0, &disks[d]);
    if (VIX_FAILED(e)) { bad("Open", d, -1, e); return 1; }
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
    if (VIX_FAILED(e)) { bad("reopen", d, -1, e); continue; }
    for (int t = 0; t < nthreads; t++) {
      e = VixDiskLib_Read(h, (uint64)t * SECTORS_PER_THREAD, SECTORS_PER_THREAD, back);
      if (VIX_FAILED(e)) { bad("final Read", d, t, e); continue; }
      for (int i = 0; i < SECTORS_PER_THREAD; i++)
        for (int j = 0; j < 512; j++)
          if (back[i * 512 + j] != pattern(d, t, rounds - 1, i)) { bad("final content", d, t, 0); i = SECTORS_PER_THREAD; break; }
      checked += SECTORS_PER_THREAD;
    }
    VixDiskLib_Close(h);
  }
  VixDiskLib_Disconnect(conn);
  VixDiskLib_Exit();
  printf("disks=%d threads=%d ops=%ld checkedSectors=%ld errors=%d\n", ndisks, nthreads, ops, checked, errors);
  return errors ? 1 : 0;
}
