// Builders for ESXi redo logs: COWD (vmfsSparse, notes §4.1) and seSparse (notes §4.2, with
// the constants qemu checks and the ESXi sample confirms). Both are read by qemu, which the
// valid-image tests use as a second opinion.

import VMDKFormat

/// A small COWD extent: 4-sector header, grain directory at sector 4, then each grain table
/// (4096 u32 entries) followed by its grains.
struct COWDImage {
  var capacitySectors: UInt32 = 10000
  /// Sectors per grain; 1 is the format's default.
  var grainSectors: UInt32 = 1
  var grains: [UInt64: [UInt8]] = [:]

  mutating func fill(_ indices: [UInt64]) {
    let g = UInt64(grainSectors)
    for i in indices { grains[i] = Pattern.bytes(startingAt: i * g * 512, count: Int(g * 512), seed: 3) }
  }

  struct Built: HeaderedImage {
    var bytes: [UInt8]
    let header: COWDHeader
    let gdOffset: Int
    let gtOffsets: [Int: Int]
    let expected: ExpectedDisk

    func gdeOffset(_ table: Int) -> Int { gdOffset + table * 4 }
    func gteOffset(_ index: UInt64) -> Int { gtOffsets[Int(index / 4096)]! + Int(index % 4096) * 4 }

    mutating func header(_ change: (inout COWDHeader) -> Void) {
      var h = header
      change(&h)
      bytes.replaceSubrange(0..<COWDHeader.size, with: h.serialized())
    }
  }

  func build() -> Built {
    let g = UInt64(grainSectors)
    let perTable = COWDHeader.entriesPerTable * g
    let tables = (UInt64(capacitySectors) + perTable - 1) / perTable
    var bytes = [UInt8](repeating: 0, count: COWDHeader.size)
    let gdOffset = bytes.count
    bytes += [UInt8](repeating: 0, count: Int(tables) * 4)
    bytes.pad(to: 512)
    var expected = ExpectedDisk(sectors: UInt64(capacitySectors))
    var gtOffsets: [Int: Int] = [:]
    let byTable = Dictionary(grouping: grains.keys, by: { Int($0 / COWDHeader.entriesPerTable) })
    for table in byTable.keys.sorted() {
      // "A new GT is allocated when a new GDE is added": the table, then its grains.
      let gt = bytes.count
      gtOffsets[table] = gt
      bytes.put32(UInt32(gt / 512), at: gdOffset + table * 4)
      bytes += [UInt8](repeating: 0, count: Int(COWDHeader.entriesPerTable) * 4)
      for index in byTable[table]!.sorted() {
        bytes.put32(UInt32(bytes.count / 512), at: gt + Int(index % COWDHeader.entriesPerTable) * 4)
        bytes += grains[index]!
        bytes.pad(to: 512)
        expected.place(grains[index]!, at: index * g * 512)
      }
    }
    let header = COWDHeader(
      numSectors: capacitySectors, grainSectors: grainSectors, gdOffsetSectors: UInt32(gdOffset / 512),
      numGDEntries: UInt32(tables), freeSector: UInt32(bytes.count / 512))
    bytes.replaceSubrange(0..<COWDHeader.size, with: header.serialized())
    return Built(bytes: bytes, header: header, gdOffset: gdOffset, gtOffsets: gtOffsets, expected: expected)
  }
}

/// A small seSparse extent. Layout in sectors: const header 0, volatile header 1, journal
/// header 2-3, journal 4-7, grain directory from 8, every grain table reserved after it (64
/// sectors each), free bitmap, backmap, then the grain area (4 KiB grains).
struct SESparseImage {
  /// Just over one table's 16 MiB, so there are two tables and the second is partial.
  var capacitySectors: UInt64 = 33000
  /// Grain index (4 KiB) -> content.
  var grains: [UInt64: [UInt8]] = [:]
  /// Grains marked zero (type 2) and unmapped (type 1); both read as zeros without a parent.
  var zeroGrains: Set<UInt64> = []
  var unmappedGrains: Set<UInt64> = []
  /// Where the first stored grain goes in the grain area. Above 4095 the grain index needs
  /// the high bits of the entry (bits 0-47 hold index >> 12, bits 48-59 index & 0xfff).
  var firstGrainSlot: UInt64 = 0

  static let grainSectors: UInt64 = 8
  static let tableSectors: UInt64 = 64
  static let sectorsPerTable: UInt64 = SESparseConstHeader.entriesPerTable * grainSectors

  mutating func fill(_ indices: [UInt64]) {
    for i in indices { grains[i] = Pattern.bytes(startingAt: i * 4096, count: 4096, seed: 5) }
  }

  struct Built: BuiltImage {
    var bytes: [UInt8]
    let gdOffset: Int
    /// Byte offset of the grain table serving each table-sized region of the disk.
    let gtOffsets: [Int: Int]
    let expected: ExpectedDisk

    func gdeOffset(_ table: Int) -> Int { gdOffset + table * 8 }
    func gteOffset(_ index: UInt64) -> Int {
      gtOffsets[Int(index / SESparseConstHeader.entriesPerTable)]! + Int(index % SESparseConstHeader.entriesPerTable)
        * 8
    }
    /// Sets the u64 at byte `offset` (a const header field, an entry).
    mutating func set(_ offset: Int, _ value: UInt64) { bytes.put64(value, at: offset) }
  }

  static func allocatedEntry(_ slot: UInt64) -> UInt64 {
    0x3000_0000_0000_0000 | (slot & 0xFFF) << 48 | slot >> 12
  }

  func build() -> Built {
    let tables = (capacitySectors + Self.sectorsPerTable - 1) / Self.sectorsPerTable
    let gdSectors = max(1, (tables * 8 + 511) / 512)
    let gd: UInt64 = 8
    let gtArea = gd + gdSectors
    let used = Set(grains.keys).union(zeroGrains).union(unmappedGrains)
    let usedTables = Set(used.map { $0 / SESparseConstHeader.entriesPerTable }).sorted()
    let slots = firstGrainSlot + UInt64(grains.count)
    let bitmap = gtArea + tables * Self.tableSectors
    let bitmapSectors = max(1, (slots + 4095) / 4096)
    let backmap = bitmap + bitmapSectors
    let backmapSectors = max(1, (slots * 8 + 511) / 512)
    let grainArea = (backmap + backmapSectors + 7) / 8 * 8

    var header = [UInt64](repeating: 0, count: 64)
    let fields: [(Int, UInt64)] = [
      (0, SESparseConstHeader.magic), (8, SESparseConstHeader.expectedVersion), (16, capacitySectors),
      (24, Self.grainSectors), (32, Self.tableSectors), (80, 1), (88, 1), (96, 2), (104, 2), (112, 4), (120, 4),
      (128, gd), (136, gdSectors), (144, gtArea), (152, tables * Self.tableSectors), (160, bitmap),
      (168, bitmapSectors), (176, backmap), (184, backmapSectors), (192, grainArea), (200, slots * Self.grainSectors),
    ]
    for (offset, value) in fields { header[offset / 8] = value }
    var bytes = header.flatMap(le64)
    // Volatile header: magic, free_gt_number (tables in use), next_txn_seq_number, replay 0.
    bytes += [SESparseVolatileHeader.magic, UInt64(usedTables.count), 0x24, 0].flatMap(le64)
    bytes.pad(to: 512)
    // Journal header as seen in the ESXi sample: 0xdeafc0de, 0, next_txn_seq_number.
    bytes += le32(0xDEAF_C0DE) + le32(0) + le64(0x24)
    bytes += [UInt8](repeating: 0, count: Int(grainArea + slots * Self.grainSectors) * 512 - bytes.count)

    // The backmap stays zero: no reader uses it (qemu and dissect ignore it).
    var gtOffsets: [Int: Int] = [:]
    // Tables are placed in reverse order of their regions, so the GDE's index matters.
    for (k, table) in usedTables.enumerated() {
      let gtIndex = UInt64(usedTables.count - 1 - k)
      bytes.put64(0x1000_0000_0000_0000 | gtIndex, at: Int(gd * 512 + table * 8))
      gtOffsets[Int(table)] = Int((gtArea + gtIndex * Self.tableSectors) * 512)
    }
    func setEntry(_ index: UInt64, _ value: UInt64) {
      let table = Int(index / SESparseConstHeader.entriesPerTable)
      bytes.put64(value, at: gtOffsets[table]! + Int(index % SESparseConstHeader.entriesPerTable) * 8)
    }
    for i in zeroGrains { setEntry(i, 0x2000_0000_0000_0000) }
    for i in unmappedGrains { setEntry(i, 0x1000_0000_0000_0000) }
    var expected = ExpectedDisk(sectors: capacitySectors)
    // Grains fill the area in reverse order of their disk position, from firstGrainSlot on.
    for (k, index) in grains.keys.sorted(by: >).enumerated() {
      let slot = firstGrainSlot + UInt64(k)
      setEntry(index, Self.allocatedEntry(slot))
      let at = Int((grainArea + slot * Self.grainSectors) * 512)
      bytes.replaceSubrange(at..<(at + 4096), with: grains[index]!)
      bytes[Int(bitmap * 512 + slot / 8)] |= UInt8(1) << (slot % 8)
      expected.place(grains[index]!, at: index * 4096)
    }
    return Built(
      bytes: bytes, gdOffset: Int(gd * 512), gtOffsets: gtOffsets, expected: expected)
  }
}
