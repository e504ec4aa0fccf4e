/*
 * vixDiskLibExt.h: the open VixDiskLib's extensions to VMware's API, prefix VixDiskLibExt_.
 * Include after vixDiskLib.h. Same error convention (VixError, VIX_ERROR_CODE) and the same
 * thread safety as QueryAllocatedBlocks in vixDiskLib.h: concurrently with the reads on the
 * same handle, and with any call on other handles.
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

/* ---- Changed areas (vSphere's QueryChangedDiskAreas, answered by our change tracking) ----
 *
 * Change tracking is turned on per disk with `vmdk-disk track on IMAGE` (README "Change
 * tracking"); every write through this library (VixDiskLib_Write, WriteAsync) is then
 * recorded before it returns. Change IDs are "<disk uuid>/<sequence>", opaque to callers.
 * Offsets and lengths here are in BYTES, as in vSphere's DiskChangeInfo. */

/* The disk's current change ID, NUL-terminated, into buf (bufLen bytes); *requiredLen (when
 * not NULL) gets the bytes needed, NUL included, and VIX_E_BUFFER_TOOSMALL when buf is too
 * small. Writes after this call are changes since the ID. VIX_E_NOT_SUPPORTED when tracking
 * is off for the disk; when tracking cannot be trusted it is restarted here and the new ID
 * returned (older IDs then answer 20020). */
VixError VixDiskLibExt_GetChangeId(VixDiskLibHandle diskHandle, char *buf, size_t bufLen,
                                   size_t *requiredLen);

typedef struct {
  uint64 start;  /* bytes */
  uint64 length; /* bytes */
} VixDiskLibExtChangedArea;

/* vSphere's DiskChangeInfo: the areas changed in [startOffset, startOffset + length), where
 * length runs to the end of the disk. numChangedAreas entries follow (changedArea at 24; 40
 * bytes with the first one, 16 per further area, on x86-64 and arm64). */
typedef struct {
  uint64 startOffset;     /* bytes */
  uint64 length;          /* bytes */
  uint32 numChangedAreas;
  VixDiskLibExtChangedArea changedArea[1];
} VixDiskLibExtChangeInfo;

/* The areas written since changeId ("*": every allocated area) from byte startOffset on,
 * aligned to the tracking block (64 KiB on disks up to 64 GiB), clipped to startOffset and
 * the capacity, merged, in order. Free the answer with VixDiskLibExt_FreeChangeInfo.
 * Errors: VIX_E_INVALID_ARG (3) for a malformed ID, one of another disk, or startOffset past
 * the end; 20020 ("tracking was reset: a full backup is needed") for an ID tracking cannot
 * answer (tracking off, restarted since, a writer that does not track changed the disk);
 * VIX_E_FILE_ALREADY_LOCKED (15) while another process writes the disk. Never a wrong list. */
VixError VixDiskLibExt_QueryChangedDiskAreas(VixDiskLibHandle diskHandle, const char *changeId,
                                             uint64 startOffset,
                                             VixDiskLibExtChangeInfo **changeInfo);
void VixDiskLibExt_FreeChangeInfo(VixDiskLibExtChangeInfo *changeInfo);

/* ---- Block status: what each range is, and which link of the chain holds it ---- */

#define VIXDISKLIBEXT_BLOCK_ZERO (1 << 0)    /* reads as zeros */
#define VIXDISKLIBEXT_BLOCK_DATA (1 << 1)    /* stored as data in link `depth` */
#define VIXDISKLIBEXT_BLOCK_PRESENT (1 << 2) /* some link has it; without it: a hole */
/* DATA without ZERO: data. PRESENT|ZERO: a zeroed grain or a ZERO extent. PRESENT|DATA|ZERO:
 * stored, known to be zeros. No PRESENT: a hole (reads as zeros; depth is the bottom link). */
#define VIXDISKLIBEXT_IS_HOLE(flags) (((flags) & VIXDISKLIBEXT_BLOCK_PRESENT) == 0)

typedef struct {
  VixDiskLibSectorType offset; /* sectors */
  VixDiskLibSectorType length; /* sectors */
  uint32 flags;                /* VIXDISKLIBEXT_BLOCK_* */
  int32_t depth;               /* 0: the top link (the file opened), 1 its parent, ... */
} VixDiskLibExtBlockExtent;    /* 24 bytes */

/* numExtents entries follow (extents at offset 8; 32 bytes with the first one). */
typedef struct {
  uint32 numExtents;
  VixDiskLibExtBlockExtent extents[1];
} VixDiskLibExtBlockStatus;

#define VIXDISKLIBEXT_MAX_EXTENTS (1024 * 1024)

/* The block status of numSectors sectors from startSector (clipped to the capacity), from the
 * grain tables and the files' holes, no data read: runs with the same flags, depth and
 * contiguous file offsets merged (as `vmdk-inspect map` and qemu-img map merge them). At most
 * maxExtents (0: VIXDISKLIBEXT_MAX_EXTENTS) extents: a full list may end before the range
 * does; continue from the end of its last extent. SINGLE_LINK handles see their top link only
 * (below it: holes). Free with VixDiskLibExt_FreeBlockStatus. */
VixError VixDiskLibExt_QueryBlockStatus(VixDiskLibHandle diskHandle,
                                        VixDiskLibSectorType startSector,
                                        VixDiskLibSectorType numSectors, uint32 maxExtents,
                                        VixDiskLibExtBlockStatus **status);
void VixDiskLibExt_FreeBlockStatus(VixDiskLibExtBlockStatus *status);

/* ---- The restore guard ----
 *
 * Writing a disk that has snapshots on top of it would change what every snapshot reads, so
 * VixDiskLib_Open without VIXDISKLIB_FLAG_OPEN_READ_ONLY refuses such a disk with 20021
 * ("the disk has snapshots on top of it"). A snapshot of the disk is a .vmdk in the disk's
 * folder whose descriptor names it (parentFileNameHint) with its current CID as parentCID; a
 * child with a stale parentCID is already broken and does not count; linked clones in other
 * folders are not seen. The scan follows no symbolic link or path out of the folder. */

/* The guard's answer for the disk at path (the file that would be opened; it is not opened):
 * *numSnapshots gets how many snapshots sit on top of it (0: a writable Open is allowed). When
 * names is not NULL their paths are written there, each NUL-terminated, sorted, the list
 * ended by an extra NUL (GetMetadataKeys' shape); *requiredLen (when not NULL) gets the bytes
 * needed, and VIX_E_BUFFER_TOOSMALL when namesLen is less. A path that is not a VMDK with a
 * descriptor has none; a missing file gives VIX_E_FILE_NOT_FOUND. */
VixError VixDiskLibExt_SnapshotsOnTop(VixDiskLibConnection connection, const char *path,
                                      uint32 *numSnapshots, char *names, size_t namesLen,
                                      size_t *requiredLen);

#ifdef __cplusplus
}
#endif

#endif /* VIXDISKLIBEXT_H */
