// The extensions of vixDiskLibExt.h over VMDKBlock: change tracking's answers (a change ID,
// vSphere's QueryChangedDiskAreas), the block status of a range with the chain depth holding
// each part, and the restore guard's answer (the snapshots on top of a disk).

import CVixDiskLib
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// A malloc'd C list: a header struct whose trailing `[1]` array holds `count` entries,
/// zeroed; `entriesOffset` is where the array starts in the header. nil when out of memory
/// or the size overflows.
func allocateList<Header, Entry>(
  _ header: Header.Type, entries: Entry.Type, count: Int, entriesOffset: Int
) -> (UnsafeMutablePointer<Header>, UnsafeMutablePointer<Entry>)? {
  let (extra, o1) = max(0, count - 1).multipliedReportingOverflow(by: MemoryLayout<Entry>.stride)
  let (bytes, o2) = MemoryLayout<Header>.size.addingReportingOverflow(extra)
  guard !o1, !o2, let raw = calloc(1, bytes) else { return nil }
  return (raw.assumingMemoryBound(to: Header.self), (raw + entriesOffset).assumingMemoryBound(to: Entry.self))
}

@_cdecl("VixDiskLibExt_GetChangeId")
public func VixDiskLibExt_GetChangeId(
  _ handle: OpaquePointer?, _ buffer: UnsafeMutablePointer<CChar>?, _ length: Int,
  _ required: UnsafeMutablePointer<Int>?
) -> UInt64 {
  vixCall {
    let h = try handles.get(handle, "disk handle")
    guard let id = try h.disk.currentChangeID() else {
      throw VixFailure(
        Vix.notSupported,
        "change tracking is off for \(h.location) (turn it on with `vmdk-disk track on`)")
    }
    try copyOut(Array(id.utf8) + [0], buffer, length, required)
  }
}

@_cdecl("VixDiskLibExt_QueryChangedDiskAreas")
public func VixDiskLibExt_QueryChangedDiskAreas(
  _ handle: OpaquePointer?, _ changeID: UnsafePointer<CChar>?, _ startOffset: UInt64,
  _ out: UnsafeMutablePointer<UnsafeMutablePointer<VixDiskLibExtChangeInfo>?>?
) -> UInt64 {
  vixCall {
    guard let out else { throw VixFailure(Vix.invalidArg, "the change info pointer is NULL") }
    out.pointee = nil
    let h = try handles.get(handle, "disk handle")
    let id = try string(changeID, "the change ID")
    let info = try h.disk.queryChangedDiskAreas(since: id, startOffset: startOffset)
    guard info.changedArea.count < Int(UInt32.max) else { throw VixFailure(Vix.fail, "too many changed areas") }
    let offset =
      MemoryLayout<VixDiskLibExtChangeInfo>.offset(of: \.changedArea)
      ?? (MemoryLayout<VixDiskLibExtChangeInfo>.size - MemoryLayout<VixDiskLibExtChangedArea>.stride)
    guard
      let (list, areas) = allocateList(
        VixDiskLibExtChangeInfo.self, entries: VixDiskLibExtChangedArea.self, count: info.changedArea.count,
        entriesOffset: offset)
    else { throw VixFailure(2, "out of memory") }
    list.pointee.startOffset = info.startOffset
    list.pointee.length = info.length
    list.pointee.numChangedAreas = UInt32(info.changedArea.count)
    for (i, a) in info.changedArea.enumerated() {
      areas[i] = VixDiskLibExtChangedArea(start: a.start, length: a.length)
    }
    out.pointee = list
  }
}

@_cdecl("VixDiskLibExt_FreeChangeInfo")
public func VixDiskLibExt_FreeChangeInfo(_ info: UnsafeMutablePointer<VixDiskLibExtChangeInfo>?) {
  free(info)
}

/// Thrown inside the block status walk when the list is full.
private struct ListFull: Error {}

@_cdecl("VixDiskLibExt_QueryBlockStatus")
public func VixDiskLibExt_QueryBlockStatus(
  _ handle: OpaquePointer?, _ start: UInt64, _ count: UInt64, _ maxExtents: UInt32,
  _ out: UnsafeMutablePointer<UnsafeMutablePointer<VixDiskLibExtBlockStatus>?>?
) -> UInt64 {
  vixCall {
    guard let out else { throw VixFailure(Vix.invalidArg, "the block status pointer is NULL") }
    out.pointee = nil
    let h = try handles.get(handle, "disk handle")
    let disk = h.disk
    guard start <= disk.capacitySectors else {
      throw VMDKError(
        .outOfRange, "sector \(start) is past the end of the disk (\(disk.capacitySectors) sectors)",
        file: disk.top.path)
    }
    let sectors = min(count, disk.capacitySectors - start)
    let cap = maxExtents == 0 ? Int(VIXDISKLIBEXT_MAX_EXTENTS) : Int(min(maxExtents, UInt32(VIXDISKLIBEXT_MAX_EXTENTS)))
    var extents: [VixDiskLibExtBlockExtent] = []
    if sectors > 0 {
      do {
        try disk.blockStatus(offset: start * 512, length: sectors * 512) { s in
          guard extents.count < cap else { throw ListFull() }
          var flags: UInt32 = 0
          if s.zero { flags |= UInt32(VIXDISKLIBEXT_BLOCK_ZERO) }
          if s.data { flags |= UInt32(VIXDISKLIBEXT_BLOCK_DATA) }
          if s.present { flags |= UInt32(VIXDISKLIBEXT_BLOCK_PRESENT) }
          extents.append(
            VixDiskLibExtBlockExtent(
              offset: s.start / 512, length: (s.length + 511) / 512, flags: flags, depth: Int32(clamping: s.depth)))
        }
      } catch is ListFull {}
    }
    let offset =
      MemoryLayout<VixDiskLibExtBlockStatus>.offset(of: \.extents)
      ?? MemoryLayout<VixDiskLibExtBlockExtent>.alignment
    guard
      let (list, entries) = allocateList(
        VixDiskLibExtBlockStatus.self, entries: VixDiskLibExtBlockExtent.self, count: extents.count,
        entriesOffset: offset)
    else { throw VixFailure(2, "out of memory") }
    list.pointee.numExtents = UInt32(extents.count)
    for (i, e) in extents.enumerated() { entries[i] = e }
    out.pointee = list
  }
}

@_cdecl("VixDiskLibExt_FreeBlockStatus")
public func VixDiskLibExt_FreeBlockStatus(_ status: UnsafeMutablePointer<VixDiskLibExtBlockStatus>?) {
  free(status)
}

@_cdecl("VixDiskLibExt_SnapshotsOnTop")
public func VixDiskLibExt_SnapshotsOnTop(
  _ connection: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ count: UnsafeMutablePointer<UInt32>?,
  _ names: UnsafeMutablePointer<CChar>?, _ length: Int, _ required: UnsafeMutablePointer<Int>?
) -> UInt64 {
  vixCall {
    count?.pointee = 0
    _ = try connections.get(connection, "connection")
    let file = try string(path, "the path")
    var st = stat()
    guard stat(file, &st) == 0 else {
      throw VMDKError(errno == ENOENT ? .fileNotFound : .fileAccess, "cannot find the disk", file: file)
    }
    let found = try RestoreGuard.snapshots(of: file)
    count?.pointee = UInt32(clamping: found.count)
    var bytes: [UInt8] = []
    for name in found { bytes += Array(name.utf8) + [0] }
    bytes.append(0)
    required?.pointee = bytes.count
    if names != nil { try copyOut(bytes, names, length, required) }
  }
}
