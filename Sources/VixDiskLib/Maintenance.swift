// Create, CreateChild, Clone, Unlink, Grow, Shrink, Defragment, Rename, SpaceNeededForClone,
// CheckRepair, IsAttachPossible/Attach: VixDiskLib's maintenance calls on VMDKBlock's
// operations (ImageCreator, Disk.createSnapshot, copy, resize, compact, defragment, rename,
// delete, check, repair, rebase).

import CVixDiskLib
import VMDKBlock
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// The toolkit's type for VixDiskLib's disk type number.
func diskType(_ type: VixDiskLibDiskType) throws -> DiskType {
  switch type {
  case VIXDISKLIB_DISK_MONOLITHIC_SPARSE: return .monolithicSparse
  case VIXDISKLIB_DISK_MONOLITHIC_FLAT: return .monolithicFlat
  case VIXDISKLIB_DISK_SPLIT_SPARSE: return .twoGbMaxExtentSparse
  case VIXDISKLIB_DISK_SPLIT_FLAT: return .twoGbMaxExtentFlat
  case VIXDISKLIB_DISK_VMFS_FLAT: return .vmfs
  case VIXDISKLIB_DISK_STREAM_OPTIMIZED: return .streamOptimized
  case VIXDISKLIB_DISK_VMFS_THIN: return .vmfsThin
  default:
    throw VixFailure(Vix.notSupported, "disk type \(type.rawValue) cannot be written (vmfsSparse and unknown types)")
  }
}

/// The toolkit's adapter for VixDiskLib's adapter number.
func adapter(_ type: VixDiskLibAdapterType) throws -> AdapterType {
  switch type {
  case VIXDISKLIB_ADAPTER_IDE: return .ide
  case VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC: return .buslogic
  case VIXDISKLIB_ADAPTER_SCSI_LSILOGIC: return .lsilogic
  default: throw VixFailure(Vix.invalidArg, "adapter type \(type.rawValue) is not IDE, BusLogic or LSI Logic")
  }
}

/// Calls a progress callback (its return value is ignored, as VixDiskLib does).
struct Progress {
  let function: VixDiskLibProgressFunc?
  let data: UnsafeMutableRawPointer?
  private var last: Int32 = -1
  init(_ function: VixDiskLibProgressFunc?, _ data: UnsafeMutableRawPointer?) {
    self.function = function
    self.data = data
  }
  mutating func report(_ percent: Int32) {
    guard percent != last else { return }
    last = percent
    _ = function?(data, percent)
  }
}

/// The create options for VixDiskLibCreateParams.
func createOptions(_ p: VixDiskLibCreateParams) throws -> CreateOptions {
  guard p.logicalSectorSize == 0 || p.logicalSectorSize == 512, p.physicalSectorSize == 0 || p.physicalSectorSize == 512
  else {
    throw VixFailure(Vix.notSupported, "sector sizes other than 512 bytes are not supported")
  }
  let (bytes, overflow) = p.capacity.multipliedReportingOverflow(by: 512)
  guard !overflow, p.capacity > 0 else { throw VixFailure(Vix.invalidArg, "capacity of \(p.capacity) sectors") }
  var options = CreateOptions(type: try diskType(p.diskType), capacityBytes: bytes)
  options.adapterType = try adapter(p.adapterType)
  if p.hwVersion != 0 { options.hardwareVersion = String(p.hwVersion) }
  return options
}

func requireConnection(_ connection: OpaquePointer?) throws {
  _ = try connections.get(connection, "connection")
}

@_cdecl("VixDiskLib_Create")
public func VixDiskLib_Create(
  _ connection: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ params: UnsafePointer<VixDiskLibCreateParams>?,
  _ progress: VixDiskLibProgressFunc?, _ data: UnsafeMutableRawPointer?
) -> UInt64 {
  vixCall {
    try requireConnection(connection)
    let target = try string(path, "the path")
    guard let params else { throw VixFailure(Vix.invalidArg, "the create parameters are NULL") }
    var reporter = Progress(progress, data)
    reporter.report(0)
    let writer = try ImageCreator.create(path: target, options: try createOptions(params.pointee))
    do { try writer.commit() } catch {
      writer.abort()
      throw error
    }
    reporter.report(100)
  }
}

@_cdecl("VixDiskLib_CreateChild")
public func VixDiskLib_CreateChild(
  _ handle: OpaquePointer?, _ childPath: UnsafePointer<CChar>?, _ type: VixDiskLibDiskType,
  _ progress: VixDiskLibProgressFunc?, _ data: UnsafeMutableRawPointer?
) -> UInt64 {
  vixCall {
    let h = try handles.get(handle, "disk handle")
    let child = try string(childPath, "the child path")
    guard type == VIXDISKLIB_DISK_MONOLITHIC_SPARSE || type == VIXDISKLIB_DISK_SPLIT_SPARSE else {
      throw VixFailure(Vix.invalidArg, "a child must be MONOLITHIC_SPARSE or SPLIT_SPARSE")
    }
    var reporter = Progress(progress, data)
    reporter.report(0)
    // A parent open for writing holds its lock; the snapshot locks it too. Flush and release
    // it for the snapshot, then open it again as it was.
    try reopen(h) {
      var options = OpenOptions()
      options.allowExternalPaths = true
      try Disk.createSnapshot(of: h.location, at: child, split: type == VIXDISKLIB_DISK_SPLIT_SPARSE, options: options)
    }
    reporter.report(100)
  }
}

/// Closes the handle's disk (waiting for its requests), runs `body`, and opens the disk
/// again with the handle's flags, even when `body` failed.
func reopen(_ h: Handle, _ body: () throws -> Void) throws {
  h.waitIdle()
  if h.writable { try h.disk.close() }
  var failure: (any Error)? = nil
  do { try body() } catch { failure = error }
  if h.writable || failure == nil {
    let again = try openDisk(h.location, flags: h.flags, readOnlyConnection: !h.writable)
    let old = h.disk
    h.replaceDisk(again.disk)
    if !h.writable { try? old.close() }
  }
  if let failure { throw failure }
}

@_cdecl("VixDiskLib_Clone")
public func VixDiskLib_Clone(
  _ dstConnection: OpaquePointer?, _ dstPath: UnsafePointer<CChar>?, _ srcConnection: OpaquePointer?,
  _ srcPath: UnsafePointer<CChar>?, _ params: UnsafePointer<VixDiskLibCreateParams>?,
  _ progress: VixDiskLibProgressFunc?, _ data: UnsafeMutableRawPointer?, _ overwrite: CChar
) -> UInt64 {
  vixCall {
    try requireConnection(dstConnection)
    try requireConnection(srcConnection)
    let target = try string(dstPath, "the destination path")
    let source = try string(srcPath, "the source path")
    var reporter = Progress(progress, data)
    reporter.report(0)
    var open = OpenOptions()
    open.allowExternalPaths = true
    open.transport = Library.shared.settings.withLock { $0.transport }
    let disk = try Disk.open(source, options: open)
    defer { try? disk.close() }
    var options: CreateOptions
    if let params {
      // Capacity 0 (or less than the source's) means the source's capacity.
      var given = params.pointee
      if given.capacity == 0 { given.capacity = disk.capacitySectors }
      let wanted = try createOptions(given)
      options = CreateOptions(type: wanted.type, inheriting: disk)
      options.adapterType = wanted.adapterType
      if params.pointee.hwVersion != 0 { options.hardwareVersion = wanted.hardwareVersion }
      if params.pointee.capacity > disk.capacitySectors { options.capacityBytes = wanted.capacityBytes }
    } else {
      options = CreateOptions(type: .monolithicSparse, inheriting: disk)
    }
    let writer = try ImageCreator.create(path: target, options: options, overwrite: overwrite != 0)
    let total = max(disk.capacityBytes, 1)
    do {
      _ = try disk.copy(to: writer) { done in
        reporter.report(Int32(min(99, done * 100 / total)))
      }
      try writer.commit()
    } catch {
      writer.abort()
      throw error
    }
    reporter.report(100)
  }
}

@_cdecl("VixDiskLib_Unlink")
public func VixDiskLib_Unlink(_ connection: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> UInt64 {
  vixCall {
    try requireConnection(connection)
    var options = OpenOptions()
    options.allowExternalPaths = true
    // VixDiskLib orphans the children of a deleted parent; so do we (force).
    _ = try Disk.delete(try string(path, "the path"), force: true, options: options)
  }
}

@_cdecl("VixDiskLib_Grow")
public func VixDiskLib_Grow(
  _ connection: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ capacity: UInt64, _ updateGeometry: CChar,
  _ progress: VixDiskLibProgressFunc?, _ data: UnsafeMutableRawPointer?
) -> UInt64 {
  vixCall {
    try requireConnection(connection)
    let target = try string(path, "the path")
    let (bytes, overflow) = capacity.multipliedReportingOverflow(by: 512)
    guard !overflow else { throw VixFailure(Vix.invalidArg, "capacity of \(capacity) sectors") }
    var reporter = Progress(progress, data)
    reporter.report(0)
    var options = OpenOptions()
    options.allowExternalPaths = true
    // Grow never shrinks (resize refuses a smaller size without allowShrink).
    _ = try Disk.resize(target, to: bytes, allowShrink: false, options: options)
    reporter.report(100)
  }
}

/// Shrink and Defragment: one rewrite of the handle's disk in place (closed around it, then
/// reopened), with progress at 0 and 100.
private func rewriteInPlace(
  _ handle: OpaquePointer?, _ progress: VixDiskLibProgressFunc?, _ data: UnsafeMutableRawPointer?,
  _ rewrite: @escaping (String, OpenOptions) throws -> Void
) -> UInt64 {
  vixCall {
    let h = try handles.get(handle, "disk handle")
    var reporter = Progress(progress, data)
    reporter.report(0)
    try reopen(h) {
      var options = OpenOptions()
      options.allowExternalPaths = true
      try rewrite(h.location, options)
    }
    reporter.report(100)
  }
}

@_cdecl("VixDiskLib_Shrink")
public func VixDiskLib_Shrink(
  _ handle: OpaquePointer?, _ progress: VixDiskLibProgressFunc?, _ data: UnsafeMutableRawPointer?
) -> UInt64 {
  rewriteInPlace(handle, progress, data) { _ = try Disk.compact($0, options: $1) }
}

@_cdecl("VixDiskLib_Defragment")
public func VixDiskLib_Defragment(
  _ handle: OpaquePointer?, _ progress: VixDiskLibProgressFunc?, _ data: UnsafeMutableRawPointer?
) -> UInt64 {
  rewriteInPlace(handle, progress, data) { _ = try Disk.defragment($0, options: $1) }
}

@_cdecl("VixDiskLib_Rename")
public func VixDiskLib_Rename(_ src: UnsafePointer<CChar>?, _ dst: UnsafePointer<CChar>?) -> UInt64 {
  vixCall {
    var options = OpenOptions()
    options.allowExternalPaths = true
    _ = try Disk.rename(try string(src, "the source path"), to: try string(dst, "the new path"), options: options)
  }
}

@_cdecl("VixDiskLib_SpaceNeededForClone")
public func VixDiskLib_SpaceNeededForClone(
  _ handle: OpaquePointer?, _ type: VixDiskLibDiskType, _ needed: UnsafeMutablePointer<UInt64>?
) -> UInt64 {
  vixCall {
    guard let needed else { throw VixFailure(Vix.invalidArg, "the output pointer is NULL") }
    let disk = try handles.get(handle, "disk handle").disk
    let target: DiskType
    if type == VIXDISKLIB_DISK_UNKNOWN {
      target = DiskType(rawValue: disk.top.createType) ?? .monolithicSparse
    } else {
      target = try diskType(type)
    }
    let capacity = disk.capacityBytes
    if !target.isSparse {
      needed.pointee = capacity
      return
    }
    // Sparse: the allocated 64 KiB chunks, plus two grain directories and tables for the
    // whole capacity, plus the header and descriptor. An upper bound (zero grains are dropped
    // by the copy, compressed grains are smaller).
    let data = try disk.allocatedBlocks(chunkSectors: 128).reduce(UInt64(0)) { $0 + $1.length }
    let grains = (capacity + 65535) / 65536
    let tables = (grains + 511) / 512
    let metadata = 2 * (tables * 2048 + ((tables * 4 + 511) / 512) * 512) + 128 * 1024
    needed.pointee = min(data, capacity) + metadata
  }
}

@_cdecl("VixDiskLib_CheckRepair")
public func VixDiskLib_CheckRepair(
  _ connection: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ repair: CChar
) -> UInt64 {
  vixCall {
    try requireConnection(connection)
    let target = try string(path, "the path")
    var options = OpenOptions()
    options.allowExternalPaths = true
    options.singleLink = true
    if repair != 0 {
      let report = try Disk.repair(target, options: options)
      for line in report.fixed { VixLog.shared.emit(.info, "\(target): repaired: \(line)") }
      guard report.isClean else {
        throw VixFailure(
          Vix.cantRepair, "\(target): cannot repair: \(report.unrepaired.joined(separator: "; "))")
      }
    } else {
      let disk = try Disk.open(target, options: options)
      defer { try? disk.close() }
      let report = try disk.check()
      for p in report.problems {
        VixLog.shared.emit(.warning, "\(p.file): \(p.offset.map { "offset \($0): " } ?? "")\(p.message)")
      }
      guard report.problems.isEmpty else {
        throw VMDKError(
          .needsRepair, "\(report.problems.count) problem(s) found; CheckRepair with repair fixes them",
          file: target)
      }
    }
  }
}

/// Whether the bottom link of `child`'s chain can take `parent` as its parent: a hosted
/// sparse link (only those have a parent) of the parent's capacity, and a parent with a CID.
func attachCheck(_ parent: Handle, _ child: Handle) throws -> String {
  let p = parent.disk
  let c = child.disk
  guard let base = c.links.last else { throw VixFailure(Vix.invalidArg, "the child has no link") }
  guard p.top.descriptor.cid != nil, p.top.hasDescriptor else {
    throw VMDKError(.invalidArgument, "the parent has no descriptor with a CID", file: p.top.path)
  }
  guard base.createType == "monolithicSparse" || base.createType == "twoGbMaxExtentSparse" else {
    throw VMDKError(.notSupported, "only a hosted sparse disk can take a parent (\(base.createType))", file: base.path)
  }
  guard base.capacitySectors == p.capacitySectors else {
    throw VixFailure(
      16067, "capacity mismatch: the child has \(base.capacitySectors) sectors, the parent \(p.capacitySectors)")
  }
  return base.path
}

@_cdecl("VixDiskLib_IsAttachPossible")
public func VixDiskLib_IsAttachPossible(_ parent: OpaquePointer?, _ child: OpaquePointer?) -> UInt64 {
  vixCall {
    _ = try attachCheck(try handles.get(parent, "parent handle"), try handles.get(child, "child handle"))
  }
}

@_cdecl("VixDiskLib_Attach")
public func VixDiskLib_Attach(_ parent: OpaquePointer?, _ child: OpaquePointer?) -> UInt64 {
  vixCall {
    let p = try handles.get(parent, "parent handle")
    let c = try handles.get(child, "child handle")
    let base = try attachCheck(p, c)
    // The parent handle ends here (VixDiskLib: "invalid after attaching").
    p.waitIdle()
    handles.remove(parent)
    try p.disk.close()
    try reopen(c) {
      var options = OpenOptions()
      options.allowExternalPaths = true
      try Disk.rebase(base, onto: p.location, unsafe: true, options: options)
    }
  }
}
