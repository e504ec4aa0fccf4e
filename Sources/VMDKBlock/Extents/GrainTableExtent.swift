// The shared reader of every extent kind that maps grains through a grain directory and grain
// tables: hosted sparse and streamOptimized (KDMV), ESX vmfsSparse (COWD) and seSparse. A
// `GrainScheme` says how to decode one kind's entries; the walk, the bounded table cache,
// the merging of runs and the reads (with inflation of compressed grains) live here once.

import Synchronization
import VMDKFormat
import VMDKTransport

/// How one extent kind lays out and encodes its directory and tables.
protocol GrainScheme: Sendable {
  var grainSectors: UInt64 { get }
  /// Entries in one grain table.
  var entriesPerTable: UInt64 { get }
  /// Entries in the grain directory.
  var directoryEntries: UInt64 { get }
  /// Byte offset of the grain directory in the file.
  var directoryOffset: UInt64 { get }
  associatedtype Decoder: GrainEntryDecoder
  /// What the kind's entries mean (VMDKFormat): every rule about an entry lives there.
  var decoder: Decoder { get }
  /// Whether compressed grains start with a 12-byte grain marker.
  var hasMarkers: Bool { get }
  /// The format of the extents that read through this scheme.
  var format: ExtentFormat { get }
  /// Checks `extent`'s directory, tables and grains (Disk+Check.swift).
  func check(_ extent: GrainTableExtent<Self>, into report: inout CheckReport) throws
  /// In-place writes into `extent`, when this scheme has them (defaults in Abilities.swift).
  static func writable(_ extent: GrainTableExtent<Self>) -> (any WritableExtent)?
  /// What maintenance can do with `extent`.
  static func maintainable(_ extent: GrainTableExtent<Self>) -> MaintainableExtent?
}

extension GrainScheme {
  /// Bytes per directory and table entry (4 or 8).
  var entryBytes: Int { decoder.entryBytes }
  /// Byte offset of the table that directory entry `gde` (at byte `at`) names, or nil.
  func tableOffset(gde: UInt64, at: UInt64, fileSize: UInt64) throws -> UInt64? {
    try decoder.tableOffset(gde: gde, at: at, fileSize: fileSize)
  }
  /// Decodes table entry `gte` found at byte `at`.
  func grain(gte: UInt64, at: UInt64, fileSize: UInt64) throws -> GrainLocation {
    try decoder.grain(gte: gte, at: at, fileSize: fileSize)
  }
}

/// An extent read through a grain directory and grain tables.
final class GrainTableExtent<Scheme: GrainScheme>: Extent {
  let line: ExtentDescription
  let sectors: UInt64
  let file: any ByteStore
  /// The file's size as last known: grows when a writer appends grains and tables.
  var fileSize: UInt64 { knownFileSize.load(ordering: .acquiring) }
  let knownFileSize: Atomic<UInt64>
  let scheme: Scheme
  let cache: TableCache
  var store: (any ByteStore)? { file }
  var format: ExtentFormat { scheme.format }
  var writable: (any WritableExtent)? { Scheme.writable(self) }
  var checkable: (any CheckableExtent)? { self }
  var maintainable: MaintainableExtent? { Scheme.maintainable(self) }
  let grainBytes: Int
  private let sectorsPerTable: UInt64
  /// A byte range of the file known to be a hole (SEEK_HOLE): tables inside it are all zeros
  /// and are neither read nor cached. Hosted sparse files preallocate every table, so on a
  /// large, mostly empty disk this turns millions of table reads into one lseek.
  let knownHole = Locked<(start: UInt64, end: UInt64, generation: UInt64)>((0, 0, 0))
  /// The last inflated grain, so that small reads inside one grain inflate it once.
  private let lastGrain = Locked<(offset: UInt64, bytes: [UInt8])?>(nil)

  init(line: ExtentDescription, file: any ByteStore, fileSize: UInt64, scheme: Scheme, cache: TableCache) {
    self.line = line
    self.sectors = line.sectors
    self.file = file
    self.knownFileSize = Atomic(fileSize)
    self.scheme = scheme
    self.cache = cache
    self.grainBytes = Int(scheme.grainSectors * 512)
    self.sectorsPerTable = scheme.entriesPerTable * scheme.grainSectors
  }

  private var id: ObjectIdentifier { ObjectIdentifier(self) }

  /// Reads `count` little-endian entries at `offset`.
  private func loadEntries(at offset: UInt64, count: Int, what: String) throws -> [UInt64] {
    let width = scheme.entryBytes
    let bytes = try file.readExactly(at: offset, count: count * width, what: what)
    return GrainEntries.decode(bytes, width: width, count: count)
  }

  /// Directory entry `index`, read in pages of 512 entries through the cache.
  func directoryEntry(_ index: UInt64) throws -> UInt64 {
    try directoryEntry(index, directoryAt: scheme.directoryOffset, what: "grain directory")
  }

  /// Entry `index` of the directory at byte `directoryAt` (the grain directory or its
  /// redundant copy, which has as many entries), read in cached pages of 512 entries.
  func directoryEntry(_ index: UInt64, directoryAt: UInt64, what: String) throws -> UInt64 {
    let page = index / 512
    let pageOffset = directoryAt + page * 512 * UInt64(scheme.entryBytes)
    let entries = Int(min(512, scheme.directoryEntries - page * 512))
    let table = try cache.table(TableCache.Key(extent: id, offset: pageOffset)) {
      try loadEntries(at: pageOffset, count: entries, what: what)
    }
    return table[Int(index % 512)]
  }

  /// The grain table for directory entry `index`, or nil when the region is unallocated.
  func grainTable(_ index: UInt64) throws -> (table: [UInt64], offset: UInt64)? {
    let gde = try directoryEntry(index)
    let at = scheme.directoryOffset + index * UInt64(scheme.entryBytes)
    guard let offset = try decodeTable(gde: gde, at: at) else { return nil }
    let key = TableCache.Key(extent: id, offset: offset)
    // A cached table was read (or written) before: no need to ask whether it lies in a hole.
    if let cached = cache.cached(key) { return (cached, offset) }
    let tableEnd = offset + scheme.entriesPerTable * UInt64(scheme.entryBytes)
    if try isHole(offset, tableEnd) { return nil }
    let table = try cache.table(key) {
      try loadEntries(at: offset, count: Int(scheme.entriesPerTable), what: "grain table")
    }
    return (table, offset)
  }

  /// Whether `[start, end)` of the file is known to be a hole (all zeros, never written).
  private func isHole(_ start: UInt64, _ end: UInt64) throws -> Bool {
    let hole = knownHole.withLock { $0 }
    if start >= hole.start && end <= hole.end { return true }
    guard let data = try file.nextData(from: start) else { return false }
    guard data >= end else { return false }
    // A writer that filled the hole meanwhile bumped the generation: keep nothing then.
    knownHole.withLock { if $0.generation == hole.generation { $0 = (start, data, hole.generation) } }
    return true
  }

  func mapRuns(start: UInt64, count: UInt64, _ body: (ExtentRun) throws -> Void) throws {
    let end = start + count
    var pending: ExtentRun? = nil
    func push(_ run: ExtentRun) throws {
      if var p = pending {
        let merges: Bool
        switch (p.status, run.status) {
        case (.zero, .zero), (.unallocated, .unallocated): merges = true
        case (.data, .data):
          if let a = p.hostOffset, let b = run.hostOffset { merges = a + p.count * 512 == b } else { merges = false }
        default: merges = false
        }
        if merges {
          p.count += run.count
          pending = p
          return
        }
        try body(p)
      }
      pending = run
    }
    let grain = scheme.grainSectors
    var s = start
    while s < end {
      let index = s / sectorsPerTable
      let tableStart = index * sectorsPerTable
      let tableEnd = min(end, tableStart + sectorsPerTable)
      guard index < scheme.directoryEntries else {
        // Past what the header's capacity covers: nothing is allocated there.
        try push(ExtentRun(start: s, count: end - s, status: .unallocated))
        break
      }
      guard let (table, tableOffset) = try wrap(file.name, { try grainTable(index) }) else {
        try push(ExtentRun(start: s, count: tableEnd - s, status: .unallocated))
        s = tableEnd
        continue
      }
      let lastEntry = Int((tableEnd - 1 - tableStart) / grain)
      while s < tableEnd {
        let i = (s - tableStart) / grain
        let gte = table[Int(i)]
        if gte == 0 {
          // Entry 0 is "no grain" in every scheme. Most entries of a table in use on a sparse
          // disk are 0: take the whole run of them at once instead of decoding each.
          var j = Int(i) + 1
          while j <= lastEntry && table[j] == 0 { j += 1 }
          let runEnd = min(tableEnd, tableStart + UInt64(j) * grain)
          try push(ExtentRun(start: s, count: runEnd - s, status: .unallocated))
          s = runEnd
          continue
        }
        let grainStart = tableStart + i * grain
        let grainEnd = min(tableEnd, grainStart + grain)
        let n = grainEnd - s
        let location: GrainLocation
        do {
          location = try decodeGrain(gte: gte, at: tableOffset + i * UInt64(scheme.entryBytes))
        } catch let e as FormatError {
          // The file's name only on failure: getting it per grain costs a retain and release.
          throw VMDKError(e, file: file.name)
        }
        switch location {
        case .unallocated: try push(ExtentRun(start: s, count: n, status: .unallocated))
        case .zero: try push(ExtentRun(start: s, count: n, status: .zero))
        case .data(let at):
          try push(ExtentRun(start: s, count: n, status: .data, hostOffset: at + (s - grainStart) * 512))
        case .compressed(let at):
          try push(ExtentRun(start: s, count: n, status: .data, compressedAt: at))
        }
        s = grainEnd
      }
    }
    if let p = pending { try body(p) }
  }

  func read(_ run: ExtentRun, into buffer: UnsafeMutableRawBufferPointer) throws {
    if let at = run.hostOffset {
      let n = try file.read(at: at, into: buffer)
      if n < buffer.count {
        UnsafeMutableRawBufferPointer(rebasing: buffer[n...]).initializeMemory(as: UInt8.self, repeating: 0)
      }
      return
    }
    guard let at = run.compressedAt else {
      buffer.initializeMemory(as: UInt8.self, repeating: 0)
      return
    }
    let grainStart = run.start / scheme.grainSectors * scheme.grainSectors
    let within = Int(run.start - grainStart) * 512
    // Bytes of this grain that lie inside the extent: the last grain may be partial.
    let needed = Int(min(scheme.grainSectors, sectors - grainStart) * 512)
    if within == 0 && buffer.count == grainBytes {
      let n = try inflateGrain(at: at, into: buffer)
      try checkInflated(n, needed: needed, at: at)
      if n < buffer.count {
        UnsafeMutableRawBufferPointer(rebasing: buffer[n...]).initializeMemory(as: UInt8.self, repeating: 0)
      }
      return
    }
    let cached = lastGrain.withLock { c -> [UInt8]? in
      guard let c, c.offset == at else { return nil }
      return c.bytes
    }
    let grainData: [UInt8]
    if let cached {
      grainData = cached
    } else {
      var g = [UInt8](repeating: 0, count: grainBytes)
      let n = try g.withUnsafeMutableBytes { try inflateGrain(at: at, into: $0) }
      try checkInflated(n, needed: needed, at: at)
      grainData = g
      lastGrain.withLock { $0 = (at, g) }
    }
    grainData.withUnsafeBytes { src in
      buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[within..<(within + buffer.count)]))
    }
  }

  private func checkInflated(_ n: Int, needed: Int, at: UInt64) throws {
    guard n >= needed else {
      throw VMDKError(
        .corruptCompressedData, "compressed grain inflates to \(n) bytes; the grain needs \(needed)",
        file: file.name, offset: at)
    }
  }

  /// Inflates the compressed grain at byte `at` into `buffer` (one grain); returns its length.
  func inflateGrain(at: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    var dataAt = at
    var size: UInt64
    let maxCompressed = UInt64(2 * grainBytes)
    if scheme.hasMarkers {
      let bytes = try file.readExactly(at: at, count: StreamMarker.grainHeaderBytes, what: "grain marker")
      let header = try wrap(file.name) {
        try GrainMarkerHeader(parsing: bytes, at: at, grainBytes: grainBytes, fileSize: fileSize)
      }
      dataAt = header.dataOffset
      size = header.compressedBytes
    } else {
      size = min(maxCompressed, fileSize - min(at, fileSize))
    }
    let compressed = try file.readExactly(at: dataAt, count: Int(size), what: "compressed grain")
    return try compressed.withUnsafeBytes { src in
      try wrap(file.name) { try GrainInflater.inflate(src, into: buffer, offset: dataAt) }
    }
  }
}
