/*
 * vixDiskLibExt.h: the open VixDiskLib's extensions to VMware's API, prefix VixDiskLibExt_.
 * Include after vixDiskLib.h. Same error convention (VixError, VIX_ERROR_CODE) and the same
 * thread safety as the reads of vixDiskLib.h.
 */
#ifndef VIXDISKLIBEXT_H
#define VIXDISKLIBEXT_H

#include "vixDiskLib.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's own version, e.g. "vmdk-toolkit 1.0"; static, do not free. */
const char *VixDiskLibExt_Version(void);

/* The SHA-256 of the whole virtual disk as 64 lowercase hex digits and a NUL, written to
 * hex (at least 65 bytes). The same digest as `vmdk-inspect digest`. */
VixError VixDiskLibExt_Digest(VixDiskLibHandle diskHandle, char *hex, size_t hexLen);

#ifdef __cplusplus
}
#endif

#endif /* VIXDISKLIBEXT_H */
