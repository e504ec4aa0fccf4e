// Open/Close, GetInfo, Read/Write, the asynchronous calls and Wait, Flush, QueryAllocatedBlocks,
// metadata: VixDiskLib's disk calls on a `Disk` of VMDKBlock.

import CVixDiskLib
import VMDKBlock
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// An open disk as C sees it: the `Disk`, how it was opened, and its asynchronous requests.
final class Handle: @unchecked Sendable {
  private let diskState: Locked<Disk>
  let location: String
  let flags: UInt32
  let writable: Bool
  private(set) var pointer: OpaquePointer? = nil
  /// Requests started and not yet called back; Wait and Close wait for 0.
  private let pendingLock = PLock()
  private var pending = 0

  init(disk: Disk, location: String, flags: UInt32, writable: Bool) {
    self.diskState = Locked(disk)
    self.location = location
    self.flags = flags
    self.writable = writable
  }

  var disk: Disk { diskState.withLock { $0 } }
  func replaceDisk(_ disk: Disk) { diskState.withLock { $0 = disk } }

  func register() -> OpaquePointer {
    let p = handles.add(self)
    pointer = p
    return p
  }

  func started() { pendingLock.withLock { pending += 1 } }
  func finished() {
    pendingLock.withLock {
      pending -= 1
      if pending == 0 { pendingLock.broadcast() }
    }
  }
  func waitIdle() {
    pendingLock.withLock {
      while pending > 0 { pendingLock.wait() }
    }
  }
}

let handles = Registry<Handle>()

/// Opens `location` as VixDiskLib's Open does with `flags`.
func openDisk(_ location: String, flags: UInt32, readOnlyConnection: Bool) throws -> Handle {
  var options = OpenOptions()
  options.singleLink = flags & UInt32(VIXDISKLIB_FLAG_OPEN_SINGLE_LINK) != 0
  let writable = flags & UInt32(VIXDISKLIB_FLAG_OPEN_READ_ONLY) == 0 && !readOnlyConnection
  options.writable = writable
  // VDDK opens paths anywhere the caller names, parents included (linked clones).
  options.allowExternalPaths = true
  options.transport = Library.shared.settings.withLock { $0.transport }
  let disk = try Disk.open(location, options: options)
  return Handle(disk: disk, location: location, flags: flags, writable: writable)
}

@_cdecl("VixDiskLib_Open")
public func VixDiskLib_Open(
  _ connection: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ flags: UInt32,
  _ handle: UnsafeMutablePointer<OpaquePointer?>?
) -> UInt64 {
  vixCall {
    guard let handle else { throw VixFailure(Vix.invalidArg, "the handle pointer is NULL") }
    handle.pointee = nil
    let conn = try connections.get(connection, "connection")
    let location = try string(path, "the path")
    let h = try openDisk(location, flags: flags, readOnlyConnection: conn.readOnly)
    VixLog.shared.emit(
      .info, "opened \(location) (\(h.writable ? "read-write" : "read-only"), \(h.disk.links.count) link(s))")
    handle.pointee = h.register()
  }
}

@_cdecl("VixDiskLib_Close")
public func VixDiskLib_Close(_ handle: OpaquePointer?) -> UInt64 {
  vixCall {
    let h = try handles.get(handle, "disk handle")
    h.waitIdle()
    handles.remove(handle)
    try h.disk.close()
  }
}

@_cdecl("VixDiskLib_GetTransportMode")
public func VixDiskLib_GetTransportMode(_ handle: OpaquePointer?) -> UnsafePointer<CChar>? {
  let mode: StaticString
  switch (try? handles.get(handle, "disk handle"))?.disk.transport {
  case .file?: mode = "file"
  case .nbd?: mode = "nbd"
  case .nbds?: mode = "nbdssl"
  case .http?: mode = "http"
  case .https?: mode = "https"
  case nil: mode = "file"
  }
  return UnsafeRawPointer(mode.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// VixDiskLib's adapter number for `ddb.adapterType` (pvscsi and legacyESX have none: UNKNOWN).
func adapterNumber(_ value: String?) -> VixDiskLibAdapterType {
  switch value?.lowercased() {
  case "ide": VIXDISKLIB_ADAPTER_IDE
  case "buslogic": VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC
  case "lsilogic": VIXDISKLIB_ADAPTER_SCSI_LSILOGIC
  default: VIXDISKLIB_ADAPTER_UNKNOWN
  }
}

/// A geometry value clamped to uint32.
private func clamp32(_ v: UInt64) -> UInt32 { UInt32(min(v, UInt64(UInt32.max))) }

@_cdecl("VixDiskLib_GetInfo")
public func VixDiskLib_GetInfo(
  _ handle: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<VixDiskLibInfo>?>?
) -> UInt64 {
  vixCall {
    guard let out else { throw VixFailure(Vix.invalidArg, "the info pointer is NULL") }
    out.pointee = nil
    let disk = try handles.get(handle, "disk handle").disk
    guard let raw = calloc(1, MemoryLayout<VixDiskLibInfo>.size) else {
      throw VixFailure(2, "out of memory")
    }
    let info = raw.assumingMemoryBound(to: VixDiskLibInfo.self)
    if let g = disk.geometry {
      info.pointee.physGeo = VixDiskLibGeometry(
        cylinders: clamp32(g.cylinders), heads: clamp32(g.heads), sectors: clamp32(g.sectors))
    }
    if let c = disk.metadata("geometry.biosCylinders").flatMap({ UInt64($0) }),
      let hd = disk.metadata("geometry.biosHeads").flatMap({ UInt64($0) }),
      let s = disk.metadata("geometry.biosSectors").flatMap({ UInt64($0) })
    {
      info.pointee.biosGeo = VixDiskLibGeometry(cylinders: clamp32(c), heads: clamp32(hd), sectors: clamp32(s))
    } else {
      info.pointee.biosGeo = info.pointee.physGeo
    }
    info.pointee.capacity = disk.capacitySectors
    info.pointee.adapterType = adapterNumber(disk.metadata("adapterType"))
    info.pointee.numLinks = Int32(clamping: disk.links.count)
    info.pointee.parentFileNameHint = disk.top.descriptor.parentFileNameHint.flatMap { mallocString($0) }
    info.pointee.uuid = disk.metadata("uuid").flatMap { mallocString($0) }
    info.pointee.logicalSectorSize = 512
    info.pointee.physicalSectorSize = 512
    out.pointee = info
  }
}

@_cdecl("VixDiskLib_FreeInfo")
public func VixDiskLib_FreeInfo(_ info: UnsafeMutablePointer<VixDiskLibInfo>?) {
  guard let info else { return }
  free(info.pointee.parentFileNameHint)
  free(info.pointee.uuid)
  free(info)
}

/// The byte range of `count` sectors at `start`, checked against overflow and the disk's end.
func byteRange(_ disk: Disk, _ start: UInt64, _ count: UInt64) throws -> (offset: UInt64, length: Int) {
  let (offset, o1) = start.multipliedReportingOverflow(by: 512)
  let (length, o2) = count.multipliedReportingOverflow(by: 512)
  let (end, o3) = offset.addingReportingOverflow(length)
  guard !o1, !o2, !o3, end <= disk.capacityBytes else {
    throw VMDKError(
      .outOfRange,
      "\(count) sectors at sector \(start) go past the end of the disk (\(disk.capacitySectors) sectors)",
      file: disk.top.path, offset: o1 ? nil : offset)
  }
  guard length <= UInt64(Int.max) else { throw VixFailure(Vix.invalidArg, "\(count) sectors is too large") }
  return (offset, Int(length))
}

func readSectors(_ h: Handle, _ start: UInt64, _ count: UInt64, _ buffer: UnsafeMutablePointer<UInt8>?) throws {
  let disk = h.disk
  let (offset, length) = try byteRange(disk, start, count)
  guard length > 0 else { return }
  guard let buffer else { throw VixFailure(Vix.invalidArg, "the read buffer is NULL") }
  try disk.read(at: offset, into: UnsafeMutableRawBufferPointer(start: buffer, count: length))
}

func writeSectors(_ h: Handle, _ start: UInt64, _ count: UInt64, _ buffer: UnsafePointer<UInt8>?) throws {
  let disk = h.disk
  guard h.writable else {
    throw VMDKError(
      .fileReadOnly, "the disk was opened read-only (VIXDISKLIB_FLAG_OPEN_READ_ONLY)", file: disk.top.path)
  }
  let (offset, length) = try byteRange(disk, start, count)
  guard length > 0 else { return }
  guard let buffer else { throw VixFailure(Vix.invalidArg, "the write buffer is NULL") }
  try disk.write(at: offset, UnsafeRawBufferPointer(start: buffer, count: length))
}

@_cdecl("VixDiskLib_Read")
public func VixDiskLib_Read(
  _ handle: OpaquePointer?, _ start: UInt64, _ count: UInt64, _ buffer: UnsafeMutablePointer<UInt8>?
) -> UInt64 {
  vixCall { try readSectors(try handles.get(handle, "disk handle"), start, count, buffer) }
}

@_cdecl("VixDiskLib_Write")
public func VixDiskLib_Write(
  _ handle: OpaquePointer?, _ start: UInt64, _ count: UInt64, _ buffer: UnsafePointer<UInt8>?
) -> UInt64 {
  vixCall { try writeSectors(try handles.get(handle, "disk handle"), start, count, buffer) }
}

/// What a worker needs to finish an asynchronous request: C pointers, used only by it.
private struct AsyncRequest: @unchecked Sendable {
  let handle: Handle
  let start: UInt64
  let count: UInt64
  let buffer: UnsafeMutablePointer<UInt8>?
  let callback: VixDiskLibCompletionCB?
  let data: UnsafeMutableRawPointer?
}

/// The workers of the asynchronous calls, shared by every handle: requests on one handle and
/// on different handles run at once, as many as the pool has threads.
private let asyncWorkers = WorkerPool(limit: WorkerPool.defaultLimit())

private func submit(_ request: AsyncRequest, write: Bool) -> UInt64 {
  request.handle.started()
  asyncWorkers.run {
    let result = vixCall {
      if write {
        try writeSectors(request.handle, request.start, request.count, UnsafePointer(request.buffer))
      } else {
        try readSectors(request.handle, request.start, request.count, request.buffer)
      }
    }
    request.callback?(request.data, result)
    request.handle.finished()
  }
  return Vix.async
}

@_cdecl("VixDiskLib_ReadAsync")
public func VixDiskLib_ReadAsync(
  _ handle: OpaquePointer?, _ start: UInt64, _ count: UInt64, _ buffer: UnsafeMutablePointer<UInt8>?,
  _ callback: VixDiskLibCompletionCB?, _ data: UnsafeMutableRawPointer?
) -> UInt64 {
  do {
    let h = try handles.get(handle, "disk handle")
    _ = try byteRange(h.disk, start, count)
    if count > 0 && buffer == nil { throw VixFailure(Vix.invalidArg, "the read buffer is NULL") }
    return submit(
      AsyncRequest(handle: h, start: start, count: count, buffer: buffer, callback: callback, data: data), write: false)
  } catch {
    return vixCode(error)
  }
}

@_cdecl("VixDiskLib_WriteAsync")
public func VixDiskLib_WriteAsync(
  _ handle: OpaquePointer?, _ start: UInt64, _ count: UInt64, _ buffer: UnsafePointer<UInt8>?,
  _ callback: VixDiskLibCompletionCB?, _ data: UnsafeMutableRawPointer?
) -> UInt64 {
  do {
    let h = try handles.get(handle, "disk handle")
    guard h.writable else {
      throw VMDKError(
        .fileReadOnly, "the disk was opened read-only (VIXDISKLIB_FLAG_OPEN_READ_ONLY)", file: h.disk.top.path)
    }
    _ = try byteRange(h.disk, start, count)
    if count > 0 && buffer == nil { throw VixFailure(Vix.invalidArg, "the write buffer is NULL") }
    return submit(
      AsyncRequest(
        handle: h, start: start, count: count, buffer: UnsafeMutablePointer(mutating: buffer), callback: callback,
        data: data), write: true)
  } catch {
    return vixCode(error)
  }
}

@_cdecl("VixDiskLib_Wait")
public func VixDiskLib_Wait(_ handle: OpaquePointer?) -> UInt64 {
  vixCall { try handles.get(handle, "disk handle").waitIdle() }
}

@_cdecl("VixDiskLib_Flush")
public func VixDiskLib_Flush(_ handle: OpaquePointer?) -> UInt64 {
  vixCall {
    let h = try handles.get(handle, "disk handle")
    h.waitIdle()
    if h.writable { try h.disk.flush() }
  }
}

@_cdecl("VixDiskLib_QueryAllocatedBlocks")
public func VixDiskLib_QueryAllocatedBlocks(
  _ handle: OpaquePointer?, _ start: UInt64, _ count: UInt64, _ chunk: UInt64,
  _ out: UnsafeMutablePointer<UnsafeMutablePointer<VixDiskLibBlockList>?>?
) -> UInt64 {
  vixCall {
    guard let out else { throw VixFailure(Vix.invalidArg, "the block list pointer is NULL") }
    out.pointee = nil
    let h = try handles.get(handle, "disk handle")
    guard chunk >= 128, chunk <= 131072, chunk & (chunk - 1) == 0 else {
      throw VixFailure(Vix.invalidArg, "chunk size \(chunk) sectors: expected a power of two from 128 to 131072")
    }
    guard start % chunk == 0, count % chunk == 0 || start + count >= h.disk.capacitySectors else {
      throw VixFailure(Vix.invalidArg, "start \(start) and count \(count) must be multiples of the chunk (\(chunk))")
    }
    guard count / chunk <= 512 * 1024 else {
      throw VixFailure(Vix.invalidArg, "\(count / chunk) chunks: at most 524288 per call (VIXDISKLIB_MAX_CHUNK_NUMBER)")
    }
    let (offset, o1) = start.multipliedReportingOverflow(by: 512)
    let (length, o2) = count.multipliedReportingOverflow(by: 512)
    guard !o1, !o2 else { throw VixFailure(Vix.invalidArg, "sector range overflows") }
    let areas = try h.disk.allocatedBlocks(
      chunkSectors: chunk, topOnly: h.flags & UInt32(VIXDISKLIB_FLAG_OPEN_SINGLE_LINK) != 0, offset: offset,
      length: length)
    guard areas.count < Int(UInt32.max) else { throw VixFailure(Vix.fail, "too many blocks") }
    let bytes = MemoryLayout<VixDiskLibBlockList>.size + max(0, areas.count - 1) * MemoryLayout<VixDiskLibBlock>.stride
    guard let raw = calloc(1, bytes) else { throw VixFailure(2, "out of memory") }
    let list = raw.assumingMemoryBound(to: VixDiskLibBlockList.self)
    list.pointee.numBlocks = UInt32(areas.count)
    // blocks[] starts after numBlocks, at the alignment of a block (8 on x86-64 and arm64).
    let blocksOffset = MemoryLayout<VixDiskLibBlockList>.offset(of: \.blocks) ?? MemoryLayout<VixDiskLibBlock>.alignment
    let blocks = (raw + blocksOffset).assumingMemoryBound(to: VixDiskLibBlock.self)
    for (i, area) in areas.enumerated() {
      blocks[i] = VixDiskLibBlock(offset: area.start / 512, length: (area.length + 511) / 512)
    }
    out.pointee = list
  }
}

@_cdecl("VixDiskLib_FreeBlockList")
public func VixDiskLib_FreeBlockList(_ list: UnsafeMutablePointer<VixDiskLibBlockList>?) -> UInt64 {
  free(list)
  return Vix.ok
}

// MARK: Metadata

/// Copies `text` and a NUL into `buffer` of `length` bytes; BUFFER_TOOSMALL when it does not fit.
func copyOut(
  _ bytes: [UInt8], _ buffer: UnsafeMutablePointer<CChar>?, _ length: Int, _ required: UnsafeMutablePointer<Int>?
) throws {
  required?.pointee = bytes.count
  guard let buffer, length >= bytes.count else {
    throw VixFailure(Vix.bufferTooSmall, "the buffer holds \(length) bytes; \(bytes.count) are needed")
  }
  bytes.withUnsafeBytes { source in
    UnsafeMutableRawBufferPointer(start: buffer, count: bytes.count).copyMemory(from: source)
  }
}

@_cdecl("VixDiskLib_ReadMetadata")
public func VixDiskLib_ReadMetadata(
  _ handle: OpaquePointer?, _ key: UnsafePointer<CChar>?, _ buffer: UnsafeMutablePointer<CChar>?, _ length: Int,
  _ required: UnsafeMutablePointer<Int>?
) -> UInt64 {
  vixCall {
    let h = try handles.get(handle, "disk handle")
    let name = try string(key, "the key")
    let disk = h.disk
    let value: String?
    if h.writable {
      let k = name.lowercased().hasPrefix("ddb.") ? name : "ddb." + name
      value = disk.currentDescriptor.ddb(k) ?? disk.metadata(name)
    } else {
      value = disk.metadata(name)
    }
    guard let value else { throw VixFailure(Vix.keyNotFound, "metadata key '\(name)' not found") }
    try copyOut(Array(value.utf8) + [0], buffer, length, required)
  }
}

@_cdecl("VixDiskLib_GetMetadataKeys")
public func VixDiskLib_GetMetadataKeys(
  _ handle: OpaquePointer?, _ buffer: UnsafeMutablePointer<CChar>?, _ length: Int,
  _ required: UnsafeMutablePointer<Int>?
) -> UInt64 {
  vixCall {
    let h = try handles.get(handle, "disk handle")
    let disk = h.disk
    var keys = disk.diskDatabase.map(\.key)
    if h.writable {
      for (k, _) in disk.currentDescriptor.diskDatabase {
        let short = String(k.dropFirst(4))
        if !keys.contains(where: { $0.lowercased() == short.lowercased() }) { keys.append(short) }
      }
    }
    var bytes: [UInt8] = []
    for key in keys { bytes += Array(key.utf8) + [0] }
    bytes.append(0)
    try copyOut(bytes, buffer, length, required)
  }
}

@_cdecl("VixDiskLib_WriteMetadata")
public func VixDiskLib_WriteMetadata(
  _ handle: OpaquePointer?, _ key: UnsafePointer<CChar>?, _ value: UnsafePointer<CChar>?
) -> UInt64 {
  vixCall {
    let h = try handles.get(handle, "disk handle")
    let name = try string(key, "the key")
    let text = try string(value, "the value")
    guard !name.isEmpty, !name.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "=" || $0 == "\"" }),
      !text.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\"" })
    else {
      throw VixFailure(Vix.invalidArg, "a metadata key or value with a newline, '=' or '\"'")
    }
    guard h.writable else {
      throw VMDKError(.fileReadOnly, "the disk was opened read-only", file: h.disk.top.path)
    }
    let full = name.lowercased().hasPrefix("ddb.") ? name : "ddb." + name
    try h.disk.rewriteDescriptor { $0.setDDB(full, text) }
  }
}

// MARK: Extensions

private let versionText: StaticString = "vmdk-toolkit open VixDiskLib 1.0"

@_cdecl("VixDiskLibExt_Version")
public func VixDiskLibExt_Version() -> UnsafePointer<CChar>? {
  UnsafeRawPointer(versionText.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("VixDiskLibExt_Digest")
public func VixDiskLibExt_Digest(_ handle: OpaquePointer?, _ hex: UnsafeMutablePointer<CChar>?, _ length: Int) -> UInt64
{
  vixCall {
    let h = try handles.get(handle, "disk handle")
    let digest = try h.disk.digest(.sha256)
    try copyOut(Array(digest.utf8) + [0], hex, length, nil)
  }
}
