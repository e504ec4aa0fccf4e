// The ESXi redo-log headers: COWD (vmfsSparse) and seSparse. Each constant and each rule of
// their checks is violated once, on top of a header that passes.

import Testing
import VMDKFormat

@Suite struct COWDHeaderTests {
  /// 8192 sectors at the default 1-sector grain: two 4096-entry tables, the directory at
  /// sector 4 (right after the 4-sector header), data from sector 5.
  static let valid = COWDHeader(numSectors: 8192, grainSectors: 1, numGDEntries: 2, freeSector: 5)
  static let fileSize: UInt64 = 5 * 512

  @Test func roundTrips() throws {
    var h = Self.valid
    h.generation = 0x0102_0304
    h.uncleanShutdown = 1
    let bytes = h.serialized()
    #expect(bytes.count == COWDHeader.size)
    #expect(Array(bytes.prefix(4)) == Array("COWD".utf8))
    #expect(COWDHeader.hasMagic(bytes))
    #expect(try COWDHeader(parsing: bytes) == h)
  }

  @Test func validHeaderPasses() throws {
    try Self.valid.validate(fileSize: Self.fileSize)
  }

  @Test func rejectsBadMagic() {
    var bytes = Self.valid.serialized()
    bytes[0] = UInt8(ascii: "K")
    expectFormatError(.badMagic, offset: 0) { _ = try COWDHeader(parsing: bytes) }
  }

  /// Fields sit as far out as offset 1648, so a short read must name what is missing.
  @Test(arguments: [(0, "magicNumber"), (20, "gdOffset"), (1000, "generation"), (1651, "uncleanShutdown")])
  func truncated(length: Int, field: String) {
    expectFormatError(.truncated, mentioning: field) {
      _ = try COWDHeader(parsing: Array(Self.valid.serialized().prefix(length)))
    }
  }

  static let broken: [(name: String, kind: FormatError.Kind, field: UInt64, header: COWDHeader)] = {
    func with(_ change: (inout COWDHeader) -> Void) -> COWDHeader {
      var h = valid
      change(&h)
      return h
    }
    return [
      // Workstation 3's "VMDK3" shares the magic with version 3 and 512-entry tables.
      ("version 3 (VMDK3)", .unsupportedVersion, 4, with { $0.version = 3 }),
      ("version 0", .unsupportedVersion, 4, with { $0.version = 0 }),
      ("grain 0", .invalidGrainSize, 16, with { $0.grainSectors = 0 }),
      ("grain over the cap", .invalidGrainSize, 16, with { $0.grainSectors = UInt32(Limits.maxGrainSectors) + 1 }),
      ("grain 2^32-1", .invalidGrainSize, 16, with { $0.grainSectors = .max }),
      ("directory too small for the capacity", .invalidHeader, 24, with { $0.numGDEntries = 1 }),
      ("no directory entries", .invalidHeader, 24, with { $0.numGDEntries = 0 }),
      ("directory entries over the cap", .capacityOverflow, 24, with { $0.numGDEntries = .max }),
      ("directory offset 0", .invalidHeader, 20, with { $0.gdOffsetSectors = 0 }),
      ("directory past the end", .offsetPastEnd, 20, with { $0.gdOffsetSectors = 5 }),
      ("directory at the last u32 sector", .offsetPastEnd, 20, with { $0.gdOffsetSectors = .max }),
      ("directory running past the end", .offsetPastEnd, 20, with { $0.numGDEntries = 200 }),
    ]
  }()

  @Test(arguments: broken)
  func rejects(name: String, kind: FormatError.Kind, field: UInt64, header: COWDHeader) {
    expectFormatError(kind, offset: 2048 + field) { try header.validate(fileSize: Self.fileSize, baseOffset: 2048) }
  }
}

/// The seSparse constant header as 64 little-endian u64 fields.
struct SESparseHeaderFields {
  var fields = [UInt64](repeating: 0, count: 64)

  subscript(offset: Int) -> UInt64 {
    get { fields[offset / 8] }
    set { fields[offset / 8] = newValue }
  }

  var bytes: [UInt8] {
    var w = ByteWriter(count: 512)
    for (i, v) in fields.enumerated() { w.u64(i * 8, v) }
    return w.bytes
  }

  /// The ESXi sample of the notes §4.2 (a 512 MiB disk), field for field.
  static let sample: SESparseHeaderFields = {
    var h = SESparseHeaderFields()
    let values: [(Int, UInt64)] = [
      (0, 0xCAFE_BABE), (8, 0x2_0000_0001), (16, 0x10_0000), (24, 8), (32, 64), (80, 1), (88, 1), (96, 2), (104, 2),
      (112, 0x800), (120, 0x800), (128, 0x1000), (136, 0x800), (144, 0x1800), (152, 0x800), (160, 0x2000),
      (168, 0x800), (176, 0x2800), (184, 0x800), (192, 0x3000), (200, 0x10_0000),
    ]
    for (offset, value) in values { h[offset] = value }
    return h
  }()

  /// The sample's file: grains end at sector 0x3000 + 0x100000.
  static let sampleFileSize: UInt64 = (0x3000 + 0x10_0000) * 512
}

/// One seSparse header field set to a value that breaks a rule.
struct SESparseRuleCase: Sendable, CustomTestStringConvertible {
  let name: String
  let kind: FormatError.Kind
  let field: Int
  let value: UInt64
  /// The offset the error names (the field itself, unless a group check reports it).
  let reportedAt: Int
  var testDescription: String { name }

  init(_ name: String, _ kind: FormatError.Kind, field: Int, _ value: UInt64, reportedAt: Int? = nil) {
    self.name = name
    self.kind = kind
    self.field = field
    self.value = value
    self.reportedAt = reportedAt ?? field
  }
}

@Suite struct SESparseHeaderTests {
  @Test func sampleParses() throws {
    let h = try SESparseConstHeader(
      parsing: SESparseHeaderFields.sample.bytes, fileSize: SESparseHeaderFields.sampleFileSize)
    #expect(h.capacitySectors == 0x10_0000)
    #expect(h.grainSectors == 8)
    #expect(h.grainDirectoryEntries == 0x800 * 64)
    #expect(h.sectorsPerTable == 32768)
    #expect(h.grainsOffset == 0x3000)
    #expect(SESparseConstHeader.hasMagic(SESparseHeaderFields.sample.bytes))
  }

  /// Each constant qemu checks, and each of our own range checks, broken once.
  static let broken: [SESparseRuleCase] = [
    .init("magic", .badMagic, field: 0, 0xCAFE_CAFE),
    .init("magic with high bits", .badMagic, field: 0, 0x1_CAFE_BABE),
    .init("version 1", .unsupportedVersion, field: 8, 1),
    .init("version 0x200000002", .unsupportedVersion, field: 8, 0x2_0000_0002),
    .init("grain 16", .invalidGrainSize, field: 24, 16),
    .init("grain 0", .invalidGrainSize, field: 24, 0),
    .init("grain table size 32", .invalidTableSize, field: 32, 32),
    .init("grain table size 0", .invalidTableSize, field: 32, 0),
    .init("flags 1", .invalidHeader, field: 40, 1),
    .init("reserved1", .invalidHeader, field: 48, 1),
    .init("reserved2", .invalidHeader, field: 56, 1 << 63),
    .init("reserved3", .invalidHeader, field: 64, 1),
    .init("reserved4", .invalidHeader, field: 72, 1),
    .init("pad start", .invalidHeader, field: 208, 1),
    .init("pad middle", .invalidHeader, field: 360, 0xFF),
    .init("pad end", .invalidHeader, field: 504, 1 << 56),
    .init("capacity 2^63", .capacityOverflow, field: 16, 1 << 63),
    .init("grain directory of 2^60 sectors", .capacityOverflow, field: 136, 1 << 60),
    .init(
      "grain directory over the entry cap", .capacityOverflow, field: 136, Limits.maxGrainDirectoryEntries / 64 + 1),
    .init("grain directory too small for the capacity", .invalidHeader, field: 136, 0),
    .init("volatile header past the end", .offsetPastEnd, field: 80, 0x103000),
    .init("volatile header sector overflowing", .offsetPastEnd, field: 80, .max),
    .init("grain directory past the end", .offsetPastEnd, field: 128, 0x103000),
    .init("grain directory sector overflowing", .offsetPastEnd, field: 128, 1 << 56),
    .init("grain tables offset overflowing", .offsetPastEnd, field: 144, .max),
    // The area checks run last and report the first field of the group.
    .init("grains offset overflowing", .offsetPastEnd, field: 192, .max, reportedAt: 144),
  ]

  @Test(arguments: broken)
  func rejects(_ c: SESparseRuleCase) {
    var h = SESparseHeaderFields.sample
    h[c.field] = c.value
    expectFormatError(c.kind, offset: UInt64(c.reportedAt)) {
      _ = try SESparseConstHeader(parsing: h.bytes, fileSize: SESparseHeaderFields.sampleFileSize)
    }
  }

  @Test(arguments: [(0, "magic"), (100, "journal_header_offset"), (300, "pad")])
  func truncated(length: Int, field: String) {
    expectFormatError(.truncated, mentioning: field) {
      _ = try SESparseConstHeader(parsing: Array(SESparseHeaderFields.sample.bytes.prefix(length)), fileSize: 1 << 40)
    }
  }

  static func volatileHeader(magic: UInt64 = SESparseVolatileHeader.magic, replay: UInt64 = 0) -> [UInt8] {
    var w = ByteWriter(count: 512)
    w.u64(0, magic)
    w.u64(8, 1)  // free_gt_number
    w.u64(16, 0x24)  // next_txn_seq_number
    w.u64(24, replay)
    return w.bytes
  }

  @Test func volatileHeaderOfTheSamplePasses() throws {
    try SESparseVolatileHeader.validate(Self.volatileHeader(), baseOffset: 512)
  }

  /// dissect's constant says 0xcafebabe for the volatile magic; it is wrong (notes §4.2).
  @Test(arguments: [
    ("dissect's magic", UInt64(0xCAFE_BABE), UInt64(0), FormatError.Kind.badMagic, UInt64(512)),
    ("journal to replay", SESparseVolatileHeader.magic, 1, .invalidHeader, 512 + 24),
  ])
  func volatileHeaderRejects(name: String, magic: UInt64, replay: UInt64, kind: FormatError.Kind, offset: UInt64) {
    expectFormatError(kind, offset: offset) {
      try SESparseVolatileHeader.validate(Self.volatileHeader(magic: magic, replay: replay), baseOffset: 512)
    }
  }
}
