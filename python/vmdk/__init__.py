"""Read and write VMware VMDK disks and snapshot chains from Python.

A thin, Pythonic layer over VixDiskLib's C API, as the open ``libvixDiskLib.so.8`` of this
toolkit provides it (VMware's own library has the same API for local disks)::

    import vmdk

    with vmdk.open("backup/disk.vmdk") as disk:
        print(disk.info.capacity, disk.info.adapter_type)
        for offset, length in disk.allocated_blocks():
            data = disk.read(offset, length)

Offsets and lengths are in bytes and must be multiples of 512, the sector size every
VixDiskLib call works in. Errors raise :class:`VixError`, whose ``code`` is VixDiskLib's
error code (4: file not found, 15: file already locked, 16003: partial chain, ...).
"""

import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import _lib

__all__ = ["open", "create", "Disk", "DiskInfo", "Geometry", "VixError", "SECTOR_SIZE"]

SECTOR_SIZE = _lib.SECTOR_SIZE
log = logging.getLogger("vmdk")


class VixError(Exception):
    """A failed VixDiskLib call. ``code`` is VIX_ERROR_CODE(error); ``error`` the whole value."""

    def __init__(self, error: int, text: str, call: str):
        self.error = error
        self.code = error & 0xFFFF
        self.call = call
        super().__init__(f"{call}: {text} (error {self.code})")


_state_lock = threading.Lock()
_state = {"lib": None, "conn": None, "params": None, "callbacks": None}


def _libc_vsnprintf():
    libc = ctypes.CDLL(None)
    f = libc.vsnprintf
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    return f


def _make_logger(level):
    vsnprintf = _libc_vsnprintf()

    def callback(fmt, args):
        buf = ctypes.create_string_buffer(4096)
        vsnprintf(buf, len(buf), fmt, args)
        log.log(level, "%s", buf.value.decode("utf-8", "replace").rstrip("\n"))

    return _lib.LogFunc(callback)


def _library():
    """The loaded, initialised library and the local connection, made once per process."""
    with _state_lock:
        if _state["lib"] is None:
            lib = _lib.load()
            callbacks = (
                _make_logger(logging.INFO),
                _make_logger(logging.WARNING),
                _make_logger(logging.CRITICAL),
            )
            err = lib.VixDiskLib_InitEx(7, 0, callbacks[0], callbacks[1], callbacks[2], None, None)
            _check(lib, err, "VixDiskLib_InitEx")
            params = lib.VixDiskLib_AllocateConnectParams()
            conn = ctypes.c_void_p()
            err = lib.VixDiskLib_ConnectEx(params, False, None, None, ctypes.byref(conn))
            _check(lib, err, "VixDiskLib_ConnectEx")
            _state.update(lib=lib, conn=conn, params=params, callbacks=callbacks)
        return _state["lib"], _state["conn"]


def _check(lib, err, call, what=None):
    if err == _lib.VIX_OK:
        return
    ptr = lib.VixDiskLib_GetErrorText(err, None)
    text = ctypes.string_at(ptr).decode("utf-8", "replace") if ptr else f"error {err}"
    if ptr:
        lib.VixDiskLib_FreeErrorText(ptr)
    raise VixError(err, text if what is None else f"{what}: {text}", call)


@dataclass(frozen=True)
class Geometry:
    cylinders: int
    heads: int
    sectors: int


@dataclass(frozen=True)
class DiskInfo:
    """VixDiskLibInfo, with the capacity also in bytes."""

    capacity_sectors: int
    bios_geometry: Geometry
    physical_geometry: Geometry
    adapter_type: str
    num_links: int
    parent_file_name_hint: Optional[str]
    uuid: Optional[str]
    logical_sector_size: int
    physical_sector_size: int

    @property
    def capacity(self) -> int:
        return self.capacity_sectors * SECTOR_SIZE


def _sectors(offset: int, length: int) -> Tuple[int, int]:
    if offset < 0 or length < 0 or offset % SECTOR_SIZE or length % SECTOR_SIZE:
        raise ValueError(
            f"offset {offset} and length {length} must be non-negative multiples of {SECTOR_SIZE}"
        )
    return offset // SECTOR_SIZE, length // SECTOR_SIZE


class Disk:
    """An open disk (the whole snapshot chain, unless opened with ``single_link``)."""

    def __init__(self, path: str, read_only: bool = True, single_link: bool = False,
                 unbuffered: bool = False):
        self._lib, conn = _library()
        self.path = path
        flags = 0
        if read_only:
            flags |= _lib.FLAG_OPEN_READ_ONLY
        if single_link:
            flags |= _lib.FLAG_OPEN_SINGLE_LINK
        if unbuffered:
            flags |= _lib.FLAG_OPEN_UNBUFFERED
        handle = ctypes.c_void_p()
        err = self._lib.VixDiskLib_Open(conn, path.encode(), flags, ctypes.byref(handle))
        _check(self._lib, err, "VixDiskLib_Open", path)
        self._handle = handle
        self._info: Optional[DiskInfo] = None

    # Context manager and lifetime.
    def __enter__(self) -> "Disk":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes the disk (and releases its lock); closing twice does nothing."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            _check(self._lib, self._lib.VixDiskLib_Close(handle), "VixDiskLib_Close", self.path)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _h(self):
        if self._handle is None:
            raise ValueError(f"{self.path}: the disk is closed")
        return self._handle

    # Metadata.
    @property
    def info(self) -> DiskInfo:
        if self._info is None:
            ptr = ctypes.POINTER(_lib.Info)()
            _check(self._lib, self._lib.VixDiskLib_GetInfo(self._h(), ctypes.byref(ptr)),
                   "VixDiskLib_GetInfo", self.path)
            try:
                i = ptr.contents
                self._info = DiskInfo(
                    capacity_sectors=i.capacity,
                    bios_geometry=Geometry(i.biosGeo.cylinders, i.biosGeo.heads, i.biosGeo.sectors),
                    physical_geometry=Geometry(i.physGeo.cylinders, i.physGeo.heads,
                                               i.physGeo.sectors),
                    adapter_type=_lib.ADAPTER_TYPES.get(i.adapterType, str(i.adapterType)),
                    num_links=i.numLinks,
                    parent_file_name_hint=i.parentFileNameHint.decode() if i.parentFileNameHint else None,
                    uuid=i.uuid.decode() if i.uuid else None,
                    logical_sector_size=i.logicalSectorSize,
                    physical_sector_size=i.physicalSectorSize,
                )
            finally:
                self._lib.VixDiskLib_FreeInfo(ptr)
        return self._info

    @property
    def transport_mode(self) -> str:
        return self._lib.VixDiskLib_GetTransportMode(self._h()).decode()

    def metadata(self) -> Dict[str, str]:
        """The disk database (ddb.* keys without the prefix, as VixDiskLib names them)."""
        need = ctypes.c_size_t(0)
        self._lib.VixDiskLib_GetMetadataKeys(self._h(), None, 0, ctypes.byref(need))
        buf = ctypes.create_string_buffer(max(need.value, 1))
        _check(self._lib, self._lib.VixDiskLib_GetMetadataKeys(self._h(), buf, len(buf), ctypes.byref(need)),
               "VixDiskLib_GetMetadataKeys", self.path)
        keys = [k.decode() for k in buf.raw[: need.value].split(b"\0") if k]
        return {k: self.read_metadata(k) for k in keys}

    def read_metadata(self, key: str) -> str:
        need = ctypes.c_size_t(0)
        self._lib.VixDiskLib_ReadMetadata(self._h(), key.encode(), None, 0, ctypes.byref(need))
        buf = ctypes.create_string_buffer(max(need.value, 1))
        _check(self._lib, self._lib.VixDiskLib_ReadMetadata(self._h(), key.encode(), buf, len(buf),
                                                            ctypes.byref(need)),
               "VixDiskLib_ReadMetadata", f"{self.path}: {key}")
        return buf.value.decode("utf-8", "replace")

    def write_metadata(self, key: str, value: str) -> None:
        _check(self._lib, self._lib.VixDiskLib_WriteMetadata(self._h(), key.encode(), value.encode()),
               "VixDiskLib_WriteMetadata", f"{self.path}: {key}")

    # Data.
    def readinto(self, offset: int, buffer) -> int:
        """Fills ``buffer`` (any writable buffer, a multiple of 512 bytes) from byte ``offset``."""
        view = memoryview(buffer).cast("B")
        start, count = _sectors(offset, len(view))
        if count == 0:
            return 0
        c = (ctypes.c_char * len(view)).from_buffer(view)
        _check(self._lib, self._lib.VixDiskLib_Read(self._h(), start, count, ctypes.addressof(c)),
               "VixDiskLib_Read", f"{self.path}: offset {offset}")
        return len(view)

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self.readinto(offset, buf)
        return bytes(buf)

    def write(self, offset: int, data) -> None:
        view = memoryview(data).cast("B")
        start, count = _sectors(offset, len(view))
        if count == 0:
            return
        buf = ctypes.create_string_buffer(bytes(view), len(view))
        _check(self._lib, self._lib.VixDiskLib_Write(self._h(), start, count, buf),
               "VixDiskLib_Write", f"{self.path}: offset {offset}")

    def flush(self) -> None:
        _check(self._lib, self._lib.VixDiskLib_Flush(self._h()), "VixDiskLib_Flush", self.path)

    def allocated_blocks(self, chunk_size: int = _lib.MIN_CHUNK_SIZE) -> List[Tuple[int, int]]:
        """The allocated ranges as (offset, length) in bytes, from the grain tables.

        ``chunk_size`` is VixDiskLib's, in sectors (128 to 131072); ranges are whole chunks.
        """
        if not _lib.MIN_CHUNK_SIZE <= chunk_size <= _lib.MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size {chunk_size} is outside 128...131072 sectors")
        capacity = self.info.capacity_sectors
        out: List[Tuple[int, int]] = []
        start = 0
        # Whole chunks, at most MAX_CHUNK_NUMBER per call; the last call may end at the end of
        # the disk inside a chunk.
        while start < capacity:
            count_sectors = min(capacity - start, _lib.MAX_CHUNK_NUMBER * chunk_size)
            ptr = ctypes.POINTER(_lib.BlockList)()
            _check(self._lib, self._lib.VixDiskLib_QueryAllocatedBlocks(
                self._h(), start, count_sectors, chunk_size, ctypes.byref(ptr)),
                "VixDiskLib_QueryAllocatedBlocks", self.path)
            try:
                count = ptr.contents.numBlocks
                blocks = ctypes.cast(ctypes.addressof(ptr.contents.blocks),
                                     ctypes.POINTER(_lib.Block * max(count, 1))).contents
                for b in blocks[:count]:
                    start, length = b.offset * SECTOR_SIZE, b.length * SECTOR_SIZE
                    if out and out[-1][0] + out[-1][1] == start:
                        out[-1] = (out[-1][0], out[-1][1] + length)
                    else:
                        out.append((start, length))
            finally:
                self._lib.VixDiskLib_FreeBlockList(ptr)
            start += count_sectors
        return out


def open(path: str, read_only: bool = True, single_link: bool = False,
         unbuffered: bool = False) -> Disk:
    """Opens a disk: a path to a .vmdk (the whole chain) or a location (nbd://, http://)."""
    return Disk(path, read_only=read_only, single_link=single_link, unbuffered=unbuffered)


def create(path: str, capacity: int, disk_type: str = "monolithicSparse",
           adapter_type: str = "lsilogic", hw_version: int = 7) -> None:
    """Creates a new, empty disk of ``capacity`` bytes (a multiple of 512)."""
    lib, conn = _library()
    adapters = {v: k for k, v in _lib.ADAPTER_TYPES.items()}
    if disk_type not in _lib.DISK_TYPES:
        raise ValueError(f"disk_type {disk_type!r} is not one of {sorted(_lib.DISK_TYPES)}")
    if adapter_type not in adapters:
        raise ValueError(f"adapter_type {adapter_type!r} is not one of ide, buslogic, lsilogic")
    _, sectors = _sectors(0, capacity)
    params = _lib.CreateParams(_lib.DISK_TYPES[disk_type], adapters[adapter_type], hw_version,
                               sectors, 512, 512)
    _check(lib, lib.VixDiskLib_Create(conn, path.encode(), ctypes.byref(params),
                                      None, None),
           "VixDiskLib_Create", path)
