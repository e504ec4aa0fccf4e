// Disk: the handle everybody uses. A snapshot chain of links; reads fall through unallocated
// ranges to the parent, block status says for every range which link holds it.

import Logging
import Synchronization
import VMDKFormat
import VMDKTransport

/// One range of the virtual disk and where its content comes from, in qemu-img map's terms.
public struct BlockStatus: Sendable, Equatable {
  /// Byte offset in the virtual disk.
  public var start: UInt64
  /// Bytes.
  public var length: UInt64
  /// Which link answers: 0 is the top; for unallocated ranges, the bottom link.
  public var depth: Int
  /// Whether some link has the range (false: it reads as zeros because nobody has it).
  public var present: Bool
  /// Whether the range reads as zeros.
  public var zero: Bool
  /// Whether the range is stored as data in link `depth`.
  public var data: Bool
  /// Byte offset of the data in its file, when stored uncompressed.
  public var offset: UInt64?
  /// The file that holds the data, when there is one.
  public var file: String?
  /// Whether the data is stored compressed.
  public var compressed: Bool

  /// Allocated, zero or unallocated, as VixDiskLib and `vmdk-inspect map` say it.
  public var kind: BlockStatusKind {
    !present ? .unallocated : (data && !zero ? .allocated : (data ? .allocatedZero : .zero))
  }
}

/// What a range of the disk is, in one word.
public enum BlockStatusKind: String, Sendable, CaseIterable {
  /// Data stored in some link.
  case allocated
  /// Stored in some link, and known to read as zeros.
  case allocatedZero = "allocated-zero"
  /// Reads as zeros without being stored (a zeroed grain, a ZERO extent).
  case zero
  /// Nobody has it: reads as zeros.
  case unallocated
}

/// An opened virtual disk: a chain of one or more links.
public final class Disk: Sendable {
  /// The links, top (the file opened) first.
  public let links: [DiskLink]
  public let options: OpenOptions
  /// The write side of a disk opened writable (locks, CID state); nil when read-only.
  let writer: LinkWriter?
  /// Orders reads against writes on a writable handle, and every read against `close()`.
  let ioLock = ReadWriteLock()
  /// Set by `close()`: the files are closed and reads and writes throw.
  let isClosed = Atomic<Bool>(false)

  init(links: [DiskLink], options: OpenOptions, writer: LinkWriter? = nil) {
    self.links = links
    self.options = options
    self.writer = writer
  }

  /// Capacity in sectors (the top link's).
  public var capacitySectors: UInt64 { links[0].capacitySectors }
  /// Capacity in bytes.
  public var capacityBytes: UInt64 { capacitySectors * 512 }
  /// The top link.
  public var top: DiskLink { links[0] }

  /// How the disk was reached.
  public var transport: Transport { links[0].transport }

  /// Opens the disk at `location` and its parents. `location` is a path, a `file:` URI, an
  /// NBD URI (`nbd://host[:port]/export`, `nbds://…`, `nbd+unix:///export?socket=PATH`: the
  /// export is the whole virtual disk) or the `http(s)://` URL of a VMDK file.
  public static func open(_ location: String, options: OpenOptions = OpenOptions()) throws -> Disk {
    let parsed = try DiskLocation(parsing: location)
    // nbd:// may be upgraded to TLS when only nbds is enabled (openNBD).
    let acceptable: [Transport] = parsed.transport == .nbd ? [.nbd, .nbds] : [parsed.transport]
    guard options.transports.contains(where: acceptable.contains) else {
      throw VMDKError(
        .notSupported,
        "the \(parsed.transport) transport is not enabled (transports: \(options.transports.map(\.rawValue).joined(separator: ":")))",
        file: location)
    }
    switch parsed {
    case .file(let path):
      return try openChain(path, options: options, locator: LocalLocator())
    case .nbd(let address, let export, let tls):
      return try openNBD(address, export: export, tls: tls, options: options)
    case .http(_, let tls):
      return try openChain(location, options: options, locator: HTTPLocator(options: options.transport, isTLS: tls))
    }
  }

  /// Opens the disk at `location` and its parents through `locator`, which opens the files and
  /// resolves the names the descriptors give: files in memory (a `MemoryStore` per name), or
  /// any other store an application provides.
  public static func open(_ location: String, locator: any StoreLocator, options: OpenOptions = OpenOptions())
    throws -> Disk
  {
    try openChain(location, options: options, locator: locator)
  }

  /// An NBD export as a one-link raw disk. nbds:// always uses TLS. For nbd://, the enabled
  /// transports decide: with only "nbds" enabled the session is upgraded to TLS; with "nbds"
  /// before "nbd", TLS is tried first and plain NBD used only when the server does not offer
  /// TLS at all (as VDDK's "nbdssl:nbd"); a TLS session that fails (a certificate, say) is an
  /// error, never a quiet downgrade.
  private static func openNBD(_ address: SocketAddress, export: String, tls: Bool, options: OpenOptions) throws -> Disk
  {
    let order = options.transports.filter { $0 == .nbd || $0 == .nbds }
    let attempts = tls ? [true] : order.map { $0 == .nbds }
    var client: NBDClient? = nil
    for (i, useTLS) in attempts.enumerated() {
      do {
        client = try NBDClient(
          address, export: export, writable: options.writable, tls: useTLS, options: options.transport)
        break
      } catch let e as VMDKError where useTLS && i + 1 < attempts.count && NBDClient.isTLSUnavailable(e) {
        Logger(label: LogLabel.nbd).info("\(e.file ?? ""): the server does not offer TLS; using plain NBD")
      }
    }
    guard let client else {
      throw VMDKError(
        .notSupported,
        "no NBD transport is enabled (transports: \(options.transports.map(\.rawValue).joined(separator: ":")))")
    }
    let link = try DiskLink.raw(
      client.name, file: client, size: client.exportSize, transport: client.usesTLS ? .nbds : .nbd)
    let writer = options.writable ? try LinkWriter(link: link) : nil
    return Disk(links: [link], options: options, writer: writer)
  }

  /// Ends the network connections of a disk reached over NBD (for servers that serve one
  /// client at a time); later reads and writes fail with connectionLost. Local files close
  /// when the disk goes away.
  public func disconnect() {
    for link in links {
      for extent in link.extents { extent.reader.store?.blockDevice?.close() }
    }
  }

  /// Opens `path` and its parents through `locator`.
  private static func openChain(_ path: String, options: OpenOptions, locator: any StoreLocator) throws -> Disk {
    let cache = TableCache(budgetBytes: options.tableCacheBytes)
    var links: [DiskLink] = []
    var seen: [String: String] = [:]
    var current = path
    while true {
      let real = locator.canonical(current)
      if let first = seen[real] {
        throw VMDKError(
          .chainLoop, "snapshot chain loops: \(current) was already opened as \(first)", file: links.last?.path ?? path)
      }
      guard links.count < options.maxChainDepth else {
        throw VMDKError(
          .chainTooDeep, "snapshot chain is deeper than \(options.maxChainDepth) links", file: path)
      }
      seen[real] = current
      let link = try DiskLink.open(
        current, options: options, cache: cache, writable: options.writable && links.isEmpty, locator: locator)
      if let child = links.last {
        try checkCID(child: child, parent: link, options: options)
      }
      links.append(link)
      guard !options.singleLink, let hint = link.descriptor.parentFileNameHint, !hint.isEmpty else {
        if !options.singleLink, let pcid = link.descriptor.parentCID, pcid != Descriptor.noParentCID,
          link.descriptor.createTypeKind?.isRedoLog == true
        {
          throw VMDKError(
            .partialChain, "\(current) is a snapshot (parentCID \(Descriptor.formatCID(pcid))) but names no parent",
            file: current)
        }
        break
      }
      do {
        current = try locator.resolve(
          hint, from: current, allowExternal: options.allowExternalPaths, what: "parent", missingCode: .partialChain)
      } catch var e as VMDKError where e.code == .partialChain {
        e.message = "partial chain: " + e.message
        throw e
      }
    }
    let writer = options.writable ? try LinkWriter(link: links[0]) : nil
    // Checked with the locks held: a snapshot is made under the parent's lock, so none can
    // appear between this check and the first write.
    if writer != nil && !options.allowWritingUnderSnapshots {
      try RestoreGuard.refuseIfSnapshots(of: links[0])
    }
    let disk = Disk(links: links, options: options, writer: writer)
    // A tracked disk opened for writing checks (or restarts) its tracking before any write.
    try disk.startChangeTracking()
    return disk
  }

  static func checkCID(child: DiskLink, parent: DiskLink, options: OpenOptions) throws {
    guard let expected = child.descriptor.parentCID, parent.kind == .vmdk else { return }
    let actual = parent.descriptor.cid
    guard actual != expected else { return }
    if options.ignoreCIDMismatch { return }
    let found = actual.map(Descriptor.formatCID) ?? "none"
    throw VMDKError(
      .cidMismatch,
      "CID mismatch: \(child.path) has parentCID \(Descriptor.formatCID(expected)), but its parent \(parent.path) has CID \(found); the parent changed after the snapshot was taken (ignore the CID check to read anyway)",
      file: child.path)
  }

  // MARK: Reading

  /// Reads `buffer.count` bytes at byte `offset` of the virtual disk. On a disk open for
  /// writing, a read sees each write through this handle whole or not at all.
  public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
    try ioLock.reading {
      try checkOpen()
      if writer != nil {
        // A stream this handle appended to: its reader still has the old directory, so the
        // appended range would read as zeros. Say so instead.
        if let start = writer?.state.withLock({ $0.appender?.appendStart }),
          offset + UInt64(buffer.count) > start
        {
          throw VMDKError(
            .notSupported,
            "this handle appended to a streamOptimized disk: bytes from \(start) on can be read after opening it again",
            file: top.path, offset: max(offset, start))
        }
      }
      return try readUnlocked(at: offset, into: buffer)
    }
  }

  /// Throws once the disk was closed.
  func checkOpen() throws {
    guard !isClosed.load(ordering: .acquiring) else {
      throw VMDKError(.invalidArgument, "the disk was closed", file: top.path)
    }
  }

  private func readUnlocked(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
    let count = UInt64(buffer.count)
    guard offset <= capacityBytes, count <= capacityBytes - offset else {
      throw VMDKError(
        .outOfRange, "read of \(count) bytes at \(offset) goes past the end of the disk (\(capacityBytes) bytes)",
        file: top.path, offset: offset)
    }
    guard count > 0 else { return }
    if offset % 512 == 0 && count % 512 == 0 {
      return try readSectors(level: 0, start: offset / 512, count: count / 512, into: buffer)
    }
    // Unaligned: read the covering sectors, then copy the part asked for.
    let first = offset / 512
    let last = (offset + count + 511) / 512
    var tmp = [UInt8](repeating: 0, count: Int((last - first) * 512))
    try tmp.withUnsafeMutableBytes { try readSectors(level: 0, start: first, count: last - first, into: $0) }
    let skip = Int(offset - first * 512)
    tmp.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[skip..<(skip + buffer.count)])) }
  }

  /// Reads `count` bytes at byte `offset`.
  public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    try bytes.withUnsafeMutableBytes { try read(at: offset, into: $0) }
    return bytes
  }

  func readSectors(level: Int, start: UInt64, count: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
    guard level < links.count else {
      buffer.initializeMemory(as: UInt8.self, repeating: 0)
      return
    }
    let link = links[level]
    let inLink = start < link.capacitySectors ? min(count, link.capacitySectors - start) : 0
    if inLink < count {
      UnsafeMutableRawBufferPointer(rebasing: buffer[Int(inLink * 512)...]).initializeMemory(
        as: UInt8.self, repeating: 0)
    }
    guard inLink > 0 else { return }
    try link.mapRuns(start: start, count: inLink) { run in
      let from = Int((run.start - start) * 512)
      let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[from..<(from + Int(run.count * 512))])
      switch run.status {
      case .data, .dataZero: try link.read(run, into: slice)
      case .zero: slice.initializeMemory(as: UInt8.self, repeating: 0)
      case .unallocated: try readSectors(level: level + 1, start: run.start, count: run.count, into: slice)
      }
    }
  }

  // MARK: Block status

  /// Calls `body` with the block status of `[offset, offset+length)` (whole sectors), merged
  /// as qemu-img map merges: same depth and flags, and contiguous offsets in one file.
  /// Computed from the grain tables and the file system's holes; no data is read.
  public func blockStatus(offset: UInt64 = 0, length: UInt64? = nil, _ body: (BlockStatus) throws -> Void) throws {
    let startSector = offset / 512
    let endByte = min(capacityBytes, length.map { offset + $0 } ?? capacityBytes)
    let endSector = (endByte + 511) / 512
    guard endSector > startSector else { return }
    var pending: BlockStatus? = nil
    func push(_ s: BlockStatus) throws {
      if var p = pending, p.depth == s.depth, p.present == s.present, p.zero == s.zero, p.data == s.data,
        p.compressed == s.compressed, p.file == s.file,
        (p.offset == nil && s.offset == nil) || (p.offset.map { $0 + p.length } == s.offset && s.offset != nil)
      {
        p.length += s.length
        pending = p
        return
      }
      if let p = pending { try body(p) }
      pending = s
    }
    try status(level: 0, start: startSector, count: endSector - startSector, push)
    if let p = pending { try body(p) }
  }

  /// Every block status run of the whole disk.
  public func blockStatus() throws -> [BlockStatus] {
    var out: [BlockStatus] = []
    try blockStatus { out.append($0) }
    return out
  }

  private func status(level: Int, start: UInt64, count: UInt64, _ emit: (BlockStatus) throws -> Void) throws {
    let link = links[level]
    let inLink = start < link.capacitySectors ? min(count, link.capacitySectors - start) : 0
    func absent(_ s: UInt64, _ n: UInt64) throws {
      if level + 1 < links.count {
        try status(level: level + 1, start: s, count: n, emit)
      } else {
        try emit(
          BlockStatus(
            start: s * 512, length: n * 512, depth: level, present: false, zero: true, data: false, offset: nil,
            file: nil, compressed: false))
      }
    }
    if inLink > 0 {
      try link.mapRuns(start: start, count: inLink) { run in
        let bytes = run.count * 512
        let path = link.extents[run.extent].path
        switch run.status {
        case .data:
          try emit(
            BlockStatus(
              start: run.start * 512, length: bytes, depth: level, present: true, zero: false, data: true,
              offset: run.extentRun.hostOffset, file: path, compressed: run.extentRun.compressedAt != nil))
        case .dataZero:
          try emit(
            BlockStatus(
              start: run.start * 512, length: bytes, depth: level, present: true, zero: true, data: true,
              offset: run.extentRun.hostOffset, file: path, compressed: false))
        case .zero:
          // A zeroed grain has no place in a file; a hole in an NBD export has one (as in qemu).
          let offset = run.extentRun.hostOffset
          try emit(
            BlockStatus(
              start: run.start * 512, length: bytes, depth: level, present: true, zero: true, data: false,
              offset: offset, file: offset == nil ? nil : path, compressed: false))
        case .unallocated:
          try absent(run.start, run.count)
        }
      }
    }
    guard inLink < count else { return }
    if level == 0 {
      try absent(start + inLink, count - inLink)
    } else {
      // Past the end of a shorter parent: reads as zeros, and qemu reports the range at the
      // depth of the link above (the last one that covers it), not present.
      try emit(
        BlockStatus(
          start: (start + inLink) * 512, length: (count - inLink) * 512, depth: level - 1, present: false,
          zero: true, data: false, offset: nil, file: nil, compressed: false))
    }
  }
}
