/* vix-read: reads a whole disk through VixDiskLib and prints its SHA-256-free checksum.
 *
 *   vix-read sync  DISK [REQUEST_BYTES]          VixDiskLib_Read, one request at a time
 *   vix-read async DISK [REQUEST_BYTES] [DEPTH]  VixDiskLib_ReadAsync, DEPTH requests in flight
 *
 * Uses only VixDiskLib calls, so it runs unchanged on VMware's library. Prints the bytes read
 * and an FNV-1a checksum of the whole disk, so both modes can be checked against each other.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vixDiskLib.h"

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

static void die(const char *what, VixError err) {
  char *text = VixDiskLib_GetErrorText(err, NULL);
  fprintf(stderr, "vix-read: %s: %s\n", what, text ? text : "?");
  VixDiskLib_FreeErrorText(text);
  exit(1);
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
  if (argc < 3) {
    fprintf(stderr, "usage: vix-read sync|async DISK [REQUEST_BYTES] [DEPTH]\n");
    return 2;
  }
  int async = strcmp(argv[1], "async") == 0;
  uint64_t req = argc > 3 ? strtoull(argv[3], NULL, 0) : 1 << 20;
  int depth = argc > 4 ? atoi(argv[4]) : 16;
  uint64_t reqSectors = req / VIXDISKLIB_SECTOR_SIZE;
  if (reqSectors == 0 || depth < 1 || depth > 256) return 2;

  VixError err = VixDiskLib_InitEx(7, 0, NULL, NULL, NULL, NULL, NULL);
  if (VIX_FAILED(err)) die("InitEx", err);
  VixDiskLibConnection conn;
  VixDiskLibConnectParams *params = VixDiskLib_AllocateConnectParams();
  err = VixDiskLib_ConnectEx(params, 1, NULL, NULL, &conn);
  if (VIX_FAILED(err)) die("ConnectEx", err);
  VixDiskLibHandle disk;
  err = VixDiskLib_Open(conn, argv[2], VIXDISKLIB_FLAG_OPEN_READ_ONLY, &disk);
  if (VIX_FAILED(err)) die("Open", err);
  VixDiskLibInfo *info;
  err = VixDiskLib_GetInfo(disk, &info);
  if (VIX_FAILED(err)) die("GetInfo", err);
  uint64_t capacity = info->capacity;
  VixDiskLib_FreeInfo(info);

  uint64_t h = 1469598103934665603ULL, total = 0;
  if (!async) {
    uint8_t *buf = malloc(req);
    for (uint64_t s = 0; s < capacity; s += reqSectors) {
      uint64_t n = capacity - s < reqSectors ? capacity - s : reqSectors;
      err = VixDiskLib_Read(disk, s, n, buf);
      if (VIX_FAILED(err)) die("Read", err);
      h = fnv(h, buf, n * VIXDISKLIB_SECTOR_SIZE);
      total += n * VIXDISKLIB_SECTOR_SIZE;
    }
    free(buf);
  } else {
    /* A ring of DEPTH requests; consumed in order so the checksum is the same as sync. */
    struct slot *slots = calloc((size_t)depth, sizeof *slots);
    for (int i = 0; i < depth; i++) slots[i].buf = malloc(req);
    uint64_t next = 0;
    int head = 0;
    for (int i = 0; i < depth && next < capacity; i++, next += reqSectors) {
      struct slot *s = &slots[i];
      s->sector = next;
      s->count = capacity - next < reqSectors ? capacity - next : reqSectors;
      s->busy = 1;
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
      h = fnv(h, s->buf, s->count * VIXDISKLIB_SECTOR_SIZE);
      total += s->count * VIXDISKLIB_SECTOR_SIZE;
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
  }
  printf("%llu bytes fnv1a %016llx\n", (unsigned long long)total, (unsigned long long)h);
  VixDiskLib_Close(disk);
  VixDiskLib_Disconnect(conn);
  VixDiskLib_FreeConnectParams(params);
  VixDiskLib_Exit();
  return 0;
}
