// Appending to a streamOptimized extent (VMware's layout, notes §2): new grain markers after
// the old end of the file, then on flush new grain tables for the regions that got grains, a
// new grain directory, a footer and an end-of-stream marker. The old tail stays where it was
// (dead space).

import Foundation
import VMDKFormat
import VMDKTransport

/// Sequential appends to one streamOptimized extent, for `Disk.write` (serialized by the
/// link writer's mutex, hence `@unchecked Sendable`).
///
/// A write is accepted only at or after the disk's end of data (the end of the last grain
/// that holds data when the disk was opened), and each later write only at or after the end
/// of the one before. Data is buffered a grain at a time; a grain is compressed and written
/// as a grain marker after the end of the file when the writes leave it (or on `finish`,
/// zero-padded). `finish` (from `Disk.flush` and `Disk.close`) writes a new grain table for
/// every 512-grain region that got grains (the old entries and the new ones; the old table
/// becomes dead space), a new grain directory, a footer (the header with the new directory
/// offset) and the end-of-stream marker, so the file ends with a valid footer again.
///
/// Reads on the handle that appended do not see the appended data (its reader keeps the grain
/// directory it found at open): open the disk again to read it.
///
/// Crash behaviour: until `finish` completes, a crash leaves the appended grain markers after
/// the old end-of-stream marker, and the last 1536 bytes of the file are no longer a footer;
/// readers then refuse the file. Nothing is done to make that safer.
final class StreamAppender: @unchecked Sendable {
  let extent: SparseExtent
  let name: String
  let header: SparseExtentHeader
  let layout: SparseLayout
  let grainBytes: UInt64
  /// Where the next write may start (virtual byte).
  private(set) var nextAllowed: UInt64
  /// The end of the file: where the next marker goes.
  private var fileEnd: UInt64
  /// The grain directory as it is now (and as `finish` writes it).
  private var directory: [UInt32]
  /// Grain tables read or changed by this appender, by region.
  private var tables: [UInt64: [UInt32]] = [:]
  private var dirtyRegions = Set<UInt64>()
  /// The grain being filled; `written` when its bytes are on disk as they are.
  private var current: (index: UInt64, bytes: [UInt8], written: Bool)?
  /// Whether grains were written since the last tail.
  private var changed = false

  /// Reads the grain directory and tables to find the end of data. Refuses streams whose
  /// grain directory is not at the end (qemu's layout) and files that do not end on a sector.
  init(extent: SparseExtent, name: String) throws {
    self.extent = extent
    self.name = name
    header = extent.scheme.header
    layout = extent.scheme.layout
    grainBytes = header.grainSectors * 512
    let head = try extent.file.readExactly(at: 0, count: SparseExtentHeader.size, what: "sparse header")
    let atZero = try wrap(name) { try SparseExtentHeader(parsing: head) }
    guard atZero.grainDirectoryAtEnd, header.hasMarkers, header.isCompressed else {
      throw VMDKError(
        .notSupported,
        "streamOptimized disks accept only sequential appends, and this one cannot be appended to: "
          + "its grain directory is not at the end of the file (only VMware's layout, with a footer, is appended to)",
        file: name)
    }
    fileEnd = extent.fileSize
    guard fileEnd % 512 == 0 else {
      throw VMDKError(
        .notSupported, "the stream's size (\(fileEnd) bytes) is not a whole number of sectors; it is not appended to",
        file: name)
    }
    var directory: [UInt32] = []
    directory.reserveCapacity(Int(layout.grainTableCount))
    var last: UInt64? = nil
    for i in 0..<layout.grainTableCount {
      let gde = try extent.directoryEntry(i)
      directory.append(UInt32(truncatingIfNeeded: gde))
      guard gde != 0, let (table, _) = try extent.grainTable(i) else { continue }
      if let j = table.lastIndex(where: { $0 != 0 }) {
        last = i * SparseLayout.entriesPerTable + UInt64(j)
      }
    }
    self.directory = directory
    let grainBytes = self.grainBytes
    nextAllowed = last.map { ($0 + 1) * grainBytes } ?? 0
    appendStart = nextAllowed
  }

  /// The end of data when appending began: this handle cannot read from here on (its reader
  /// keeps the directory it found at open); a new open can.
  private(set) var appendStart: UInt64 = 0

  /// Throws `notSupported` unless a write at `offset` is a sequential append.
  func check(offset: UInt64) throws {
    guard offset >= nextAllowed else {
      throw VMDKError(
        .notSupported,
        "streamOptimized disks accept only sequential appends at or after byte \(nextAllowed); this write is at \(offset)",
        file: name, offset: offset)
    }
  }

  /// Appends `data` at virtual byte `offset` (checked with `check`).
  func append(at offset: UInt64, _ data: UnsafeRawBufferPointer) throws {
    try check(offset: offset)
    let end = offset + UInt64(data.count)
    var pos = offset
    var from = 0
    while pos < end {
      let g = pos / grainBytes
      let within = Int(pos % grainBytes)
      let n = Int(min(grainBytes - UInt64(within), end - pos))
      var grain: (index: UInt64, bytes: [UInt8], written: Bool)
      if let c = current, c.index == g {
        grain = c
      } else {
        try writeCurrent()
        // Bytes not written read as zeros (the link has no parent), as do the last grain's.
        grain = (g, [UInt8](repeating: 0, count: Int(grainBytes)), false)
      }
      // Moved out so that the copy below does not duplicate the grain's bytes.
      current = nil
      grain.bytes.withUnsafeMutableBytes { buf in
        UnsafeMutableRawBufferPointer(rebasing: buf[within..<(within + n)]).copyMemory(
          from: UnsafeRawBufferPointer(rebasing: data[from..<(from + n)]))
      }
      grain.written = false
      current = grain
      pos += UInt64(n)
      from += n
    }
    nextAllowed = end
  }

  /// Writes the pending grain (zero-padded), the new grain tables, the grain directory, the
  /// footer and the end-of-stream marker; nothing when no grain was written since the last.
  func finish() throws {
    try writeCurrent()
    guard changed else { return }
    let tableSectors = SparseLayout.tableBytes / 512
    var bytes: [UInt8] = []
    var at = fileEnd
    for region in dirtyRegions.sorted() {
      bytes += StreamMarker(value: tableSectors, size: 0, type: StreamMarker.MetadataType.grainTable.rawValue)
        .serialized()
      for e in try table(region) { withUnsafeBytes(of: e.littleEndian) { bytes.append(contentsOf: $0) } }
      directory[Int(region)] = try sector(at / 512 + 1)
      at += 512 + SparseLayout.tableBytes
    }
    let gdSectors = layout.grainDirectorySectors
    bytes += StreamMarker(value: gdSectors, size: 0, type: StreamMarker.MetadataType.grainDirectory.rawValue)
      .serialized()
    let gdStart = at / 512 + 1
    var gd = [UInt8](repeating: 0, count: Int(gdSectors * 512))
    for (i, e) in directory.enumerated() {
      withUnsafeBytes(of: e.littleEndian) { gd.replaceSubrange((i * 4)..<(i * 4 + 4), with: $0) }
    }
    bytes += gd
    var footer = header
    footer.gdOffsetSectors = gdStart
    bytes += StreamMarker(value: 1, size: 0, type: StreamMarker.MetadataType.footer.rawValue).serialized()
    bytes += footer.serialized()
    bytes += StreamMarker(value: 0, size: 0, type: StreamMarker.MetadataType.endOfStream.rawValue).serialized()
    try bytes.withUnsafeBytes { try extent.file.write(at: fileEnd, from: $0) }
    fileEnd += UInt64(bytes.count)
    dirtyRegions = []
    changed = false
  }

  /// The grain table of `region` as it is now.
  private func table(_ region: UInt64) throws -> [UInt32] {
    if let t = tables[region] { return t }
    let t: [UInt32]
    if directory[Int(region)] != 0, let (old, _) = try extent.grainTable(region) {
      t = old.map { UInt32(truncatingIfNeeded: $0) }
    } else {
      t = [UInt32](repeating: 0, count: Int(SparseLayout.entriesPerTable))
    }
    tables[region] = t
    return t
  }

  private func sector(_ s: UInt64) throws -> UInt32 {
    guard s <= UInt64(UInt32.max) else {
      throw VMDKError(.diskFull, "the stream reaches sector \(s): table entries cannot point past 2 TiB", file: name)
    }
    return UInt32(s)
  }

  /// Compresses the grain being filled and writes it as a grain marker at the end of the
  /// file, unless it is on disk already or all zeros (then its entry stays empty).
  private func writeCurrent() throws {
    guard var c = current, !c.written else { return }
    c.written = true
    current = c
    if c.bytes.allSatisfy({ $0 == 0 }) { return }
    let bound = GrainCompression.bound(c.bytes.count)
    var record = [UInt8](repeating: 0, count: StreamMarker.grainHeaderBytes + bound)
    let n = try c.bytes.withUnsafeBytes { src in
      try record.withUnsafeMutableBytes { out in
        guard
          let n = GrainCompression.deflate(
            src, into: UnsafeMutableRawBufferPointer(rebasing: out[StreamMarker.grainHeaderBytes...]), level: 6)
        else {
          throw VMDKError(.failure, "cannot compress grain \(c.index): the compressor failed", file: name)
        }
        out.storeBytes(of: (c.index * header.grainSectors).littleEndian, toByteOffset: 0, as: UInt64.self)
        out.storeBytes(of: UInt32(n).littleEndian, toByteOffset: 8, as: UInt32.self)
        return n
      }
    }
    let used = StreamMarker.grainHeaderBytes + n
    record.removeSubrange(used...)
    record += [UInt8](repeating: 0, count: (used + 511) / 512 * 512 - used)
    let region = c.index / SparseLayout.entriesPerTable
    var t = try table(region)
    t[Int(c.index % SparseLayout.entriesPerTable)] = try sector(fileEnd / 512)
    try record.withUnsafeBytes { try extent.file.write(at: fileEnd, from: $0) }
    tables[region] = t
    dirtyRegions.insert(region)
    fileEnd += UInt64(record.count)
    changed = true
  }
}
