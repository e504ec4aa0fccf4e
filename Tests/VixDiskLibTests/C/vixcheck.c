/* vixcheck: drives libvixDiskLib.so through VixDiskLib calls only, one subcommand per check;
 * VixDiskLibTests compiles it with cc against the built library and compares what it prints
 * with vmdk-inspect and qemu-img. Exit 0 when the calls behaved, 1 otherwise (with a line on
 * stderr naming the call and its error text). */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VIXTEST_NAME "vixcheck"
#include "vixtest.h"
#include "vixDiskLibExt.h"

static void setup(void) {
  CHECK(VixDiskLib_InitEx(8, 0, NULL, NULL, NULL, NULL, NULL));
  CHECK(VixDiskLib_Connect(NULL, &conn));
}

static void teardown(void) {
  CHECK(VixDiskLib_Disconnect(conn));
  VixDiskLib_Exit();
}

static void hex(const unsigned char *d, unsigned n, char *out) {
  for (unsigned i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

/* info PATH [FLAGS] */
static int cmd_info(const char *path, uint32 flags) {
  VixDiskLibHandle h = open_disk(path, flags);
  VixDiskLibInfo *info = NULL;
  CHECK(VixDiskLib_GetInfo(h, &info));
  printf("capacity=%llu\n", (unsigned long long)info->capacity);
  printf("cylinders=%u\nheads=%u\nsectors=%u\n", info->physGeo.cylinders, info->physGeo.heads,
         info->physGeo.sectors);
  printf("biosCylinders=%u\nbiosHeads=%u\nbiosSectors=%u\n", info->biosGeo.cylinders,
         info->biosGeo.heads, info->biosGeo.sectors);
  printf("adapterType=%d\n", (int)info->adapterType);
  printf("numLinks=%d\n", info->numLinks);
  printf("parentFileNameHint=%s\n", info->parentFileNameHint ? info->parentFileNameHint : "(null)");
  printf("uuid=%s\n", info->uuid ? info->uuid : "(null)");
  printf("logicalSectorSize=%u\nphysicalSectorSize=%u\n", info->logicalSectorSize,
         info->physicalSectorSize);
  printf("transport=%s\n", VixDiskLib_GetTransportMode(h));
  VixDiskLib_FreeInfo(info);
  CHECK(VixDiskLib_Close(h));
  return 0;
}

/* digest PATH: SHA-256 of the whole disk read with VixDiskLib_Read in 1 MiB requests. */
static int cmd_digest(const char *path) {
  VixDiskLibHandle h = open_disk(path, VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  VixDiskLibInfo *info = NULL;
  CHECK(VixDiskLib_GetInfo(h, &info));
  uint64 capacity = info->capacity;
  VixDiskLib_FreeInfo(info);
  enum { CHUNK = 2048 };
  unsigned char *buf = malloc(CHUNK * VIXDISKLIB_SECTOR_SIZE);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  for (uint64 s = 0; s < capacity; s += CHUNK) {
    uint64 n = capacity - s < CHUNK ? capacity - s : CHUNK;
    CHECK(VixDiskLib_Read(h, s, n, buf));
    EVP_DigestUpdate(ctx, buf, n * VIXDISKLIB_SECTOR_SIZE);
  }
  unsigned char md[32];
  unsigned mdlen = 0;
  EVP_DigestFinal_ex(ctx, md, &mdlen);
  EVP_MD_CTX_free(ctx);
  char out[65];
  hex(md, 32, out);
  printf("%s\n", out);
  char ext[65];
  CHECK(VixDiskLibExt_Digest(h, ext, sizeof ext));
  if (strcmp(ext, out) != 0) {
    fprintf(stderr, "vixcheck: VixDiskLibExt_Digest %s differs from Read's %s\n", ext, out);
    return 1;
  }
  free(buf);
  CHECK(VixDiskLib_Close(h));
  return 0;
}

/* async PATH INFLIGHT: the whole disk through ReadAsync (64 KiB requests, INFLIGHT at once),
 * compared byte for byte with Read; prints the digest, the peak in flight, how many
 * callbacks ran on a thread other than the caller's, and on how many distinct threads. */
struct async_state {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int inflight, peak, done, errors, foreign, threads;
  pthread_t caller;
  pthread_t seen[256];
};
static struct async_state st = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static void completion(void *data, VixError result) {
  (void)data;
  pthread_mutex_lock(&st.lock);
  if (VIX_FAILED(result)) st.errors++;
  if (!pthread_equal(pthread_self(), st.caller)) st.foreign++;
  int known = 0;
  for (int i = 0; i < st.threads && !known; i++) known = pthread_equal(st.seen[i], pthread_self());
  if (!known && st.threads < 256) st.seen[st.threads++] = pthread_self();
  st.inflight--;
  st.done++;
  pthread_cond_broadcast(&st.cond);
  pthread_mutex_unlock(&st.lock);
}

static int cmd_async(const char *path, int maxInflight) {
  VixDiskLibHandle h = open_disk(path, VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  VixDiskLibInfo *info = NULL;
  CHECK(VixDiskLib_GetInfo(h, &info));
  uint64 capacity = info->capacity;
  VixDiskLib_FreeInfo(info);
  size_t bytes = (size_t)capacity * VIXDISKLIB_SECTOR_SIZE;
  unsigned char *a = malloc(bytes), *b = malloc(bytes);
  memset(a, 0xAA, bytes);
  memset(b, 0x55, bytes);
  st.caller = pthread_self();
  int requests = 0;
  enum { CHUNK = 128 };
  for (uint64 s = 0; s < capacity; s += CHUNK) {
    uint64 n = capacity - s < CHUNK ? capacity - s : CHUNK;
    pthread_mutex_lock(&st.lock);
    while (st.inflight >= maxInflight) pthread_cond_wait(&st.cond, &st.lock);
    st.inflight++;
    if (st.inflight > st.peak) st.peak = st.inflight;
    pthread_mutex_unlock(&st.lock);
    VixError e = VixDiskLib_ReadAsync(h, s, n, a + s * VIXDISKLIB_SECTOR_SIZE, completion, NULL);
    if (e != VIX_ASYNC) fail("VixDiskLib_ReadAsync", e);
    requests++;
  }
  CHECK(VixDiskLib_Wait(h));
  pthread_mutex_lock(&st.lock);
  int done = st.done, errors = st.errors, inflight = st.inflight;
  pthread_mutex_unlock(&st.lock);
  if (done != requests || inflight != 0 || errors != 0) {
    fprintf(stderr, "vixcheck: after Wait: %d of %d done, %d in flight, %d errors\n", done,
            requests, inflight, errors);
    return 1;
  }
  for (uint64 s = 0; s < capacity; s += 2048) {
    uint64 n = capacity - s < 2048 ? capacity - s : 2048;
    CHECK(VixDiskLib_Read(h, s, n, b + s * VIXDISKLIB_SECTOR_SIZE));
  }
  if (memcmp(a, b, bytes) != 0) {
    fprintf(stderr, "vixcheck: ReadAsync and Read differ\n");
    return 1;
  }
  unsigned char md[32];
  unsigned mdlen = 0;
  EVP_Digest(a, bytes, md, &mdlen, EVP_sha256(), NULL);
  char out[65];
  hex(md, 32, out);
  printf("%s\nrequests=%d\npeak=%d\nforeign=%d\nthreads=%d\n", out, requests, st.peak, st.foreign,
         st.threads);
  CHECK(VixDiskLib_Close(h));
  free(a);
  free(b);
  return 0;
}

/* allocated PATH CHUNK: QueryAllocatedBlocks over the disk in chunk-aligned windows as nbdkit
 * does; adjacent blocks merged; "START LENGTH" in bytes per line. */
static int cmd_allocated(const char *path, uint64 chunk, uint32 flags) {
  VixDiskLibHandle h = open_disk(path, VIXDISKLIB_FLAG_OPEN_READ_ONLY | flags);
  VixDiskLibInfo *info = NULL;
  CHECK(VixDiskLib_GetInfo(h, &info));
  uint64 capacity = info->capacity;
  VixDiskLib_FreeInfo(info);
  uint64 runStart = 0, runEnd = 0;
  int have = 0;
  uint64 window = chunk * 4; /* small windows: several calls even on small disks */
  for (uint64 s = 0; s < capacity; s += window) {
    uint64 n = capacity - s < window ? capacity - s : window;
    VixDiskLibBlockList *list = NULL;
    CHECK(VixDiskLib_QueryAllocatedBlocks(h, s, n, chunk, &list));
    for (uint32 i = 0; i < list->numBlocks; i++) {
      uint64 a = list->blocks[i].offset * 512, b = a + list->blocks[i].length * 512;
      if (have && a == runEnd) {
        runEnd = b;
      } else {
        if (have) printf("%llu %llu\n", (unsigned long long)runStart, (unsigned long long)(runEnd - runStart));
        runStart = a;
        runEnd = b;
        have = 1;
      }
    }
    CHECK(VixDiskLib_FreeBlockList(list));
  }
  if (have) printf("%llu %llu\n", (unsigned long long)runStart, (unsigned long long)(runEnd - runStart));
  CHECK(VixDiskLib_Close(h));
  return 0;
}

/* write PATH SECTOR COUNT BYTE: COUNT sectors of BYTE at SECTOR, then Flush and Close. */
static int cmd_write(const char *path, uint64 sector, uint64 count, int byte) {
  VixDiskLibHandle h = open_disk(path, 0);
  unsigned char *buf = malloc(count * 512);
  memset(buf, byte, count * 512);
  CHECK(VixDiskLib_Write(h, sector, count, buf));
  CHECK(VixDiskLib_Flush(h));
  CHECK(VixDiskLib_Close(h));
  free(buf);
  return 0;
}

/* open PATH FLAGS: prints "code=N" of Open and the error text (exit 0 either way). */
static int cmd_open(const char *path, uint32 flags) {
  VixDiskLibHandle h = NULL;
  VixError e = VixDiskLib_Open(conn, path, flags, &h);
  char *text = VixDiskLib_GetErrorText(e, NULL);
  printf("code=%llu\ntext=%s\n", (unsigned long long)VIX_ERROR_CODE(e), text ? text : "");
  VixDiskLib_FreeErrorText(text);
  if (h) CHECK(VixDiskLib_Close(h));
  return 0;
}

/* lock PATH: opens PATH for writing twice; prints the second Open's code. */
static int cmd_lock(const char *path) {
  VixDiskLibHandle first = open_disk(path, 0);
  cmd_open(path, 0);
  CHECK(VixDiskLib_Close(first));
  return 0;
}

static int progress_calls, progress_last = -1, progress_bad;
static Bool progress(void *data, int percent) {
  (void)data;
  if (percent < progress_last || percent > 100) progress_bad++;
  progress_last = percent;
  progress_calls++;
  return TRUE;
}

/* create PATH TYPE SECTORS ADAPTER */
static int cmd_create(const char *path, int type, uint64 sectors, int adapter) {
  VixDiskLibCreateParams p;
  memset(&p, 0, sizeof p);
  p.diskType = (VixDiskLibDiskType)type;
  p.adapterType = (VixDiskLibAdapterType)adapter;
  p.hwVersion = VIXDISKLIB_HWVERSION_WORKSTATION_6;
  p.capacity = sectors;
  CHECK(VixDiskLib_Create(conn, path, &p, progress, NULL));
  printf("progress=%d last=%d bad=%d\n", progress_calls, progress_last, progress_bad);
  return 0;
}

/* clone SRC DST TYPE */
static int cmd_clone(const char *src, const char *dst, int type) {
  VixDiskLibCreateParams p;
  memset(&p, 0, sizeof p);
  p.diskType = (VixDiskLibDiskType)type;
  p.adapterType = VIXDISKLIB_ADAPTER_SCSI_LSILOGIC;
  p.hwVersion = VIXDISKLIB_HWVERSION_WORKSTATION_6;
  CHECK(VixDiskLib_Clone(conn, dst, conn, src, &p, progress, NULL, FALSE));
  printf("progress=%d last=%d bad=%d\n", progress_calls, progress_last, progress_bad);
  VixError again = VixDiskLib_Clone(conn, dst, conn, src, &p, NULL, NULL, FALSE);
  printf("again=%llu\n", (unsigned long long)VIX_ERROR_CODE(again));
  return 0;
}

/* child PARENT CHILD */
static int cmd_child(const char *parent, const char *child) {
  VixDiskLibHandle h = open_disk(parent, VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  CHECK(VixDiskLib_CreateChild(h, child, VIXDISKLIB_DISK_MONOLITHIC_SPARSE, progress, NULL));
  CHECK(VixDiskLib_Close(h));
  return 0;
}

/* metadata PATH [KEY VALUE]: writes KEY=VALUE when given, then prints every key=value. */
static int cmd_metadata(const char *path, const char *key, const char *value) {
  VixDiskLibHandle h = open_disk(path, key ? 0 : VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  if (key) CHECK(VixDiskLib_WriteMetadata(h, key, value));
  size_t need = 0;
  VixError e = VixDiskLib_GetMetadataKeys(h, NULL, 0, &need);
  if (VIX_ERROR_CODE(e) != VIX_E_BUFFER_TOOSMALL || need < 2) fail("GetMetadataKeys(NULL)", e);
  char *keys = malloc(need);
  CHECK(VixDiskLib_GetMetadataKeys(h, keys, need, &need));
  for (char *k = keys; *k; k += strlen(k) + 1) {
    char value[1024];
    size_t len = 0;
    CHECK(VixDiskLib_ReadMetadata(h, k, value, sizeof value, &len));
    printf("%s=%s\n", k, value);
  }
  free(keys);
  char small[1];
  size_t len = 0;
  e = VixDiskLib_ReadMetadata(h, "adapterType", small, sizeof small, &len);
  printf("small=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  e = VixDiskLib_ReadMetadata(h, "no.such.key", small, sizeof small, &len);
  printf("missing=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  CHECK(VixDiskLib_Close(h));
  return 0;
}

/* log CONFIG PATH: InitEx with callbacks, a failing Open of PATH; prints the lines counted. */
static int log_lines, warn_lines;
static void on_log(const char *fmt, va_list args) {
  char line[4096];
  vsnprintf(line, sizeof line, fmt, args);
  if (strstr(line, "VixDiskLib")) log_lines++;
  printf("log: %s", line);
}
static void on_warn(const char *fmt, va_list args) {
  char line[4096];
  vsnprintf(line, sizeof line, fmt, args);
  warn_lines++;
  printf("warn: %s", line);
}
static int cmd_log(const char *config, const char *path) {
  CHECK(VixDiskLib_InitEx(8, 0, on_log, on_warn, on_warn, NULL, config));
  CHECK(VixDiskLib_Connect(NULL, &conn));
  VixDiskLibHandle h = NULL;
  VixError e = VixDiskLib_Open(conn, path, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &h);
  if (h) VixDiskLib_Close(h);
  printf("open=%llu\nlogLines=%d\nwarnLines=%d\n", (unsigned long long)VIX_ERROR_CODE(e), log_lines,
         warn_lines);
  CHECK(VixDiskLib_Disconnect(conn));
  VixDiskLib_Exit();
  return 0;
}

/* remote: a serverName and a vmxSpec must be refused with a clear error, not a hang. */
static int cmd_remote(void) {
  VixDiskLibConnectParams *p = VixDiskLib_AllocateConnectParams();
  p->serverName = strdup("vcenter.example.com");
  p->credType = VIXDISKLIB_CRED_UID;
  p->creds.uid.userName = strdup("user");
  p->creds.uid.password = strdup("secret");
  VixDiskLibConnection c = NULL;
  VixError e = VixDiskLib_ConnectEx(p, TRUE, NULL, NULL, &c);
  char *text = VixDiskLib_GetErrorText(e, NULL);
  printf("server=%llu %s\n", (unsigned long long)VIX_ERROR_CODE(e), text);
  VixDiskLib_FreeErrorText(text);
  free(p->serverName);
  p->serverName = NULL;
  p->vmxSpec = strdup("vm/vm.vmx?dcPath=dc&dsName=ds");
  e = VixDiskLib_Connect(p, &c);
  printf("vmx=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  VixDiskLib_FreeConnectParams(p);
  printf("modes=%s\n", VixDiskLib_ListTransportModes());
  CHECK(VixDiskLib_PrepareForAccess(NULL, "vixcheck"));
  CHECK(VixDiskLib_EndAccess(NULL, "vixcheck"));
  uint32 cleaned = 9, remaining = 9;
  CHECK(VixDiskLib_Cleanup(NULL, &cleaned, &remaining));
  printf("cleanup=%u %u\n", cleaned, remaining);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: vixcheck COMMAND ARGS\n");
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "log") == 0 && argc == 4) return cmd_log(argv[2], argv[3]);
  setup();
  int rc = 2;
  if (strcmp(cmd, "info") == 0 && argc >= 3) rc = cmd_info(argv[2], argc > 3 ? (uint32)atoi(argv[3]) : 4);
  else if (strcmp(cmd, "digest") == 0 && argc == 3) rc = cmd_digest(argv[2]);
  else if (strcmp(cmd, "async") == 0 && argc == 4) rc = cmd_async(argv[2], atoi(argv[3]));
  else if (strcmp(cmd, "allocated") == 0 && argc >= 4)
    rc = cmd_allocated(argv[2], strtoull(argv[3], NULL, 10), argc > 4 ? (uint32)atoi(argv[4]) : 0);
  else if (strcmp(cmd, "write") == 0 && argc == 6)
    rc = cmd_write(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10), atoi(argv[5]));
  else if (strcmp(cmd, "open") == 0 && argc == 4) rc = cmd_open(argv[2], (uint32)atoi(argv[3]));
  else if (strcmp(cmd, "lock") == 0 && argc == 3) rc = cmd_lock(argv[2]);
  else if (strcmp(cmd, "create") == 0 && argc == 6)
    rc = cmd_create(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 10), atoi(argv[5]));
  else if (strcmp(cmd, "clone") == 0 && argc == 5) rc = cmd_clone(argv[2], argv[3], atoi(argv[4]));
  else if (strcmp(cmd, "child") == 0 && argc == 4) rc = cmd_child(argv[2], argv[3]);
  else if (strcmp(cmd, "metadata") == 0 && (argc == 3 || argc == 5))
    rc = cmd_metadata(argv[2], argc == 5 ? argv[3] : NULL, argc == 5 ? argv[4] : NULL);
  else if (strcmp(cmd, "remote") == 0) rc = cmd_remote();
  else fprintf(stderr, "vixcheck: unknown command or arguments\n");
  teardown();
  return rc;
}
