// Writing in place: `Disk.write` sends bytes to the top link only. Flat extents are written
// where their sectors are; hosted sparse extents allocate grains (SparseExtent+Write.swift).
// The first write after open gives the top link a new CID, as VMware and qemu do. A disk
// opened writable holds an exclusive lock on each file of its top link (FileLock.swift).

import Foundation
import Synchronization
import VMDKFormat
import VMDKTransport

/// The write side of a disk opened writable: the locks on the top link's files, and the
/// state that writers share (serialized by one mutex per link).
final class LinkWriter: Sendable {
  let link: DiskLink
  struct State {
    var locks: [FileLock]
    /// The CID written on the first write of this open, once written.
    var newCID: UInt32? = nil
    /// The descriptor as last written by this open (a CID or a rewrite), when it changed.
    var descriptor: Descriptor? = nil
    var closed = false
    /// For tests: stop a sparse write between the grain data and the tables.
    var stop: SparseWriteStop = .never
    /// Change tracking, when the top link has a tracking sidecar (ChangeTracking/).
    var tracking: TrackingSession? = nil
    /// Appends to a streamOptimized top link, made on its first write (StreamAppender).
    var appender: StreamAppender? = nil
  }
  let state: Locked<State>

  /// Locks the descriptor file and every read-write extent file of `link` (local files only:
  /// an NBD server keeps its own lock on what it exports).
  init(link: DiskLink) throws {
    self.link = link
    guard link.transport == .file else {
      state = Locked(State(locks: []))
      return
    }
    var paths: [String] = [link.path]
    for info in link.extents where info.line.access == .readWrite {
      if let p = info.path { paths.append(p) }
    }
    var seen = Set<String>()
    var locks: [FileLock] = []
    for p in paths {
      let real = PathResolver.realPath(p) ?? p
      guard seen.insert(real).inserted else { continue }
      locks.append(try FileLock(path: p))
    }
    state = Locked(State(locks: locks))
  }

  /// A disk dropped without `close`: appends to a streamOptimized link still get their tail
  /// (StreamAppender.finish), so the file ends with a footer again; an error then is lost.
  deinit {
    state.withLock { state in
      if !state.closed { try? state.appender?.finish() }
    }
  }

  /// A CID for the first write: random, not the one there, never ffffffff or fffffffe.
  static func freshCID(replacing old: UInt32?) -> UInt32 {
    while true {
      let c = UInt32.random(in: 0...UInt32.max)
      if c != 0xFFFF_FFFF && c != 0xFFFF_FFFE && c != old { return c }
    }
  }

  /// Writes `cid` into the link's descriptor (see `writeDescriptor`).
  func writeCID(_ cid: UInt32, state: inout State) throws {
    guard link.hasDescriptor else { return }
    var d = state.descriptor ?? link.descriptor
    d.setHeader("CID", Descriptor.formatCID(cid))
    try writeDescriptor(d, locks: &state.locks)
    state.descriptor = d
  }

  /// Writes `d` as the link's descriptor: in place when embedded (inside its sectors), else a
  /// temporary file in the same folder, synced, then renamed over the descriptor.
  func writeDescriptor(_ d: Descriptor, locks: inout [FileLock]) throws {
    let text = Array(d.serialized().utf8)
    if link.descriptorLocation == .embedded {
      let file =
        try link.extents.lazy.compactMap { $0.reader.store }.first { $0.name == link.path && $0.isWritable }
        ?? LocalFile(path: link.path, writable: true)
      let head = try file.readExactly(at: 0, count: SparseExtentHeader.size, what: "sparse header")
      let h = try wrap(link.path) { try SparseExtentHeader(parsing: head) }
      let room = h.descriptorSizeSectors * 512
      guard h.descriptorOffsetSectors != 0, UInt64(text.count) <= room else {
        throw VMDKError(
          .notSupported,
          "the new descriptor needs \(text.count) bytes; the embedded descriptor has room for \(room)",
          file: link.path, offset: h.descriptorOffsetSectors * 512)
      }
      var area = text
      area.append(contentsOf: repeatElement(0, count: Int(room) - text.count))
      try file.write(at: h.descriptorOffsetSectors * 512, from: area)
      return
    }
    // Through a symbolic link, the file it names is replaced, not the link.
    let target = PathResolver.realPath(link.path) ?? link.path
    // A temporary file next to it, removed on any failure (AtomicFile).
    try AtomicFile.replace(target, followLinks: false) { try $0.write(at: 0, from: text) }
    // The lock held belongs to the file that was replaced; lock the new one too.
    locks.append(try FileLock(path: target))
  }
}

extension Disk {
  /// Whether the disk was opened for writing and is not closed.
  public var isWritable: Bool { writer?.state.withLock { !$0.closed } ?? false }

  /// The top link's CID as it is now: the one written on the first write of this open, or
  /// the one read at open.
  public var currentCID: UInt32? { writer?.state.withLock { $0.newCID } ?? top.descriptor.cid }

  /// Writes `data` at byte `offset` of the virtual disk, into the top link.
  ///
  /// Any offset and length: partial sectors are read (through the chain), changed and written
  /// back. Flat extents are written in place; hosted sparse extents allocate grains as they
  /// need them (the data, then the grain table and its redundant copy, then the directories).
  /// A single-extent streamOptimized disk with no parent accepts only sequential appends at or
  /// after its end of data (StreamAppender; the appended data is written out on `flush` or
  /// `close`, and reads on this handle see it only after the disk is opened again); any other
  /// write to it refuses with `notSupported` before anything is written.
  /// Other streamOptimized, vmfsSparse, seSparse and ZERO extents refuse with `notSupported`,
  /// RDONLY and NOACCESS extents with `fileReadOnly`, before anything is written.
  public func write(at offset: UInt64, _ data: UnsafeRawBufferPointer) throws {
    guard let writer else {
      throw VMDKError(
        .fileReadOnly, "the disk was opened read-only; open it with OpenOptions.writable to write", file: top.path)
    }
    let count = UInt64(data.count)
    guard offset <= capacityBytes, count <= capacityBytes - offset else {
      throw VMDKError(
        .outOfRange, "write of \(count) bytes at \(offset) goes past the end of the disk (\(capacityBytes) bytes)",
        file: top.path, offset: offset)
    }
    guard count > 0 else { return }
    // Readers on this handle wait for the whole write (see `read(at:into:)`).
    try ioLock.writing { try writeLocked(writer, at: offset, data) }
  }

  private func writeLocked(_ writer: LinkWriter, at offset: UInt64, _ data: UnsafeRawBufferPointer) throws {
    let count = UInt64(data.count)
    try writer.state.withLock { state in
      guard !state.closed else {
        throw VMDKError(.invalidArgument, "the disk was closed", file: top.path)
      }
      let first = offset / 512
      let last = (offset + count + 511) / 512
      try checkWritable(start: first, count: last - first)
      if let stream = appendableStream {
        // streamOptimized: sequential appends only, checked before anything is written.
        let appender =
          try state.appender ?? StreamAppender(extent: stream, name: top.extents.first?.path ?? top.path)
        state.appender = appender
        try appender.check(offset: offset)
        try state.tracking?.willWrite(offset: offset, count: count)
        if state.newCID == nil {
          let cid = LinkWriter.freshCID(replacing: top.descriptor.cid)
          try writer.writeCID(cid, state: &state)
          state.newCID = cid
        }
        return try appender.append(at: offset, data)
      }
      // The sidecar is marked dirty and the blocks recorded before anything changes on disk.
      try state.tracking?.willWrite(offset: offset, count: count)
      if state.newCID == nil {
        let cid = LinkWriter.freshCID(replacing: top.descriptor.cid)
        try writer.writeCID(cid, state: &state)
        state.newCID = cid
      }
      if offset % 512 == 0 && count % 512 == 0 {
        return try writeSectors(start: first, data, stop: state.stop)
      }
      // Unaligned: the covering sectors, their first and last read as they are now.
      var buffer = [UInt8](repeating: 0, count: Int((last - first) * 512))
      try buffer.withUnsafeMutableBytes { buf in
        try readSectors(level: 0, start: first, count: 1, into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<512]))
        if last - first > 1 {
          try readSectors(
            level: 0, start: last - 1, count: 1,
            into: UnsafeMutableRawBufferPointer(rebasing: buf[(buf.count - 512)...]))
        }
        let skip = Int(offset - first * 512)
        UnsafeMutableRawBufferPointer(rebasing: buf[skip..<(skip + data.count)]).copyMemory(from: data)
        try writeSectors(start: first, UnsafeRawBufferPointer(buf), stop: state.stop)
      }
    }
  }

  /// Writes `bytes` at byte `offset` of the virtual disk.
  public func write(at offset: UInt64, _ bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { try write(at: offset, $0) }
  }

  /// Makes everything written so far durable (fsync of the top link's files), then writes
  /// the change-tracking map clean with the disk's CID, when the disk is tracked.
  public func flush() throws {
    guard let writer else { return }
    try checkOpen()
    try writer.state.withLock { state in
      // A streamOptimized top link gets its pending grain and a new tail first.
      try state.appender?.finish()
      var seen = Set<ObjectIdentifier>()
      for extent in top.extents {
        guard let store = extent.reader.store, store.isWritable, seen.insert(ObjectIdentifier(store)).inserted else {
          continue
        }
        try store.flush()
      }
      try state.tracking?.persist(cid: state.newCID ?? top.descriptor.cid ?? Descriptor.noParentCID)
    }
  }

  /// Releases everything the handle holds, at once: a writable disk is flushed first (its
  /// pending stream grain, the change-tracking map), then its write locks go; every file
  /// descriptor and network connection of every link is closed.
  /// Idempotent; later reads and writes throw `invalidArgument`. When the flush fails, the
  /// rest is still released and the flush's error is thrown. Waits for reads and writes in
  /// progress on other threads.
  public func close() throws {
    var flushError: (any Error)? = nil
    try ioLock.writing {
      guard !isClosed.load(ordering: .acquiring) else { return }
      if let writer, !writer.state.withLock({ $0.closed }) {
        do { try flush() } catch { flushError = error }
        writer.state.withLock {
          $0.closed = true
          $0.appender = nil
          $0.locks = []
          $0.tracking = nil
        }
      }
      isClosed.store(true, ordering: .releasing)
      for link in links {
        for extent in link.extents { extent.reader.store?.close() }
      }
    }
    if let flushError { throw flushError }
  }

  /// For tests: where sparse writes stop, to stand for a crash.
  func setWriteStop(_ stop: SparseWriteStop) {
    writer?.state.withLock { $0.stop = stop }
  }

  /// The top link's extent when it is a single streamOptimized extent with no parent below
  /// it: writes to it are sequential appends (StreamAppender).
  private var appendableStream: SparseExtent? {
    guard links.count == 1, top.extents.count == 1 else { return nil }
    return top.extents[0].reader.writable?.appendOnlyStream
  }

  /// Throws unless every extent that `[start, start+count)` touches can be written.
  private func checkWritable(start: UInt64, count: UInt64) throws {
    try forEachExtent(start: start, count: count) { i, _, _ in
      let info = top.extents[i]
      let name = info.path ?? top.path
      switch info.line.access {
      case .readOnly:
        throw VMDKError(.fileReadOnly, "extent \(i + 1) is RDONLY and cannot be written", file: name)
      case .noAccess:
        throw VMDKError(.fileReadOnly, "extent \(i + 1) is NOACCESS and cannot be written", file: name)
      case .readWrite: break
      }
      guard let writable = info.reader.writable else {
        throw VMDKError(
          .notSupported, "extent \(i + 1) is a \(info.format.displayName) extent, which this toolkit cannot write",
          file: name)
      }
      if let stream = writable.appendOnlyStream, appendableStream !== stream {
        throw VMDKError(
          .notSupported,
          "streamOptimized disks accept only sequential appends, and this toolkit appends only to a "
            + "single-extent streamOptimized disk with no parent (convert it to monolithicSparse to change it)",
          file: name)
      }
      guard info.reader.store?.isWritable ?? false else {
        throw VMDKError(.fileReadOnly, "extent \(i + 1) was opened read-only", file: name)
      }
    }
  }

  /// Calls `body(extent index, extent-relative start, count)` for the top link's extents
  /// that `[start, start+count)` covers.
  private func forEachExtent(start: UInt64, count: UInt64, _ body: (Int, UInt64, UInt64) throws -> Void) throws {
    let end = start + count
    for (i, e) in top.extents.enumerated() {
      let base = e.startSector
      let lo = max(start, base)
      let hi = min(end, base + e.reader.sectors)
      if lo < hi { try body(i, lo - base, hi - lo) }
    }
  }

  /// Writes whole sectors at sector `start` of the top link (checked writable).
  private func writeSectors(start: UInt64, _ data: UnsafeRawBufferPointer, stop: SparseWriteStop) throws {
    try forEachExtent(start: start, count: UInt64(data.count / 512)) { i, s, n in
      let extent = top.extents[i]
      let from = Int(extent.startSector + s - start) * 512
      let piece = UnsafeRawBufferPointer(rebasing: data[from..<(from + Int(n) * 512)])
      try extent.reader.writable?.writeSectors(start: s, piece, stop: stop) { gs, gn, into in
        try readSectors(level: 1, start: extent.startSector + gs, count: gn, into: into)
      }
    }
  }
}

extension Disk {
  /// Makes the whole grains inside `[offset, offset+count)` that the top link does not store
  /// read as zeros without allocating anything: in the top link's hosted sparse extents whose
  /// header has zeroed-grain entries, their table entries become zeroed grains (1), which
  /// also hide the parent's data. Grains the top link stores (zeros written over them in
  /// place leak nothing), grains partly covered, other extents, and regions with no grain
  /// table are left as they are. Returns the byte ranges of the virtual disk that read as
  /// zeroed grains now (in order); the caller zeroes the rest itself when it must
  /// (`writeZeroes`).
  public func zeroGrains(at offset: UInt64, count: UInt64) throws -> [Range<UInt64>] {
    guard let writer else {
      throw VMDKError(
        .fileReadOnly, "the disk was opened read-only; open it with OpenOptions.writable to write", file: top.path)
    }
    guard offset <= capacityBytes, count <= capacityBytes - offset else {
      throw VMDKError(
        .outOfRange, "zeroing \(count) bytes at \(offset) goes past the end of the disk (\(capacityBytes) bytes)",
        file: top.path, offset: offset)
    }
    let first = (offset + 511) / 512
    let last = (offset + count) / 512
    guard first < last else { return [] }
    return try ioLock.writing {
      try writer.state.withLock { state in
        guard !state.closed else { throw VMDKError(.invalidArgument, "the disk was closed", file: top.path) }
        var out: [Range<UInt64>] = []
        try forEachExtent(start: first, count: last - first) { i, s, n in
          let info = top.extents[i]
          guard info.line.access == .readWrite, info.reader.store?.isWritable ?? false,
            let sparse = info.reader.writable as? SparseExtent, sparse.scheme.header.hasZeroedGrainEntries,
            sparse.acceptsInPlaceWrites
          else { return }
          // The CID and the change-tracking map change before the tables do, as for a write.
          try state.tracking?.willWrite(offset: offset, count: count)
          if state.newCID == nil {
            let cid = LinkWriter.freshCID(replacing: top.descriptor.cid)
            try writer.writeCID(cid, state: &state)
            state.newCID = cid
          }
          for r in try sparse.zeroGrains(start: s, end: s + n) {
            let lo = (info.startSector + r.start) * 512
            let hi = lo + r.count * 512
            if let previous = out.last, previous.upperBound == lo {
              out[out.count - 1] = previous.lowerBound..<hi
            } else {
              out.append(lo..<hi)
            }
          }
        }
        return out
      }
    }
  }
}

extension Disk {
  /// Makes `count` bytes at `offset` read as zeros. An NBD export is asked to write zeros
  /// itself (NBD_CMD_WRITE_ZEROES, when it offers it); anything else gets zero buffers of at
  /// most 1 MiB at a time.
  public func writeZeroes(at offset: UInt64, count: UInt64) throws {
    guard count > 0 else { return }
    if links.count == 1, top.kind == .raw, let nbd = top.extents.first?.reader.store?.blockDevice {
      guard let writer else {
        throw VMDKError(
          .fileReadOnly, "the disk was opened read-only; open it with OpenOptions.writable to write", file: top.path)
      }
      guard offset <= capacityBytes, count <= capacityBytes - offset else {
        throw VMDKError(
          .outOfRange, "zeroing \(count) bytes at \(offset) goes past the end of the disk", file: top.path)
      }
      return try ioLock.writing {
        try writer.state.withLock { state in
          guard !state.closed else { throw VMDKError(.invalidArgument, "the disk was closed", file: top.path) }
          try nbd.writeZeroes(at: offset, length: count)
        }
      }
    }
    let zeros = [UInt8](repeating: 0, count: Int(min(count, 1 << 20)))
    var done: UInt64 = 0
    while done < count {
      let n = Int(min(UInt64(zeros.count), count - done))
      try zeros.withUnsafeBytes { try write(at: offset + done, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
      done += UInt64(n)
    }
  }
}
