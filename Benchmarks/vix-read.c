/* vix-read: reads a whole disk through VixDiskLib and writes its bytes to standard output, as
 * `vmdk-inspect cat` does, so that both can be timed into the same pipe.
 *
 *   vix-read sync  DISK [REQUEST_BYTES] [--checksum]          VixDiskLib_Read, one at a time
 *   vix-read async DISK [REQUEST_BYTES] [DEPTH] [--checksum]  VixDiskLib_ReadAsync, DEPTH in flight
 *
 * REQUEST_BYTES defaults to 1 MiB, DEPTH to 16. Every byte of the disk, holes included, is
 * written to stdout in order. --checksum writes nothing and prints "BYTES bytes fnv1a HEX"
 * instead (a byte-wise FNV-1a: slow, about 1 s per GiB; for checking, never for timing).
 * Uses only VixDiskLib calls, so it runs unchanged on VMware's library. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vixDiskLib.h"

static int checksum;
static uint64_t fnv_state = 1469598103934665603ULL, total;

static void die(const char *what, VixError err) {
  char *text = VixDiskLib_GetErrorText(err, NULL);
  fprintf(stderr, "vix-read: %s: %s\n", what, text ? text : "?");
  VixDiskLib_FreeErrorText(text);
  exit(1);
}

/* The bytes of the disk, in order: folded into the checksum or written to stdout. */
static void consume(const uint8_t *p, size_t n) {
  total += n;
  if (checksum) {
    uint64_t h = fnv_state;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    fnv_state = h;
    return;
  }
  while (n > 0) {
    ssize_t w = write(1, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      fprintf(stderr, "vix-read: write to stdout: %s\n", strerror(errno));
      exit(1);
    }
    p += w;
    n -= (size_t)w;
  }
}

struct slot {
  uint8_t *buf;
  uint64_t sector, count;
  int busy, done;
  VixError result;
};
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;

static void completed(void *data, VixError result) {
  struct slot *s = data;
  pthread_mutex_lock(&lock);
  s->result = result;
  s->done = 1;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
}

int main(int argc, char **argv) {
  int nargs = 0;
  char *args[5] = {0};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--checksum") == 0) checksum = 1;
    else if (nargs < 5) args[nargs++] = argv[i];
  }
  if (nargs < 2 || (strcmp(args[0], "sync") != 0 && strcmp(args[0], "async") != 0)) {
    fprintf(stderr, "usage: vix-read sync|async DISK [REQUEST_BYTES] [DEPTH] [--checksum]\n");
    return 2;
  }
  int async = strcmp(args[0], "async") == 0;
  uint64_t req = nargs > 2 ? strtoull(args[2], NULL, 0) : 1 << 20;
  int depth = nargs > 3 ? atoi(args[3]) : 16;
  uint64_t reqSectors = req / VIXDISKLIB_SECTOR_SIZE;
  if (reqSectors == 0 || reqSectors > 65536 || depth < 1 || depth > 256) return 2;
  if (!checksum && isatty(1)) {
    fprintf(stderr, "vix-read: standard output is a terminal; pipe it, or use --checksum\n");
    return 2;
  }

  VixError err = VixDiskLib_InitEx(7, 0, NULL, NULL, NULL, NULL, NULL);
  if (VIX_FAILED(err)) die("InitEx", err);
  VixDiskLibConnection conn;
  VixDiskLibConnectParams *params = VixDiskLib_AllocateConnectParams();
  err = VixDiskLib_ConnectEx(params, 1, NULL, NULL, &conn);
  if (VIX_FAILED(err)) die("ConnectEx", err);
  VixDiskLibHandle disk;
  err = VixDiskLib_Open(conn, args[1], VIXDISKLIB_FLAG_OPEN_READ_ONLY, &disk);
  if (VIX_FAILED(err)) die("Open", err);
  VixDiskLibInfo *info;
  err = VixDiskLib_GetInfo(disk, &info);
  if (VIX_FAILED(err)) die("GetInfo", err);
  uint64_t capacity = info->capacity;
  VixDiskLib_FreeInfo(info);

  if (!async) {
    uint8_t *buf = malloc(req);
    if (!buf) return 1;
    for (uint64_t s = 0; s < capacity; s += reqSectors) {
      uint64_t n = capacity - s < reqSectors ? capacity - s : reqSectors;
      err = VixDiskLib_Read(disk, s, n, buf);
      if (VIX_FAILED(err)) die("Read", err);
      consume(buf, n * VIXDISKLIB_SECTOR_SIZE);
    }
    free(buf);
  } else {
    /* A ring of DEPTH requests, consumed in order, each resubmitted as soon as it is used. */
    struct slot *slots = calloc((size_t)depth, sizeof *slots);
    if (!slots) return 1;
    for (int i = 0; i < depth; i++)
      if (!(slots[i].buf = malloc(req))) return 1;
    uint64_t next = 0;
    int head = 0;
    for (int i = 0; i < depth && next < capacity; i++) {
      struct slot *s = &slots[i];
      s->sector = next;
      s->count = capacity - next < reqSectors ? capacity - next : reqSectors;
      s->busy = 1;
      next += s->count;
      err = VixDiskLib_ReadAsync(disk, s->sector, s->count, s->buf, completed, s);
      if (err != VIX_ASYNC) die("ReadAsync", err);
    }
    for (;;) {
      struct slot *s = &slots[head];
      if (!s->busy) break;
      pthread_mutex_lock(&lock);
      while (!s->done) pthread_cond_wait(&cond, &lock);
      pthread_mutex_unlock(&lock);
      if (VIX_FAILED(s->result)) die("ReadAsync completion", s->result);
      consume(s->buf, s->count * VIXDISKLIB_SECTOR_SIZE);
      s->busy = s->done = 0;
      if (next < capacity) {
        s->sector = next;
        s->count = capacity - next < reqSectors ? capacity - next : reqSectors;
        s->busy = 1;
        next += s->count;
        err = VixDiskLib_ReadAsync(disk, s->sector, s->count, s->buf, completed, s);
        if (err != VIX_ASYNC) die("ReadAsync", err);
      }
      head = (head + 1) % depth;
    }
    err = VixDiskLib_Wait(disk);
    if (VIX_FAILED(err)) die("Wait", err);
    for (int i = 0; i < depth; i++) free(slots[i].buf);
    free(slots);
  }
  if (total != capacity * VIXDISKLIB_SECTOR_SIZE) {
    fprintf(stderr, "vix-read: read %llu bytes of %llu\n", (unsigned long long)total,
            (unsigned long long)(capacity * VIXDISKLIB_SECTOR_SIZE));
    return 1;
  }
  if (checksum) printf("%llu bytes fnv1a %016llx\n", (unsigned long long)total, (unsigned long long)fnv_state);
  VixDiskLib_Close(disk);
  VixDiskLib_Disconnect(conn);
  VixDiskLib_FreeConnectParams(params);
  VixDiskLib_Exit();
  return 0;
}
