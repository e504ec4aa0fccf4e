/*
 * vixDiskLib.h: the VixDiskLib C API of the open vmdk-toolkit library (libvixDiskLib.so).
 *
 * Written for this project from the public facts of VMware's VixDiskLib ABI (function
 * names, argument types, constants, struct layouts) so that a program written for VMware's
 * VDDK compiles against it unchanged and runs against our library. Local disks only: a
 * VMDK path, or one of the toolkit's locations (nbd://, nbds://, http://, https://).
 *
 * What needs a vSphere server (a serverName or vmxSpec in the connect parameters, the
 * san/hotadd/nbdssl transports of ESXi) is refused with VIX_E_NOT_SUPPORTED (6) from
 * Connect/ConnectEx; nothing blocks or crashes.
 *
 * Error codes: every VixError this library returns carries its code in the low 16 bits
 * (VIX_ERROR_CODE). Codes below 20000 are VixDiskLib's numbers; codes from 20001 on are the
 * toolkit's own (README "Error codes"): they overlap numbers that VIX uses for guest
 * operations, which VixDiskLib never returns. VixDiskLib_GetErrorText of the last error of
 * the calling thread gives our message with the file and the byte offset.
 *
 * Thread safety (unlike VMware's library, by design):
 *  - InitEx/Init and Exit: once per process; any other call between them may come from any
 *    thread.
 *  - Different handles: every call may run concurrently on different handles, from any
 *    number of threads; there is no global lock on the I/O path.
 *  - One handle: Read, Write, ReadAsync, WriteAsync, QueryAllocatedBlocks, GetInfo,
 *    ReadMetadata and GetMetadataKeys may run concurrently on the same handle. Writes to
 *    overlapping ranges at once give one of the two contents per sector. Close, Attach,
 *    Shrink, Defragment and WriteMetadata must not overlap any other call on that handle.
 *  - Async completion callbacks run on a worker thread of the library, never inside
 *    ReadAsync/WriteAsync; Wait(h) returns when every request on h has called back. The
 *    workers are one pool of max(4, cores) threads shared by every handle, taking requests
 *    in the order they were submitted: a callback that blocks holds one of them, and one
 *    that waits for another asynchronous request (or calls Wait) can wait forever.
 *
 * Logging: the library never writes to stdout or stderr. Every line (this library's and the
 * toolkit's underneath: retries, reconnects) goes to InitEx's callbacks, called with
 * ("%s", line), the line ending in '\n', from any thread: errors and warnings to warnFunc
 * (logFunc when warnFunc is NULL), the rest to logFunc. panicFunc is never called (nothing
 * here panics; failures are VixErrors). As with VMware's library, a line whose callback is
 * NULL goes to the default logger, which appends it, with the time and the process id, to
 * the file "vixDiskLib.log" in the temporary folder (the configuration's tmpDirectory, else
 * $TMPDIR, else /tmp) or to the configuration's log.file; the file is made (0600) at the
 * first line only, never through a symbolic link, and a file that cannot be written drops
 * its lines. Which lines are delivered: vixDiskLib.transport.LogLevel 0 none, 1 errors,
 * 2 and 3 (the default, as VDDK's) also warnings, 4 also info, 5 and 6 also debug; or the
 * toolkit's log.level (off, error, warning, info, debug).
 *
 * Configuration file (InitEx's configFile, "key = value" lines, '#' comments):
 *  - tmpDirectory: the default logger's folder (made 0700 when missing). The library makes
 *    no other files there: its temporary files (descriptor rewrites, clones, converted
 *    disks) sit next to the file they replace, so that a rename puts them in place.
 *  - vixDiskLib.transport.LogLevel: 0..6, above.
 *  - vixDiskLib.nfcAio.Session.BufSizeIn64KB (1..512): the bytes per NBD request, in 64 KiB
 *    units (our requestSize); vixDiskLib.nfcAio.Session.BufCount (1..256): NBD requests in
 *    flight per connection (requestsInFlight).
 *  - vixDiskLib.nfcAio.SocketOption.SendBufferSize / .ReceiveBufferSize (also spelled
 *    SndBuf/SO_SNDBUF, RcvBuf/RecvBufferSize/SO_RCVBUF): SO_SNDBUF / SO_RCVBUF of the NBD
 *    and HTTP sockets, bytes with K or M, 4K..256M (our socketSendBuffer/ReceiveBuffer).
 *    VMware publishes no names under SocketOption; these are ours.
 *  - every key of the toolkit's own configuration file (README "Configuration file").
 *  - any other key (VMware's NFC, SAN, hotadd and phone-home keys included) is ignored with
 *    exactly one warning line naming the file, the line and the key. A bad value of a key
 *    that is used, or a line without '=', makes InitEx fail with 20025.
 */
#ifndef VIXDISKLIB_H
#define VIXDISKLIB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* VMware's basic types, as vm_basic_types.h spells them (only when nobody did already).
 * The prototypes below write VMware's Bool as the char it is, so that Swift (which has its
 * own Bool) can import this header. */
#ifndef _VM_BASIC_TYPES_H_
typedef uint64_t uint64;
typedef uint32_t uint32;
typedef uint16_t uint16;
typedef uint8_t uint8;
#ifndef __swift__
typedef char Bool;
#endif
#endif
#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif

/* ---- Errors (the parts of vix.h that VixDiskLib uses) ---- */
#ifndef _VIX_H_
typedef uint64 VixError;
#define VIX_ERROR_CODE(err) ((err) & 0xFFFF)
#define VIX_SUCCEEDED(err) (VIX_OK == (err))
#define VIX_FAILED(err) (VIX_OK != (err))

enum {
  VIX_OK = 0,
  VIX_E_FAIL = 1,
  VIX_E_OUT_OF_MEMORY = 2,
  VIX_E_INVALID_ARG = 3,
  VIX_E_FILE_NOT_FOUND = 4,
  VIX_E_OBJECT_IS_BUSY = 5,
  VIX_E_NOT_SUPPORTED = 6,
  VIX_E_FILE_ERROR = 7,
  VIX_E_DISK_FULL = 8,
  VIX_E_INCORRECT_FILE_TYPE = 9,
  VIX_E_CANCELLED = 10,
  VIX_E_FILE_READ_ONLY = 11,
  VIX_E_FILE_ALREADY_EXISTS = 12,
  VIX_E_FILE_ACCESS_ERROR = 13,
  VIX_E_REQUIRES_LARGE_FILES = 14,
  VIX_E_FILE_ALREADY_LOCKED = 15,
  VIX_E_NOT_SUPPORTED_ON_REMOTE_OBJECT = 20,
  VIX_E_FILE_TOO_BIG = 21,
  VIX_E_FILE_NAME_INVALID = 22,
  VIX_E_ALREADY_EXISTS = 23,
  VIX_E_BUFFER_TOOSMALL = 24,
  VIX_E_OBJECT_NOT_FOUND = 25,
  VIX_E_AUTHENTICATION_FAIL = 35,
  VIX_E_HOST_CONNECTION_LOST = 36,
  VIX_E_INVALID_HANDLE = 1000,
  VIX_E_HOST_NETBLKDEV_HANDSHAKE = 14006,
  VIX_E_HOST_SOCKET_CREATION_ERROR = 14007,
  VIX_E_HOST_SERVER_NOT_FOUND = 14008,
  VIX_E_HOST_NETWORK_CONN_REFUSED = 14009,
  VIX_E_HOST_TCP_SOCKET_ERROR = 14010,
  VIX_E_HOST_TCP_CONN_LOST = 14011,
  VIX_E_HOST_SERVER_SHUTDOWN = 14014,
  VIX_E_HOST_SERVER_NOT_AVAILABLE = 14015,
  VIX_E_DISK_INVAL = 16000,
  VIX_E_DISK_NOINIT = 16001,
  VIX_E_DISK_NOIO = 16002,
  VIX_E_DISK_PARTIALCHAIN = 16003,
  VIX_E_DISK_NEEDSREPAIR = 16006,
  VIX_E_DISK_OUTOFRANGE = 16007,
  VIX_E_DISK_CID_MISMATCH = 16008,
  VIX_E_DISK_CANTSHRINK = 16009,
  VIX_E_DISK_OPENPARENT = 16012,
  VIX_E_DISK_NOTSUPPORTED = 16013,
  VIX_E_DISK_NEEDKEY = 16014,
  VIX_E_DISK_KEY_NOTFOUND = 16052,
  VIX_E_DISK_CANTREPAIR = 16062,
  VIX_E_DISK_CAPACITY_MISMATCH = 16067,
  VIX_E_DISK_ATTACH_ROOTLINK = 16069,
  VIX_E_CANNOT_CONNECT_TO_HOST = 18000,
  VIX_ASYNC = 25000,
  VIX_E_ASYNC_MIXEDMODE_UNSUPPORTED = 26000
};
#endif

/* ---- Types ---- */
typedef uint64 VixDiskLibSectorType;
#define VIXDISKLIB_SECTOR_SIZE 512

/* Cylinders/heads/sectors. 12 bytes. */
typedef struct {
  uint32 cylinders;
  uint32 heads;
  uint32 sectors;
} VixDiskLibGeometry;

typedef enum {
  VIXDISKLIB_DISK_MONOLITHIC_SPARSE = 1, /* monolithicSparse */
  VIXDISKLIB_DISK_MONOLITHIC_FLAT = 2,   /* monolithicFlat */
  VIXDISKLIB_DISK_SPLIT_SPARSE = 3,      /* twoGbMaxExtentSparse */
  VIXDISKLIB_DISK_SPLIT_FLAT = 4,        /* twoGbMaxExtentFlat */
  VIXDISKLIB_DISK_VMFS_FLAT = 5,         /* vmfs */
  VIXDISKLIB_DISK_STREAM_OPTIMIZED = 6,  /* streamOptimized */
  VIXDISKLIB_DISK_VMFS_THIN = 7,         /* vmfsThin */
  VIXDISKLIB_DISK_VMFS_SPARSE = 8,       /* vmfsSparse: not written by this library */
  VIXDISKLIB_DISK_UNKNOWN = 256
} VixDiskLibDiskType;

typedef enum {
  VIXDISKLIB_ADAPTER_IDE = 1,
  VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC = 2,
  VIXDISKLIB_ADAPTER_SCSI_LSILOGIC = 3,
  VIXDISKLIB_ADAPTER_UNKNOWN = 256
} VixDiskLibAdapterType;

#define VIXDISKLIB_HWVERSION_WORKSTATION_4 3
#define VIXDISKLIB_HWVERSION_WORKSTATION_5 4
#define VIXDISKLIB_HWVERSION_WORKSTATION_6 6
#define VIXDISKLIB_HWVERSION_ESX30 VIXDISKLIB_HWVERSION_WORKSTATION_5
#define VIXDISKLIB_HWVERSION_ESX4X 7
#define VIXDISKLIB_HWVERSION_ESX50 8
#define VIXDISKLIB_HWVERSION_ESX51 9
#define VIXDISKLIB_HWVERSION_ESX55 10
#define VIXDISKLIB_HWVERSION_ESX60 11
#define VIXDISKLIB_HWVERSION_ESX65 13
#define VIXDISKLIB_HWVERSION_CURRENT VIXDISKLIB_HWVERSION_ESX65

/* QueryAllocatedBlocks' chunk sizes, in sectors, and its cap on chunks per call. */
#define VIXDISKLIB_MIN_CHUNK_SIZE 128
#define VIXDISKLIB_MAX_CHUNK_SIZE 131072
#define VIXDISKLIB_MAX_CHUNK_NUMBER (512 * 1024)

/* A new disk. 32 bytes on x86-64 and arm64 (capacity at 16). Sector sizes 0 mean 512. */
typedef struct {
  VixDiskLibDiskType diskType;
  VixDiskLibAdapterType adapterType;
  uint16 hwVersion;
  VixDiskLibSectorType capacity; /* sectors */
  uint32 logicalSectorSize;
  uint32 physicalSectorSize;
} VixDiskLibCreateParams;

typedef enum {
  VIXDISKLIB_CRED_UID = 1,
  VIXDISKLIB_CRED_SESSIONID = 2,
  VIXDISKLIB_CRED_TICKETID = 3,
  VIXDISKLIB_CRED_SSPI = 4,
  VIXDISKLIB_CRED_UNKNOWN = 256
} VixDiskLibCredType;

typedef enum {
  VIXDISKLIB_SPEC_VMX = 0,
  VIXDISKLIB_SPEC_VSTORAGE_OBJECT = 1,
  VIXDISKLIB_SPEC_UNKNOWN = 256
} VixDiskLibSpecType;

typedef struct {
  char *id;
  char *datastoreMoRef;
  char *ssId;
} VixDiskLibVStorageObjectSpec;

typedef union {
  char *vmxSpec;
  VixDiskLibVStorageObjectSpec vStorageObjSpec;
} VixDiskLibSpec;

typedef struct VixDiskLibConnectParamsState VixDiskLibConnectParamsState;

/* Connection parameters. 128 bytes on x86-64. All-NULL (or a NULL pointer) means local
 * disks; a serverName or vmxSpec is refused (VIX_E_NOT_SUPPORTED). */
typedef struct {
  char *vmxSpec;
  char *serverName;
  char *thumbPrint;
  long privateUse;
  VixDiskLibCredType credType;
  union VixDiskLibCreds {
    struct VixDiskLibUidPasswdCreds {
      char *userName;
      char *password;
    } uid;
    struct VixDiskLibSessionIdCreds {
      char *cookie;
      char *userName;
      char *key;
    } sessionId;
    struct VixDiskLibTicketIdCreds *ticketId;
  } creds;
  uint32 port;
  uint32 nfcHostPort;
  char *vimApiVer;
  char reserved[8];
  VixDiskLibConnectParamsState *state;
  union {
    VixDiskLibVStorageObjectSpec vStorageObjSpec;
  } spec;
  VixDiskLibSpecType specType;
} VixDiskLibConnectParams;

/* What GetInfo returns. 64 bytes on x86-64 (capacity at 24, parentFileNameHint at 40). */
typedef struct {
  VixDiskLibGeometry biosGeo;
  VixDiskLibGeometry physGeo;
  VixDiskLibSectorType capacity; /* sectors */
  VixDiskLibAdapterType adapterType;
  int numLinks;
  char *parentFileNameHint; /* NULL for a disk without parent */
  char *uuid;               /* ddb.uuid, NULL when the disk has none */
  uint32 logicalSectorSize;
  uint32 physicalSectorSize;
} VixDiskLibInfo;

typedef struct {
  VixDiskLibSectorType offset; /* sectors */
  VixDiskLibSectorType length; /* sectors */
} VixDiskLibBlock;

/* numBlocks entries follow (blocks[1] is the ABI's way of saying "a flexible array"). */
typedef struct {
  uint32 numBlocks;
  VixDiskLibBlock blocks[1];
} VixDiskLibBlockList;

typedef struct VixDiskLibHandleStruct VixDiskLibHandleStruct;
typedef VixDiskLibHandleStruct *VixDiskLibHandle;
struct VixDiskLibConnectParam;
typedef struct VixDiskLibConnectParam *VixDiskLibConnection;

typedef void(VixDiskLibGenericLogFunc)(const char *fmt, va_list args);
typedef void(VixDiskLibGenericLogVFunc)(int routing, const char *fmt, va_list args);

/* Open flags. The compression flags apply to VMware's NBD transport only and are ignored. */
#define VIXDISKLIB_FLAG_OPEN_UNBUFFERED (1 << 0)
#define VIXDISKLIB_FLAG_OPEN_SINGLE_LINK (1 << 1)
#define VIXDISKLIB_FLAG_OPEN_READ_ONLY (1 << 2)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_ZLIB (1 << 4)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_FASTLZ (1 << 5)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_SKIPZ (1 << 6)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_MASK (0x03f0)

/* Progress of Create/Clone/Grow/Shrink/Defragment; the return value is ignored. */
typedef char (*VixDiskLibProgressFunc)(void *progressData, int percentCompleted);
/* Completion of ReadAsync/WriteAsync, called on a worker thread. */
typedef void (*VixDiskLibCompletionCB)(void *cbData, VixError result);

/* ---- Setup ---- */
VixError VixDiskLib_InitEx(uint32 majorVersion, uint32 minorVersion, VixDiskLibGenericLogFunc *log,
                           VixDiskLibGenericLogFunc *warn, VixDiskLibGenericLogFunc *panic,
                           const char *libDir, const char *configFile);
VixError VixDiskLib_Init(uint32 majorVersion, uint32 minorVersion, VixDiskLibGenericLogFunc *log,
                         VixDiskLibGenericLogFunc *warn, VixDiskLibGenericLogFunc *panic,
                         const char *libDir);
void VixDiskLib_Exit(void);
/* "file:nbd:http": local files, and the toolkit's network locations. */
const char *VixDiskLib_ListTransportModes(void);
VixError VixDiskLib_Cleanup(const VixDiskLibConnectParams *connectParams, uint32 *numCleanedUp,
                            uint32 *numRemaining);

/* ---- Connections ---- */
VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void);
void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *connectParams);
VixError VixDiskLib_GetConnectParams(const VixDiskLibConnection connection,
                                     VixDiskLibConnectParams **connectParams);
VixError VixDiskLib_Connect(const VixDiskLibConnectParams *connectParams,
                            VixDiskLibConnection *connection);
VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *connectParams, char readOnly,
                              const char *snapshotRef, const char *transportModes,
                              VixDiskLibConnection *connection);
VixError VixDiskLib_Disconnect(VixDiskLibConnection connection);
VixError VixDiskLib_PrepareForAccess(const VixDiskLibConnectParams *connectParams,
                                     const char *identity);
VixError VixDiskLib_EndAccess(const VixDiskLibConnectParams *connectParams, const char *identity);

/* ---- Disks ---- */
VixError VixDiskLib_Open(const VixDiskLibConnection connection, const char *path, uint32 flags,
                         VixDiskLibHandle *diskHandle);
VixError VixDiskLib_Close(VixDiskLibHandle diskHandle);
VixError VixDiskLib_GetInfo(VixDiskLibHandle diskHandle, VixDiskLibInfo **info);
void VixDiskLib_FreeInfo(VixDiskLibInfo *info);
const char *VixDiskLib_GetTransportMode(VixDiskLibHandle diskHandle);
VixError VixDiskLib_Read(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                         VixDiskLibSectorType numSectors, uint8 *readBuffer);
VixError VixDiskLib_Write(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                          VixDiskLibSectorType numSectors, const uint8 *writeBuffer);
VixError VixDiskLib_ReadAsync(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                              VixDiskLibSectorType numSectors, uint8 *readBuffer,
                              VixDiskLibCompletionCB callback, void *cbData);
VixError VixDiskLib_WriteAsync(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                               VixDiskLibSectorType numSectors, const uint8 *writeBuffer,
                               VixDiskLibCompletionCB callback, void *cbData);
VixError VixDiskLib_Wait(VixDiskLibHandle diskHandle);
VixError VixDiskLib_Flush(VixDiskLibHandle diskHandle);
VixError VixDiskLib_QueryAllocatedBlocks(VixDiskLibHandle diskHandle,
                                         VixDiskLibSectorType startSector,
                                         VixDiskLibSectorType numSectors,
                                         VixDiskLibSectorType chunkSize,
                                         VixDiskLibBlockList **blockList);
VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *blockList);

/* ---- Metadata (the descriptor's disk database, ddb.* keys) ---- */
VixError VixDiskLib_ReadMetadata(VixDiskLibHandle diskHandle, const char *key, char *buf,
                                 size_t bufLen, size_t *requiredLen);
VixError VixDiskLib_WriteMetadata(VixDiskLibHandle diskHandle, const char *key, const char *val);
VixError VixDiskLib_GetMetadataKeys(VixDiskLibHandle diskHandle, char *keys, size_t maxLen,
                                    size_t *requiredLen);

/* ---- Maintenance (local disks) ---- */
VixError VixDiskLib_Create(const VixDiskLibConnection connection, const char *path,
                           const VixDiskLibCreateParams *createParams,
                           VixDiskLibProgressFunc progressFunc, void *progressCallbackData);
VixError VixDiskLib_CreateChild(VixDiskLibHandle diskHandle, const char *childPath,
                                VixDiskLibDiskType diskType, VixDiskLibProgressFunc progressFunc,
                                void *progressCallbackData);
VixError VixDiskLib_Clone(const VixDiskLibConnection dstConnection, const char *dstPath,
                          const VixDiskLibConnection srcConnection, const char *srcPath,
                          const VixDiskLibCreateParams *vixCreateParams,
                          VixDiskLibProgressFunc progressFunc, void *progressCallbackData,
                          char overWrite);
VixError VixDiskLib_Unlink(VixDiskLibConnection connection, const char *path);
VixError VixDiskLib_Grow(VixDiskLibConnection connection, const char *path,
                         VixDiskLibSectorType capacity, char updateGeometry,
                         VixDiskLibProgressFunc progressFunc, void *progressCallbackData);
VixError VixDiskLib_Shrink(VixDiskLibHandle diskHandle, VixDiskLibProgressFunc progressFunc,
                           void *progressCallbackData);
VixError VixDiskLib_Defragment(VixDiskLibHandle diskHandle, VixDiskLibProgressFunc progressFunc,
                               void *progressCallbackData);
VixError VixDiskLib_Rename(const char *srcFileName, const char *dstFileName);
VixError VixDiskLib_SpaceNeededForClone(VixDiskLibHandle diskHandle,
                                        VixDiskLibDiskType cloneDiskType, uint64 *spaceNeeded);
VixError VixDiskLib_CheckRepair(const VixDiskLibConnection connection, const char *filename,
                                char repair);
VixError VixDiskLib_IsAttachPossible(VixDiskLibHandle parent, VixDiskLibHandle child);
VixError VixDiskLib_Attach(VixDiskLibHandle parent, VixDiskLibHandle child);

/* ---- Errors ---- */
/* The text of err: the calling thread's last message when err is its last error (file and
 * byte offset included), else the code's name. Free it with FreeErrorText. */
char *VixDiskLib_GetErrorText(VixError err, const char *locale);
void VixDiskLib_FreeErrorText(char *errMsg);

#ifdef __cplusplus
}
#endif

#endif /* VIXDISKLIB_H */
