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

  /// Takes `[lo, hi)`, just written, out of the known hole: the larger part left stays known,
  /// so later lookups do not ask the file again.
  func shrinkHole(_ lo: UInt64, _ hi: UInt64) {
    knownHole.withLock { h in
      let g = h.generation &+ 1
      guard lo < h.end, hi > h.start else {
        h.generation = g
        return
      }
      let below = lo > h.start ? lo - h.start : 0
      let above = h.end > hi ? h.end - hi : 0
      if below == 0 && above == 0 {
        h = (0, 0, g)
      } else if below >= above {
        h = (h.start, lo, g)
      } else {
        h = (hi, h.end, g)
      }
    }
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
  ///
  /// Batched: every check and lookup comes first (nothing is written when one fails), then
  /// the data of the write's new grains, allocated contiguously at the end of the file and
  /// written in as few `pwrite`s as the runs of whole grains allow, and the overwrites of
  /// allocated grains; then each touched table once (the changed entries) and its redundant
  /// copy; then the new tables and the directory entries naming them.
  func writeSectors(
    start: UInt64, _ data: UnsafeRawBufferPointer, stop: SparseWriteStop = .never,
    underneath: (_ start: UInt64, _ count: UInt64, _ into: UnsafeMutableRawBufferPointer) throws -> Void
  ) throws {
    let grain = scheme.grainSectors
    let sectorsPerTable = SparseLayout.entriesPerTable * grain
    let end = start + UInt64(data.count / 512)
    let h = scheme.header
    let redundant = h.flags.contains(.useRedundantGrainDirectory) && h.rgdOffsetSectors != 0

    // 1. Plan: the tables touched, the grains to allocate and the grains to overwrite.
    var plans: [TablePlan] = []
    var fresh: [NewGrain] = []
    var overwrites: [(at: UInt64, from: Int, count: Int)] = []
    var s = start
    while s < end {
      let tableIndex = s / sectorsPerTable
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
      let planIndex = plans.count
      let tableEnd = min(end, (tableIndex + 1) * sectorsPerTable)
      while s < tableEnd {
        let grainStart = s / grain * grain
        let n = min(tableEnd, grainStart + grain) - s
        let from = Int(s - start) * 512
        let entry = Int((s / grain) % SparseLayout.entriesPerTable)
        let location = try wrap(file.name) {
          try decodeGrain(gte: table[entry], at: (tableAt ?? 0) + UInt64(entry) * 4)
        }
        switch location {
        case .data(let grainAt):
          let at = grainAt + (s - grainStart) * 512
          if let last = overwrites.last, last.at + UInt64(last.count) == at, last.from + last.count == from {
            overwrites[overwrites.count - 1].count += Int(n) * 512
          } else {
            overwrites.append((at, from, Int(n) * 512))
          }
        case .compressed:
          throw VMDKError(.notSupported, "compressed grains cannot be overwritten in place", file: file.name)
        case .unallocated, .zero:
          fresh.append(
            NewGrain(
              grainStart: grainStart, offsetInGrain: Int(s - grainStart) * 512, from: from, count: Int(n) * 512,
              readsAsZero: location == .zero, plan: planIndex, entry: entry))
        }
        s += n
      }
      plans.append(TablePlan(index: tableIndex, tableAt: tableAt, table: table))
    }

    // 2. Places: the new grains from the end of the file, then the new tables after them.
    // The file's end is asked once per write (another handle may have appended before our lock).
    let grainBytes64 = UInt64(grainBytes)
    let size = max(fileSize, try file.size())
    let firstGrainAt = (size + grainBytes64 - 1) / grainBytes64 * grainBytes64
    let grainsEnd = firstGrainAt + UInt64(fresh.count) * grainBytes64
    guard grainsEnd / 512 <= UInt64(UInt32.max) else {
      throw VMDKError(
        .diskFull, "a new grain at byte \(firstGrainAt) would pass the 2 TiB a sparse extent can address",
        file: file.name, offset: firstGrainAt)
    }
    var changed = Array(repeating: (first: Int.max, last: -1), count: plans.count)
    for (k, g) in fresh.enumerated() {
      plans[g.plan].table[g.entry] = (firstGrainAt + UInt64(k) * grainBytes64) / 512
      changed[g.plan].first = min(changed[g.plan].first, g.entry)
      changed[g.plan].last = max(changed[g.plan].last, g.entry)
    }
    let tableCopyBytes = redundant ? 2 * SparseLayout.tableBytes : SparseLayout.tableBytes
    var newTables: [Int] = []
    for (i, p) in plans.enumerated() where p.tableAt == nil && changed[i].last >= 0 { newTables.append(i) }
    let tablesEnd = grainsEnd + UInt64(newTables.count) * tableCopyBytes
    // The redundant directory is checked to lie inside the file before anything is written.
    if redundant, let i = newTables.first { _ = try redundantDirectoryEntry(plans[i].index) }
    guard tablesEnd / 512 <= UInt64(UInt32.max) else {
      throw VMDKError(
        .diskFull, "a new grain table at byte \(grainsEnd) would pass the 2 TiB a sparse extent can address",
        file: file.name, offset: grainsEnd)
    }

    // 3. The data: runs of whole new grains straight from `data`, partial grains completed
    // from what they read as now, then the overwrites of allocated grains.
    var k = 0
    while k < fresh.count {
      let g = fresh[k]
      let at = firstGrainAt + UInt64(k) * grainBytes64
      if g.count == grainBytes {
        var j = k + 1
        while j < fresh.count, fresh[j].count == grainBytes, fresh[j].from == fresh[j - 1].from + grainBytes {
          j += 1
        }
        let bytes = (j - k) * grainBytes
        try file.write(at: at, from: UnsafeRawBufferPointer(rebasing: data[g.from..<(g.from + bytes)]))
        k = j
        continue
      }
      var buffer = [UInt8](repeating: 0, count: grainBytes)
      try buffer.withUnsafeMutableBytes { buf in
        // The grain's sectors inside the extent (the last grain may reach past it).
        let inside = min(grain, sectors - g.grainStart)
        if !g.readsAsZero {
          try underneath(g.grainStart, inside, UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(inside * 512)]))
        }
        UnsafeMutableRawBufferPointer(rebasing: buf[g.offsetInGrain..<(g.offsetInGrain + g.count)])
          .copyMemory(from: UnsafeRawBufferPointer(rebasing: data[g.from..<(g.from + g.count)]))
        try file.write(at: at, from: UnsafeRawBufferPointer(buf))
      }
      k += 1
    }
    for o in overwrites {
      try file.write(at: o.at, from: UnsafeRawBufferPointer(rebasing: data[o.from..<(o.from + o.count)]))
    }
    if !fresh.isEmpty {
      grew(to: grainsEnd)
      shrinkHole(firstGrainAt, grainsEnd)
    }
    if stop == .afterGrainData || fresh.isEmpty { return }

    // 4. Tables that exist: the changed entries once, then the same in the redundant table.
    var touched: (lo: UInt64, hi: UInt64) = (.max, 0)
    for (i, p) in plans.enumerated() {
      guard let tableAt = p.tableAt, changed[i].last >= 0 else { continue }
      let bytes = Self.encode(p.table[changed[i].first...changed[i].last])
      let at = tableAt + UInt64(changed[i].first) * 4
      try file.write(at: at, from: bytes)
      touched = (min(touched.lo, at), max(touched.hi, at + UInt64(bytes.count)))
      if redundant {
        let rgde = try redundantDirectoryEntry(p.index)
        if rgde != 0, let rat = Self.checkedByte(sector: rgde, plus: UInt64(changed[i].first) * 4) {
          try file.write(at: rat, from: bytes)
          touched = (min(touched.lo, rat), max(touched.hi, rat + UInt64(bytes.count)))
        }
      }
      cache.replace(TableCache.Key(extent: ObjectIdentifier(self), offset: tableAt), with: p.table)
    }
    if touched.lo < touched.hi { shrinkHole(touched.lo, touched.hi) }
    guard !newTables.isEmpty else { return }

    // 5. New tables (each followed by its redundant copy) in one write, then the directories.
    var tableBytes: [UInt8] = []
    tableBytes.reserveCapacity(newTables.count * Int(tableCopyBytes))
    for i in newTables {
      let encoded = Self.encode(plans[i].table[...])
      tableBytes += encoded
      if redundant { tableBytes += encoded }
    }
    try file.write(at: grainsEnd, from: tableBytes)
    grew(to: tablesEnd)
    shrinkHole(grainsEnd, tablesEnd)
    var gd: [(index: UInt64, value: UInt32, redundantValue: UInt32)] = []
    for (n, i) in newTables.enumerated() {
      let at = grainsEnd + UInt64(n) * tableCopyBytes
      gd.append((plans[i].index, UInt32(at / 512), UInt32((at + SparseLayout.tableBytes) / 512)))
    }
    try writeDirectoryRuns(gd.map { ($0.index, $0.value) }, at: scheme.directoryOffset)
    if redundant {
      // Checked when its entries were read (redundantDirectoryEntry); kept in range there.
      try writeDirectoryRuns(gd.map { ($0.index, $0.redundantValue) }, at: h.rgdOffsetSectors &* 512)
    }
    // The directory pages changed: drop this extent's cached pages and tables.
    cache.invalidate(extent: ObjectIdentifier(self))
  }

  /// Marks the unallocated whole grains inside extent sectors `[start, end)` as zeroed grains
  /// (table entry 1), when the header has zeroed-grain entries: they read as zeros, hide the
  /// parent, and no grain is allocated. Grains that hold data are left to the caller (zeros
  /// written over them in place leak nothing, where a zeroed entry would leave the grain
  /// unused), and so are regions without a grain table (one would have to be allocated).
  /// Returns the extent-sector ranges that now read as zeroed grains. Callers serialize writers.
  func zeroGrains(start: UInt64, end: UInt64) throws -> [(start: UInt64, count: UInt64)] {
    let h = scheme.header
    guard h.hasZeroedGrainEntries, acceptsInPlaceWrites else { return [] }
    let grain = scheme.grainSectors
    let perTable = SparseLayout.entriesPerTable
    let first = (start + grain - 1) / grain
    let last = min(end, sectors) / grain
    let redundant = h.flags.contains(.useRedundantGrainDirectory) && h.rgdOffsetSectors != 0
    var marked: [(start: UInt64, count: UInt64)] = []
    var g = first
    while g < last {
      let tableIndex = g / perTable
      guard tableIndex < scheme.directoryEntries else { break }
      let tableEnd = min(last, (tableIndex + 1) * perTable)
      defer { g = tableEnd }
      let gdeAt = scheme.directoryOffset + tableIndex * 4
      let gde = try directoryEntry(tableIndex)
      guard let tableAt = try wrap(file.name, { try decodeTable(gde: gde, at: gdeAt) }) else { continue }
      var table =
        try wrap(file.name) { try grainTable(tableIndex) }?.table
        ?? [UInt64](repeating: 0, count: Int(perTable))
      let base = tableIndex * perTable
      let lo = Int(g - base)
      let hi = Int(tableEnd - base)
      var changed = (first: Int.max, last: -1)
      for e in lo..<hi {
        if table[e] == 0 {
          table[e] = 1
          changed = (min(changed.first, e), e)
        }
        guard table[e] == 1 else { continue }
        let run = ((base + UInt64(e)) * grain, grain)
        if let previous = marked.last, previous.start + previous.count == run.0 {
          marked[marked.count - 1].count += grain
        } else {
          marked.append(run)
        }
      }
      guard changed.last >= 0 else { continue }
      let bytes = Self.encode(table[changed.first...changed.last])
      let at = tableAt + UInt64(changed.first) * 4
      try file.write(at: at, from: bytes)
      shrinkHole(at, at + UInt64(bytes.count))
      if redundant {
        let rgde = try redundantDirectoryEntry(tableIndex)
        if rgde != 0, let rat = Self.checkedByte(sector: rgde, plus: UInt64(changed.first) * 4) {
          try file.write(at: rat, from: bytes)
          shrinkHole(rat, rat + UInt64(bytes.count))
        }
      }
      cache.replace(TableCache.Key(extent: ObjectIdentifier(self), offset: tableAt), with: table)
    }
    return marked
  }

  /// Writes directory entries, one `pwrite` per run of consecutive indexes.
  private func writeDirectoryRuns(_ entries: [(index: UInt64, value: UInt32)], at directory: UInt64) throws {
    var k = 0
    while k < entries.count {
      var j = k + 1
      while j < entries.count, entries[j].index == entries[j - 1].index + 1 { j += 1 }
      var bytes: [UInt8] = []
      for e in entries[k..<j] { withUnsafeBytes(of: e.value.littleEndian) { bytes += $0 } }
      let at = directory + entries[k].index * 4
      try file.write(at: at, from: bytes)
      shrinkHole(at, at + UInt64(bytes.count))
      k = j
    }
  }

  /// Entry `index` of the redundant grain directory, from cached pages (read once).
  func redundantDirectoryEntry(_ index: UInt64) throws -> UInt64 {
    let size = scheme.directoryEntries * 4
    guard let at = Self.checkedByte(sector: scheme.header.rgdOffsetSectors, plus: 0), at <= fileSize,
      size <= fileSize - at
    else {
      throw VMDKError(
        .offsetPastEnd,
        "the redundant grain directory (sector \(scheme.header.rgdOffsetSectors)) lies past the end of the file",
        file: file.name)
    }
    return try directoryEntry(index, directoryAt: at, what: "redundant grain directory")
  }

  /// `sector * 512 + plus`, or nil when it overflows.
  static func checkedByte(sector: UInt64, plus: UInt64) -> UInt64? {
    let (b, o1) = sector.multipliedReportingOverflow(by: 512)
    let (r, o2) = b.addingReportingOverflow(plus)
    return o1 || o2 ? nil : r
  }

  /// Little-endian u32 bytes of table entries (each fits: they are sector numbers checked
  /// against the 2 TiB limit or read as u32).
  private static func encode(_ entries: ArraySlice<UInt64>) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: entries.count * 4)
    bytes.withUnsafeMutableBytes { raw in
      for (n, e) in entries.enumerated() {
        raw.storeBytes(of: UInt32(truncatingIfNeeded: e).littleEndian, toByteOffset: n * 4, as: UInt32.self)
      }
    }
    return bytes
  }
}

/// One grain table a write touches: its place (nil when it does not exist yet) and entries.
private struct TablePlan {
  let index: UInt64
  let tableAt: UInt64?
  var table: [UInt64]
}

/// A grain a write allocates: which bytes of the write go where in it.
private struct NewGrain {
  let grainStart: UInt64
  let offsetInGrain: Int
  let from: Int
  let count: Int
  let readsAsZero: Bool
  let plan: Int
  let entry: Int
}

extension ByteStore {
  /// Writes all of `bytes` at `offset`.
  func write(at offset: UInt64, from bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { try write(at: offset, from: $0) }
  }
}
