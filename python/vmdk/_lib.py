"""ctypes declarations of the VixDiskLib C API (libvixDiskLib.so.8).

The struct layouts are VixDiskLib's public ABI (vixDiskLib.h); the open library this
package was written for implements them, and so does VMware's own.
"""

import ctypes
import ctypes.util
import os

VixError = ctypes.c_uint64

VIX_OK = 0
VIX_ASYNC = 25000

FLAG_OPEN_UNBUFFERED = 1
FLAG_OPEN_SINGLE_LINK = 2
FLAG_OPEN_READ_ONLY = 4

SECTOR_SIZE = 512
MIN_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 131072
MAX_CHUNK_NUMBER = 512 * 1024

ADAPTER_TYPES = {1: "ide", 2: "buslogic", 3: "lsilogic", 256: "unknown"}
DISK_TYPES = {
    "monolithicSparse": 1,
    "monolithicFlat": 2,
    "twoGbMaxExtentSparse": 3,
    "twoGbMaxExtentFlat": 4,
    "vmfs": 5,
    "streamOptimized": 6,
    "vmfsThin": 7,
    "vmfsSparse": 8,
}


class Geometry(ctypes.Structure):
    _fields_ = [
        ("cylinders", ctypes.c_uint32),
        ("heads", ctypes.c_uint32),
        ("sectors", ctypes.c_uint32),
    ]


class Info(ctypes.Structure):
    _fields_ = [
        ("biosGeo", Geometry),
        ("physGeo", Geometry),
        ("capacity", ctypes.c_uint64),
        ("adapterType", ctypes.c_int),
        ("numLinks", ctypes.c_int),
        ("parentFileNameHint", ctypes.c_char_p),
        ("uuid", ctypes.c_char_p),
        ("logicalSectorSize", ctypes.c_uint32),
        ("physicalSectorSize", ctypes.c_uint32),
    ]


class Block(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint64), ("length", ctypes.c_uint64)]


class BlockList(ctypes.Structure):
    _fields_ = [("numBlocks", ctypes.c_uint32), ("blocks", Block * 1)]


class CreateParams(ctypes.Structure):
    _fields_ = [
        ("diskType", ctypes.c_int),
        ("adapterType", ctypes.c_int),
        ("hwVersion", ctypes.c_uint16),
        ("capacity", ctypes.c_uint64),
        ("logicalSectorSize", ctypes.c_uint32),
        ("physicalSectorSize", ctypes.c_uint32),
    ]


# void (*)(const char *fmt, va_list args): va_list reaches us as a pointer on x86-64 and
# arm64 Linux, which vsnprintf takes back.
LogFunc = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)
CompletionCB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, VixError)
ProgressFunc = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_int)


def _candidates():
    explicit = os.environ.get("VIXDISKLIB")
    if explicit:
        yield explicit
        return
    libdir = os.environ.get("VDDK_LIBDIR")
    if libdir:
        yield os.path.join(libdir, "lib64", "libvixDiskLib.so.8")
        yield os.path.join(libdir, "libvixDiskLib.so.8")
    found = ctypes.util.find_library("vixDiskLib")
    if found:
        yield found
    yield "libvixDiskLib.so.8"
    yield "libvixDiskLib.so"


def load():
    """Loads the library: $VIXDISKLIB (a file), $VDDK_LIBDIR/lib64, the system's paths."""
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            errors.append(f"{path}: {e}")
            continue
        _declare(lib)
        return lib
    raise OSError(
        "cannot load libvixDiskLib: set VIXDISKLIB to the library file or VDDK_LIBDIR to the "
        "folder Tools/install.sh filled; tried " + "; ".join(errors)
    )


def _fn(lib, name, restype, *argtypes):
    f = getattr(lib, "VixDiskLib_" + name)
    f.restype = restype
    f.argtypes = list(argtypes)


def _declare(lib):
    p = ctypes.c_void_p
    P = ctypes.POINTER
    s = ctypes.c_char_p
    u64 = ctypes.c_uint64
    _fn(lib, "InitEx", VixError, ctypes.c_uint32, ctypes.c_uint32, LogFunc, LogFunc, LogFunc, s, s)
    _fn(lib, "Exit", None)
    _fn(lib, "AllocateConnectParams", p)
    _fn(lib, "FreeConnectParams", None, p)
    _fn(lib, "ConnectEx", VixError, p, ctypes.c_bool, s, s, P(p))
    _fn(lib, "Disconnect", VixError, p)
    _fn(lib, "Open", VixError, p, s, ctypes.c_uint32, P(p))
    _fn(lib, "Close", VixError, p)
    _fn(lib, "GetInfo", VixError, p, P(P(Info)))
    _fn(lib, "FreeInfo", None, P(Info))
    _fn(lib, "GetTransportMode", s, p)
    _fn(lib, "Read", VixError, p, u64, u64, p)
    _fn(lib, "Write", VixError, p, u64, u64, p)
    _fn(lib, "Flush", VixError, p)
    _fn(lib, "QueryAllocatedBlocks", VixError, p, u64, u64, u64, P(P(BlockList)))
    _fn(lib, "FreeBlockList", VixError, P(BlockList))
    _fn(lib, "GetMetadataKeys", VixError, p, p, ctypes.c_size_t, P(ctypes.c_size_t))
    _fn(lib, "ReadMetadata", VixError, p, s, p, ctypes.c_size_t, P(ctypes.c_size_t))
    _fn(lib, "WriteMetadata", VixError, p, s, s)
    _fn(lib, "GetErrorText", p, VixError, s)
    _fn(lib, "FreeErrorText", None, p)
    _fn(lib, "Create", VixError, p, s, P(CreateParams), p, p)
