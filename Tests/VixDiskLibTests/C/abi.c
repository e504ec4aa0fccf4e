/* abi: the public structs of our vixDiskLib.h have VMware's published x86-64 layout (the one
 * nbdkit's vddk-structs.h also relies on). The expected numbers are hard-coded from that
 * layout, not computed from our header; any difference fails with a line naming the field. */
#include <stddef.h>
#include <stdio.h>

#include "vixDiskLib.h"

static int failures;

static void expect(const char *what, size_t got, size_t want) {
  if (got != want) {
    printf("MISMATCH %s: %zu, expected %zu\n", what, got, want);
    failures++;
  } else {
    printf("ok %s = %zu\n", what, got);
  }
}

#define SIZE(T, n) expect("sizeof(" #T ")", sizeof(T), n)
#define OFF(T, f, n) expect("offsetof(" #T ", " #f ")", offsetof(T, f), n)

int main(void) {
#if defined(__x86_64__) || defined(__aarch64__)
  SIZE(VixDiskLibGeometry, 12);
  OFF(VixDiskLibGeometry, cylinders, 0);
  OFF(VixDiskLibGeometry, heads, 4);
  OFF(VixDiskLibGeometry, sectors, 8);

  SIZE(VixDiskLibConnectParams, 128);
  OFF(VixDiskLibConnectParams, vmxSpec, 0);
  OFF(VixDiskLibConnectParams, serverName, 8);
  OFF(VixDiskLibConnectParams, thumbPrint, 16);
  OFF(VixDiskLibConnectParams, privateUse, 24);
  OFF(VixDiskLibConnectParams, credType, 32);
  OFF(VixDiskLibConnectParams, creds, 40);
  OFF(VixDiskLibConnectParams, creds.uid.userName, 40);
  OFF(VixDiskLibConnectParams, creds.uid.password, 48);
  OFF(VixDiskLibConnectParams, creds.sessionId.cookie, 40);
  OFF(VixDiskLibConnectParams, creds.sessionId.key, 56);
  OFF(VixDiskLibConnectParams, port, 64);
  OFF(VixDiskLibConnectParams, nfcHostPort, 68);
  OFF(VixDiskLibConnectParams, vimApiVer, 72);
  OFF(VixDiskLibConnectParams, reserved, 80);
  OFF(VixDiskLibConnectParams, state, 88);
  OFF(VixDiskLibConnectParams, spec, 96);
  OFF(VixDiskLibConnectParams, spec.vStorageObjSpec.id, 96);
  OFF(VixDiskLibConnectParams, spec.vStorageObjSpec.datastoreMoRef, 104);
  OFF(VixDiskLibConnectParams, spec.vStorageObjSpec.ssId, 112);
  OFF(VixDiskLibConnectParams, specType, 120);

  SIZE(VixDiskLibInfo, 64);
  OFF(VixDiskLibInfo, biosGeo, 0);
  OFF(VixDiskLibInfo, physGeo, 12);
  OFF(VixDiskLibInfo, capacity, 24);
  OFF(VixDiskLibInfo, adapterType, 32);
  OFF(VixDiskLibInfo, numLinks, 36);
  OFF(VixDiskLibInfo, parentFileNameHint, 40);
  OFF(VixDiskLibInfo, uuid, 48);
  OFF(VixDiskLibInfo, logicalSectorSize, 56);
  OFF(VixDiskLibInfo, physicalSectorSize, 60);

  SIZE(VixDiskLibBlock, 16);
  OFF(VixDiskLibBlock, offset, 0);
  OFF(VixDiskLibBlock, length, 8);
  SIZE(VixDiskLibBlockList, 24);
  OFF(VixDiskLibBlockList, numBlocks, 0);
  OFF(VixDiskLibBlockList, blocks, 8);

  SIZE(VixDiskLibCreateParams, 32);
  OFF(VixDiskLibCreateParams, diskType, 0);
  OFF(VixDiskLibCreateParams, adapterType, 4);
  OFF(VixDiskLibCreateParams, hwVersion, 8);
  OFF(VixDiskLibCreateParams, capacity, 16);
  OFF(VixDiskLibCreateParams, logicalSectorSize, 24);
  OFF(VixDiskLibCreateParams, physicalSectorSize, 28);

  SIZE(VixDiskLibVStorageObjectSpec, 24);
  SIZE(VixError, 8);
  SIZE(VixDiskLibSectorType, 8);
  SIZE(VixDiskLibDiskType, 4);
  SIZE(VixDiskLibAdapterType, 4);
  SIZE(Bool, 1);
  /* The constants nbdkit and vixDiskLibSample rely on. */
  expect("VIXDISKLIB_FLAG_OPEN_READ_ONLY", VIXDISKLIB_FLAG_OPEN_READ_ONLY, 4);
  expect("VIXDISKLIB_FLAG_OPEN_SINGLE_LINK", VIXDISKLIB_FLAG_OPEN_SINGLE_LINK, 2);
  expect("VIXDISKLIB_FLAG_OPEN_UNBUFFERED", VIXDISKLIB_FLAG_OPEN_UNBUFFERED, 1);
  expect("VIX_ASYNC", VIX_ASYNC, 25000);
  expect("VIX_E_DISK_PARTIALCHAIN", VIX_E_DISK_PARTIALCHAIN, 16003);
  expect("VIX_E_DISK_CID_MISMATCH", VIX_E_DISK_CID_MISMATCH, 16008);
  expect("VIX_E_FILE_ALREADY_LOCKED", VIX_E_FILE_ALREADY_LOCKED, 15);
  expect("VIXDISKLIB_MAX_CHUNK_NUMBER", VIXDISKLIB_MAX_CHUNK_NUMBER, 524288);
#else
  printf("MISMATCH: the published layout is for x86-64 (and arm64, the same LP64 layout)\n");
  failures++;
#endif
  printf("%d mismatch(es)\n", failures);
  return failures ? 1 : 0;
}
