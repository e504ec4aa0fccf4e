// Writing in place into a hosted sparse extent (KDMV, uncompressed): allocated grains are
// overwritten where they are; a write into an unallocated or zeroed grain appends a new grain
// at ROUND_UP(file size, grain) as qemu does. The order is the crash-safe one: the grain's
// data, then its entry in the grain table and in the redundant grain table, and when the
// region had no table at all, the new tables before the directory entries that name them.
// A crash between two steps leaves at worst space that nothing points at (a leaked grain).

import Synchronization
import VMDKFormat
import VMDKTransport

/// Where a test stops a sparse write, to stand for a crash between two steps.
enum SparseWriteStop: Sendable {
  /// Nothing is skipped.
  case never
  /// After the grain's data, before any table is written.
  case afterGrainData
}

extension GrainTableExtent {
  /// Decodes a table entry against the known file size; when the entry points past it, the
  /// file may have grown since (another handle writing), so the size is read again once.
  func decodeGrain(gte: UInt64, at: UInt64) throws -> GrainLocation {
    do {
      return try scheme.grain(gte: gte, at: at, fileSize: fileSize)
    } catch let e as FormatError where e.kind == .offsetPastEnd {
      guard try refreshFileSize() else { throw e }
      return try scheme.grain(gte: gte, at: at, fileSize: fileSize)
    }
  }

  /// Decodes a directory entry the same way.
  func decodeTable(gde: UInt64, at: UInt64) throws -> UInt64? {
    do {
      return try scheme.tableOffset(gde: gde, at: at, fileSize: fileSize)
    } catch let e as FormatError where e.kind == .offsetPastEnd {
      guard try refreshFileSize() else { throw e }
      return try scheme.tableOffset(gde: gde, at: at, fileSize: fileSize)
    }
  }

  /// Reads the file's size again; returns whether it grew.
  private func refreshFileSize() throws -> Bool {
    let now = try file.size()
    let before = knownFileSize.load(ordering: .acquiring)
    guard now > before else { return false }
    knownFileSize.store(now, ordering: .releasing)
    return true
  }

  /// Records that the file now reaches at least `end` bytes.
  func grew(to end: UInt64) {
    while true {
      let before = knownFileSize.load(ordering: .acquiring)
      if end <= before { return }
      if knownFileSize.compareExchange(expected: before, desired: end, ordering: .acquiringAndReleasing).exchanged {
        return
      }
    }
  }

  /// Forgets the hole found by SEEK_HOLE: a table inside it was just written.
  func forgetHole() {
    knownHole.withLock { $0 = (0, 0, $0.generation &+ 1) }
  }
}

extension GrainTableExtent where Scheme == SparseScheme {
  /// Whether this extent can be written in place (uncompressed, tables in their place).
  var acceptsInPlaceWrites: Bool {
    let h = scheme.header
    return !h.isCompressed && !h.flags.contains(.compressed) && !h.hasMarkers && !h.grainDirectoryAtEnd
  }

  /// Writes `data` (whole sectors) at extent sector `start`. `underneath` fills a buffer
  /// with what the sectors read as when this extent does not hold them (the parent's data,
  /// or zeros), for the rest of a partly written new grain. Callers serialize writers.
  func writeSectors(
    start: UInt64, _ data: UnsafeRawBufferPointer, stop: SparseWriteStop = .never,
    underneath: (_ start: UInt64, _ count: UInt64, _ into: UnsafeMutableRawBufferPointer) throws -> Void
  ) throws {
    let grain = scheme.grainSectors
    let sectorsPerTable = SparseLayout.entriesPerTable * grain
    let end = start + UInt64(data.count / 512)
    var s = start
    while s < end {
      let grainIndex = s / grain
      let grainStart = grainIndex * grain
      let n = min(end, grainStart + grain) - s
      let from = Int(s - start) * 512
      let chunk = UnsafeRawBufferPointer(rebasing: data[from..<(from + Int(n) * 512)])
      let tableIndex = s / sectorsPerTable
      let entry = Int(grainIndex % SparseLayout.entriesPerTable)
      guard tableIndex < scheme.directoryEntries else {
        throw VMDKError(
          .outOfRange, "sector \(s) is past what the grain directory covers", file: file.name)
      }
      let gdeAt = scheme.directoryOffset + tableIndex * 4
      let gde = try directoryEntry(tableIndex)
      let tableAt = try wrap(file.name) { try decodeTable(gde: gde, at: gdeAt) }
      var table: [UInt64]
      if tableAt != nil, let t = try wrap(file.name, { try grainTable(tableIndex) }) {
        table = t.table
      } else {
        // No table, or one that lies in a hole of the file (all zeros).
        table = [UInt64](repeating: 0, count: Int(SparseLayout.entriesPerTable))
      }
      let gte = table[entry]
      let location = try wrap(file.name) {
        try decodeGrain(gte: gte, at: (tableAt ?? 0) + UInt64(entry) * 4)
      }
      switch location {
      case .data(let at):
        try file.write(at: at + (s - grainStart) * 512, from: chunk)
      case .compressed:
        throw VMDKError(.notSupported, "compressed grains cannot be overwritten in place", file: file.name)
      case .unallocated, .zero:
        let grainAt = try appendGrain(
          grainStart: grainStart, offsetInGrain: Int(s - grainStart) * 512, chunk: chunk,
          readsAsZero: location == .zero, underneath: underneath)
        if stop == .afterGrainData { return }
        table[entry] = grainAt / 512
        try setEntry(
          tableIndex: tableIndex, entry: entry, value: UInt32(grainAt / 512), tableAt: tableAt, table: table)
      }
      s += n
    }
  }

  /// Writes a new grain at the end of the file: `chunk` at `offsetInGrain`, the rest from
  /// what the grain reads as now. Returns its byte offset.
  private func appendGrain(
    grainStart: UInt64, offsetInGrain: Int, chunk: UnsafeRawBufferPointer, readsAsZero: Bool,
    underneath: (UInt64, UInt64, UnsafeMutableRawBufferPointer) throws -> Void
  ) throws -> UInt64 {
    let grainBytes64 = UInt64(grainBytes)
    let size = max(fileSize, try file.size())
    let at = (size + grainBytes64 - 1) / grainBytes64 * grainBytes64
    guard (at + grainBytes64) / 512 <= UInt64(UInt32.max) else {
      throw VMDKError(
        .diskFull, "a new grain at byte \(at) would pass the 2 TiB a sparse extent can address",
        file: file.name, offset: at)
    }
    if chunk.count == grainBytes {
      try file.write(at: at, from: chunk)
    } else {
      var bytes = [UInt8](repeating: 0, count: grainBytes)
      try bytes.withUnsafeMutableBytes { buf in
        // The grain's sectors inside the extent (the last grain may reach past it).
        let inside = min(scheme.grainSectors, sectors - grainStart)
        if !readsAsZero {
          try underneath(grainStart, inside, UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(inside * 512)]))
        }
        UnsafeMutableRawBufferPointer(rebasing: buf[offsetInGrain..<(offsetInGrain + chunk.count)])
          .copyMemory(from: chunk)
        try file.write(at: at, from: UnsafeRawBufferPointer(buf))
      }
    }
    grew(to: at + grainBytes64)
    return at
  }

  /// Points entry `entry` of table `tableIndex` at a grain: the grain table, then the
  /// redundant one; a missing table is made (both copies) before the directory entries.
  private func setEntry(tableIndex: UInt64, entry: Int, value: UInt32, tableAt: UInt64?, table: [UInt64]) throws {
    let h = scheme.header
    let redundant = h.flags.contains(.useRedundantGrainDirectory) && h.rgdOffsetSectors != 0
    let rgdeAt = h.rgdOffsetSectors * 512 + tableIndex * 4
    let le = withUnsafeBytes(of: value.littleEndian) { Array($0) }
    if let tableAt {
      try file.write(at: tableAt + UInt64(entry) * 4, from: le)
      if redundant {
        let r = try file.readExactly(at: rgdeAt, count: 4, what: "redundant grain directory entry")
        let rgde = UInt64(r[0]) | UInt64(r[1]) << 8 | UInt64(r[2]) << 16 | UInt64(r[3]) << 24
        if rgde != 0 {
          try file.write(at: rgde * 512 + UInt64(entry) * 4, from: le)
        }
      }
      cache.replace(TableCache.Key(extent: ObjectIdentifier(self), offset: tableAt), with: table)
      forgetHole()
      return
    }
    // A region without a table: new tables at the end, then the directories.
    var bytes = [UInt8](repeating: 0, count: Int(SparseLayout.tableBytes))
    bytes.replaceSubrange((entry * 4)..<(entry * 4 + 4), with: le)
    let size = max(fileSize, try file.size())
    let newTable = (size + 511) / 512 * 512
    let newRedundant = newTable + SparseLayout.tableBytes
    let end = redundant ? newRedundant + SparseLayout.tableBytes : newRedundant
    guard end / 512 <= UInt64(UInt32.max) else {
      throw VMDKError(
        .diskFull, "a new grain table at byte \(newTable) would pass the 2 TiB a sparse extent can address",
        file: file.name, offset: newTable)
    }
    try file.write(at: newTable, from: bytes)
    if redundant { try file.write(at: newRedundant, from: bytes) }
    grew(to: end)
    let gdeAt = scheme.directoryOffset + tableIndex * 4
    try file.write(at: gdeAt, from: withUnsafeBytes(of: UInt32(newTable / 512).littleEndian) { Array($0) })
    if redundant {
      try file.write(at: rgdeAt, from: withUnsafeBytes(of: UInt32(newRedundant / 512).littleEndian) { Array($0) })
    }
    // The directory page changed: drop this extent's cached pages and tables.
    cache.invalidate(extent: ObjectIdentifier(self))
    forgetHole()
  }
}

extension ByteStore {
  /// Writes all of `bytes` at `offset`.
  func write(at offset: UInt64, from bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { try write(at: offset, from: $0) }
  }
}
