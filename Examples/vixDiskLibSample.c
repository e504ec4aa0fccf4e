/*
 * vixDiskLibSample.c: a small backup program written against VixDiskLib's C API only, in the
 * order VMware's own sample and backup applications use it:
 *
 *   InitEx -> AllocateConnectParams -> ConnectEx (local, no server) -> Open (read-only)
 *   -> GetInfo (printed) -> QueryAllocatedBlocks -> Read of every allocated chunk
 *   -> written at its offset into a raw image (sparse: unallocated ranges stay holes)
 *   -> Close -> Disconnect -> Exit.
 *
 * It is built unchanged against VMware's VDDK or against the open VixDiskLib of this project
 * (see Examples/README.md). Only calls declared by vixDiskLib.h are used; the raw file is
 * written with POSIX I/O.
 *
 *   vixDiskLibSample [-libdir DIR] [-chunk SECTORS] [-quiet] DISK.vmdk OUT.raw
 *   vixDiskLibSample -info DISK.vmdk
 *
 * Exit status: 0 done, 1 a VixDiskLib call or the output failed (one line on stderr naming
 * the call, with VixDiskLib's error code and text), 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vixDiskLib.h"

#define VIXDISKLIB_VERSION_MAJOR 8
#define VIXDISKLIB_VERSION_MINOR 0
/* Sectors per Read: 1 MiB. */
#define READ_SECTORS 2048

static int quiet;

/* The library's log lines: to stderr, prefixed, unless -quiet. */
static void log_func(const char *fmt, va_list args) {
  if (quiet) return;
  fprintf(stderr, "log: ");
  vfprintf(stderr, fmt, args);
}
static void warn_func(const char *fmt, va_list args) {
  fprintf(stderr, "warning: ");
  vfprintf(stderr, fmt, args);
}
static void panic_func(const char *fmt, va_list args) {
  fprintf(stderr, "panic: ");
  vfprintf(stderr, fmt, args);
  abort();
}

static void usage(void) {
  fprintf(stderr,
          "usage: vixDiskLibSample [-libdir DIR] [-chunk SECTORS] [-quiet] DISK.vmdk OUT.raw\n"
          "       vixDiskLibSample [-libdir DIR] -info DISK.vmdk\n"
          "\n"
          "Copies the allocated chunks of DISK (the whole chain of a snapshot) into the raw\n"
          "image OUT at their offsets; the rest of OUT is a hole and reads as zeros.\n"
          "  -libdir DIR     passed to VixDiskLib_InitEx (VDDK's library folder)\n"
          "  -chunk SECTORS  QueryAllocatedBlocks' chunk size, a power of two >= %d (default %d)\n"
          "  -quiet          no log lines from the library\n"
          "  -info           print GetInfo's fields only\n",
          VIXDISKLIB_MIN_CHUNK_SIZE, VIXDISKLIB_MIN_CHUNK_SIZE);
  exit(2);
}

/* Reports a failed call with VixDiskLib's code and text; returns 1 for the exit status. */
static int failed(const char *call, VixError err) {
  char *text = VixDiskLib_GetErrorText(err, NULL);
  fprintf(stderr, "vixDiskLibSample: %s failed: error %llu: %s\n", call, (unsigned long long)VIX_ERROR_CODE(err),
          text ? text : "(no text)");
  VixDiskLib_FreeErrorText(text);
  return 1;
}

static const char *adapter_name(VixDiskLibAdapterType t) {
  switch (t) {
    case VIXDISKLIB_ADAPTER_IDE: return "ide";
    case VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC: return "buslogic";
    case VIXDISKLIB_ADAPTER_SCSI_LSILOGIC: return "lsilogic";
    default: return "unknown";
  }
}

static void print_info(const VixDiskLibInfo *info, const char *transport) {
  printf("capacity: %llu sectors (%llu bytes)\n", (unsigned long long)info->capacity,
         (unsigned long long)info->capacity * VIXDISKLIB_SECTOR_SIZE);
  printf("geometry: %u/%u/%u (physical), %u/%u/%u (BIOS)\n", info->physGeo.cylinders, info->physGeo.heads,
         info->physGeo.sectors, info->biosGeo.cylinders, info->biosGeo.heads, info->biosGeo.sectors);
  printf("adapter type: %s (%d)\n", adapter_name(info->adapterType), (int)info->adapterType);
  printf("links: %d\n", info->numLinks);
  printf("parent: %s\n", info->parentFileNameHint ? info->parentFileNameHint : "(none)");
  printf("uuid: %s\n", info->uuid ? info->uuid : "(none)");
  printf("transport: %s\n", transport ? transport : "(unknown)");
}

/* Writes all of buf at offset, retrying short writes. */
static int write_all(int fd, const uint8 *buf, size_t len, off_t offset) {
  while (len > 0) {
    ssize_t n = pwrite(fd, buf, len, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
    offset += n;
  }
  return 0;
}

static int all_zero(const uint8 *buf, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (buf[i]) return 0;
  return 1;
}

/* Reads the allocated chunks of disk into fd. */
static int backup(VixDiskLibHandle disk, VixDiskLibSectorType capacity, VixDiskLibSectorType chunk, int fd,
                  unsigned long long *copied, unsigned long long *blocks) {
  uint8 *buf = malloc((size_t)READ_SECTORS * VIXDISKLIB_SECTOR_SIZE);
  if (!buf) {
    fprintf(stderr, "vixDiskLibSample: out of memory\n");
    return 1;
  }
  /* QueryAllocatedBlocks takes at most VIXDISKLIB_MAX_CHUNK_NUMBER chunks a call. */
  VixDiskLibSectorType window = chunk * 65536;
  int rc = 0;
  for (VixDiskLibSectorType start = 0; start < capacity && rc == 0; start += window) {
    VixDiskLibSectorType count = capacity - start < window ? capacity - start : window;
    VixDiskLibBlockList *list = NULL;
    VixError err = VixDiskLib_QueryAllocatedBlocks(disk, start, count, chunk, &list);
    if (VIX_FAILED(err)) {
      rc = failed("VixDiskLib_QueryAllocatedBlocks", err);
      break;
    }
    for (uint32 i = 0; i < list->numBlocks && rc == 0; i++) {
      VixDiskLibSectorType s = list->blocks[i].offset, end = s + list->blocks[i].length;
      if (end > capacity) end = capacity; /* the last chunk may pass the end of the disk */
      (*blocks)++;
      while (s < end) {
        VixDiskLibSectorType n = end - s < READ_SECTORS ? end - s : READ_SECTORS;
        err = VixDiskLib_Read(disk, s, n, buf);
        if (VIX_FAILED(err)) {
          rc = failed("VixDiskLib_Read", err);
          break;
        }
        size_t len = (size_t)n * VIXDISKLIB_SECTOR_SIZE;
        /* Zeros need no write: the raw file is a hole there already. */
        if (!all_zero(buf, len) && write_all(fd, buf, len, (off_t)(s * VIXDISKLIB_SECTOR_SIZE)) != 0) {
          fprintf(stderr, "vixDiskLibSample: write failed: %s\n", strerror(errno));
          rc = 1;
          break;
        }
        *copied += len;
        s += n;
      }
    }
    err = VixDiskLib_FreeBlockList(list);
    if (VIX_FAILED(err) && rc == 0) rc = failed("VixDiskLib_FreeBlockList", err);
  }
  free(buf);
  return rc;
}

int main(int argc, char **argv) {
  const char *libdir = NULL, *diskPath = NULL, *outPath = NULL;
  VixDiskLibSectorType chunk = VIXDISKLIB_MIN_CHUNK_SIZE;
  int infoOnly = 0;
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (strcmp(argv[i], "-libdir") == 0 && i + 1 < argc) {
      libdir = argv[++i];
    } else if (strcmp(argv[i], "-chunk") == 0 && i + 1 < argc) {
      char *end = NULL;
      chunk = strtoull(argv[++i], &end, 10);
      if (!end || *end || chunk < VIXDISKLIB_MIN_CHUNK_SIZE || chunk > VIXDISKLIB_MAX_CHUNK_SIZE ||
          (chunk & (chunk - 1)))
        usage();
    } else if (strcmp(argv[i], "-quiet") == 0) {
      quiet = 1;
    } else if (strcmp(argv[i], "-info") == 0) {
      infoOnly = 1;
    } else {
      usage();
    }
  }
  if (infoOnly ? argc - i != 1 : argc - i != 2) usage();
  diskPath = argv[i];
  outPath = infoOnly ? NULL : argv[i + 1];

  VixError err = VixDiskLib_InitEx(VIXDISKLIB_VERSION_MAJOR, VIXDISKLIB_VERSION_MINOR, log_func, warn_func, panic_func,
                                   libdir, NULL);
  if (VIX_FAILED(err)) return failed("VixDiskLib_InitEx", err);

  /* Local disks: connection parameters without a server. */
  VixDiskLibConnectParams *params = VixDiskLib_AllocateConnectParams();
  VixDiskLibConnection conn = NULL;
  err = VixDiskLib_ConnectEx(params, TRUE, NULL, NULL, &conn);
  if (VIX_FAILED(err)) {
    int rc = failed("VixDiskLib_ConnectEx", err);
    VixDiskLib_FreeConnectParams(params);
    VixDiskLib_Exit();
    return rc;
  }

  int rc = 0;
  VixDiskLibHandle disk = NULL;
  err = VixDiskLib_Open(conn, diskPath, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &disk);
  if (VIX_FAILED(err)) {
    rc = failed("VixDiskLib_Open", err);
  } else {
    VixDiskLibInfo *info = NULL;
    err = VixDiskLib_GetInfo(disk, &info);
    if (VIX_FAILED(err)) {
      rc = failed("VixDiskLib_GetInfo", err);
    } else {
      print_info(info, VixDiskLib_GetTransportMode(disk));
      VixDiskLibSectorType capacity = info->capacity;
      VixDiskLib_FreeInfo(info);
      if (!infoOnly) {
        int fd = open(outPath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
          fprintf(stderr, "vixDiskLibSample: %s: %s\n", outPath, strerror(errno));
          rc = 1;
        } else {
          /* The raw image's size first: every byte not written below is a hole. */
          if (ftruncate(fd, (off_t)(capacity * VIXDISKLIB_SECTOR_SIZE)) != 0) {
            fprintf(stderr, "vixDiskLibSample: %s: %s\n", outPath, strerror(errno));
            rc = 1;
          }
          unsigned long long copied = 0, blocks = 0;
          if (rc == 0) rc = backup(disk, capacity, chunk, fd, &copied, &blocks);
          if (rc == 0 && fsync(fd) != 0) {
            fprintf(stderr, "vixDiskLibSample: %s: %s\n", outPath, strerror(errno));
            rc = 1;
          }
          close(fd);
          if (rc == 0) printf("copied: %llu bytes in %llu allocated block(s) to %s\n", copied, blocks, outPath);
        }
      }
    }
    err = VixDiskLib_Close(disk);
    if (VIX_FAILED(err) && rc == 0) rc = failed("VixDiskLib_Close", err);
  }
  err = VixDiskLib_Disconnect(conn);
  if (VIX_FAILED(err) && rc == 0) rc = failed("VixDiskLib_Disconnect", err);
  VixDiskLib_FreeConnectParams(params);
  VixDiskLib_Exit();
  return rc;
}
