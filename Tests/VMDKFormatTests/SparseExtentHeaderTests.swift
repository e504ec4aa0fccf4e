// The hosted sparse header (KDMV): byte layout, parsing of short input, and every rule of
// `validate(fileSize:)`. A backup image is untrusted, so each rule gets a case that breaks it.

import Testing
import VMDKFormat

/// The header qemu-img 7.2 writes for `qemu-img create -f vmdk s1g.vmdk 1G` (notes §1.1), and
/// the size of that file.
let qemuHeader = SparseExtentHeader(
  version: 1, flags: [.validNewlineDetector, .useRedundantGrainDirectory], capacitySectors: 2_097_152,
  grainSectors: 128, descriptorOffsetSectors: 1, descriptorSizeSectors: 20, numGTEsPerGT: 512,
  rgdOffsetSectors: 21, gdOffsetSectors: 150, overheadSectors: 384)
let qemuFileSize: UInt64 = 196_608

/// The first 80 bytes of that file, as `xxd` shows them in the notes.
let qemuHeaderHex = """
  4b444d56 01000000 03000000 00002000 00000000 80000000 00000000 01000000 \
  00000000 14000000 00000000 00020000 15000000 00000000 96000000 00000000 \
  80010000 00000000 000a200d 0a000000
  """

func hexBytes(_ s: String) -> [UInt8] {
  let digits = s.filter(\.isHexDigit)
  return stride(from: 0, to: digits.count, by: 2).map { i in
    let start = digits.index(digits.startIndex, offsetBy: i)
    return UInt8(digits[start...digits.index(after: start)], radix: 16)!
  }
}

@Suite struct SparseExtentHeaderLayoutTests {
  @Test func serializesExactlyAsQemuWritesIt() {
    let bytes = qemuHeader.serialized()
    #expect(bytes.count == 512)
    #expect(Array(bytes.prefix(80)) == hexBytes(qemuHeaderHex))
    #expect(bytes[80...].allSatisfy { $0 == 0 }, "bytes 79..511 are padding")
  }

  @Test func parsesQemuBytes() throws {
    var bytes = hexBytes(qemuHeaderHex)
    bytes += [UInt8](repeating: 0, count: 512 - bytes.count)
    #expect(try SparseExtentHeader(parsing: bytes) == qemuHeader)
  }

  /// Every field at a value that is not its default, so a swapped or mis-sized field shows.
  @Test func roundTripsEveryField() throws {
    var h = SparseExtentHeader(
      version: 3, flags: [.validNewlineDetector, .compressed, .markers], capacitySectors: 0x0102_0304_0506_0708,
      grainSectors: 0x1112_1314_1516_1718, descriptorOffsetSectors: 0x2122_2324_2526_2728,
      descriptorSizeSectors: 0x3132_3334_3536_3738, numGTEsPerGT: 0x4142_4344, rgdOffsetSectors: 0x5152_5354_5556_5758,
      gdOffsetSectors: SparseExtentHeader.gdAtEnd, overheadSectors: 0x7172_7374_7576_7778, uncleanShutdown: true,
      compressAlgorithm: 0x8182)
    h.newlineDetector = [0x0A, 0x20, 0x0A, 0x0A]
    let parsed = try SparseExtentHeader(parsing: h.serialized())
    #expect(parsed == h)
    #expect(parsed.serialized() == h.serialized())
    #expect(parsed.grainDirectoryAtEnd)
    #expect(parsed.hasMarkers)
  }

  /// open-vmdk's temporary lowercase magic marks a file still being written; it is not a disk.
  @Test(arguments: [
    ("kdmv", [0x6B, 0x64, 0x6D, 0x76] as [UInt8]), ("COWD", [0x43, 0x4F, 0x57, 0x44]), ("zeros", [0, 0, 0, 0]),
  ])
  func rejectsBadMagic(name: String, magic: [UInt8]) {
    var bytes = qemuHeader.serialized()
    bytes.replaceSubrange(0..<4, with: magic)
    #expect(!SparseExtentHeader.hasMagic(bytes))
    expectFormatError(.badMagic, offset: 4096) { _ = try SparseExtentHeader(parsing: bytes, baseOffset: 4096) }
  }

  @Test(arguments: [
    ([0x0A, 0x20, 0x0D, 0x0A] as [UInt8], true, false),
    ([0x0A, 0x20, 0x0A, 0x0A], true, true),  // FTP text mode turned CRLF into LF
    ([0x0A, 0x20, 0x0A, 0x0A], false, false),  // bit 0 clear: the bytes are not to be checked
  ])
  func newlineDetector(found: [UInt8], flagSet: Bool, damaged: Bool) throws {
    var h = qemuHeader
    h.newlineDetector = found
    if !flagSet { h.flags.remove(.validNewlineDetector) }
    #expect(try SparseExtentHeader(parsing: h.serialized()).newlinesDamaged == damaged)
  }
}

@Suite struct SparseExtentHeaderTruncationTests {
  /// Where each field starts, in the order the parser reads them.
  static let fields: [(offset: Int, name: String)] = [
    (0, "magicNumber"), (4, "version"), (8, "flags"), (12, "capacity"), (20, "grainSize"), (28, "descriptorOffset"),
    (36, "descriptorSize"), (44, "numGTEsPerGT"), (48, "rgdOffset"), (56, "gdOffset"), (64, "overHead"),
    (72, "uncleanShutdown"), (73, "newline detection bytes"), (77, "compressAlgorithm"),
  ]

  /// The field that a header cut after `length` bytes runs out in: the last one starting at
  /// or before the cut.
  static func field(cutAt length: Int) -> (offset: Int, name: String) {
    fields.last { $0.offset <= length }!
  }

  /// A header cut anywhere before its last field's end names the field that is missing and
  /// where it starts; it never reads past the bytes given.
  @Test(arguments: 0..<79)
  func truncatedHeaderNamesTheField(length: Int) {
    let bytes = Array(qemuHeader.serialized().prefix(length))
    let expected = Self.field(cutAt: length)
    let base: UInt64 = 1 << 20
    expectFormatError(.truncated, offset: base + UInt64(expected.offset), mentioning: expected.name) {
      _ = try SparseExtentHeader(parsing: bytes, baseOffset: base)
    }
  }

  /// 79 bytes hold every field; the padding is not needed.
  @Test func seventyNineBytesAreEnough() throws {
    #expect(try SparseExtentHeader(parsing: Array(qemuHeader.serialized().prefix(79))) == qemuHeader)
  }
}

/// A change to a valid header, and the error `validate(fileSize:)` must give for it (nil: the
/// header stays valid).
struct HeaderRuleCase: Sendable, CustomTestStringConvertible {
  let name: String
  /// The kind, and the offset of the field the error must point at.
  let error: (kind: FormatError.Kind, field: UInt64)?
  let mutate: @Sendable (inout SparseExtentHeader) -> Void
  var testDescription: String { name }

  init(
    _ name: String, _ kind: FormatError.Kind, field: UInt64,
    _ mutate: @escaping @Sendable (inout SparseExtentHeader) -> Void
  ) {
    self.name = name
    self.error = (kind, field)
    self.mutate = mutate
  }

  private init(name: String, mutate: @escaping @Sendable (inout SparseExtentHeader) -> Void) {
    self.name = name
    self.error = nil
    self.mutate = mutate
  }

  static func accepted(_ name: String, _ mutate: @escaping @Sendable (inout SparseExtentHeader) -> Void) -> Self {
    Self(name: name, mutate: mutate)
  }
}

@Suite struct SparseExtentHeaderValidationTests {
  @Test func qemuHeaderIsValid() throws {
    let layout = try qemuHeader.validate(fileSize: qemuFileSize)
    #expect(layout == SparseLayout(capacitySectors: 2_097_152, grainSectors: 128))
    #expect(layout.grainTableCount == 32)
  }

  static let broken: [HeaderRuleCase] = [
    .init("version 0", .unsupportedVersion, field: 4) { $0.version = 0 },
    .init("version 4", .unsupportedVersion, field: 4) { $0.version = 4 },
    .init("version 0xffffffff", .unsupportedVersion, field: 4) { $0.version = .max },
    .init("unknown incompatible flag bit 18", .invalidHeader, field: 8) { $0.flags.insert(.init(rawValue: 1 << 18)) },
    .init("every incompatible flag", .invalidHeader, field: 8) { $0.flags = .init(rawValue: 0xFFFF_0003) },
    .init("markers without compression", .invalidHeader, field: 8) { $0.flags.insert(.markers) },
    .init("compressAlgorithm 2", .invalidHeader, field: 77) { $0.compressAlgorithm = 2 },
    .init("compressAlgorithm 0xffff", .invalidHeader, field: 77) { $0.compressAlgorithm = .max },
    .init("grain 0", .invalidGrainSize, field: 20) { $0.grainSectors = 0 },
    .init("grain 3 (not a power of two)", .invalidGrainSize, field: 20) { $0.grainSectors = 3 },
    .init("grain 129", .invalidGrainSize, field: 20) { $0.grainSectors = 129 },
    .init("grain 2^40", .invalidGrainSize, field: 20) { $0.grainSectors = 1 << 40 },
    .init("grain 2^63", .invalidGrainSize, field: 20) { $0.grainSectors = 1 << 63 },
    .init("grain 16384 (a power of two over the cap)", .invalidGrainSize, field: 20) { $0.grainSectors = 16384 },
    .init("numGTEsPerGT 0", .invalidTableSize, field: 44) { $0.numGTEsPerGT = 0 },
    .init("numGTEsPerGT 128", .invalidTableSize, field: 44) { $0.numGTEsPerGT = 128 },
    .init("numGTEsPerGT 511", .invalidTableSize, field: 44) { $0.numGTEsPerGT = 511 },
    .init("numGTEsPerGT 513", .invalidTableSize, field: 44) { $0.numGTEsPerGT = 513 },
    .init("numGTEsPerGT 0xffffffff", .invalidTableSize, field: 44) { $0.numGTEsPerGT = .max },
    .init("capacity 2^63", .capacityOverflow, field: 12) { $0.capacitySectors = 1 << 63 },
    .init("capacity 2^64-1", .capacityOverflow, field: 12) { $0.capacitySectors = .max },
    .init("capacity one past the byte-size cap", .capacityOverflow, field: 12) {
      $0.capacitySectors = Limits.maxCapacitySectors + 1
    },
    .init("capacity needing 32 Mi + 1 directory entries", .capacityOverflow, field: 12) {
      $0.capacitySectors = (Limits.maxGrainDirectoryEntries + 1) * 512 * 128
    },
    .init("descriptor of 2049 sectors (over 1 MiB)", .descriptorTooLarge, field: 36) {
      $0.descriptorSizeSectors = 2049
    },
    .init("descriptor of 2^64-1 sectors", .descriptorTooLarge, field: 36) { $0.descriptorSizeSectors = .max },
    .init("descriptor past the end", .offsetPastEnd, field: 28) { $0.descriptorOffsetSectors = 384 },
    .init("descriptor sector overflowing a byte offset", .offsetPastEnd, field: 28) {
      $0.descriptorOffsetSectors = 1 << 60
    },
    .init("grain directory offset 0", .invalidHeader, field: 56) { $0.gdOffsetSectors = 0 },
    .init("grain directory past the end", .offsetPastEnd, field: 56) { $0.gdOffsetSectors = 384 },
    .init("grain directory running past the end", .offsetPastEnd, field: 56) {
      // 4096 tables need 16 KiB of directory from sector 380: it starts inside, ends outside.
      $0.capacitySectors = 4096 * 65536
      $0.gdOffsetSectors = 380
    },
    .init("grain directory sector overflowing", .offsetPastEnd, field: 56) { $0.gdOffsetSectors = .max - 1 },
    .init("redundant directory past the end", .offsetPastEnd, field: 48) { $0.rgdOffsetSectors = 384 },
    .init("redundant directory sector overflowing", .offsetPastEnd, field: 48) { $0.rgdOffsetSectors = 1 << 58 },
    .init("overHead past the end", .truncated, field: 64) { $0.overheadSectors = 385 },
    .init("overHead overflowing a byte offset", .truncated, field: 64) { $0.overheadSectors = 1 << 56 },
  ]

  @Test(arguments: broken)
  func rejects(_ c: HeaderRuleCase) throws {
    var h = qemuHeader
    c.mutate(&h)
    let (kind, field) = try #require(c.error)
    // baseOffset: the same header found as a footer reports offsets in the file.
    let base: UInt64 = 7680
    expectFormatError(kind, offset: base + field) { _ = try h.validate(fileSize: qemuFileSize, baseOffset: base) }
  }

  /// Values real writers use that must stay accepted.
  static let accepted: [HeaderRuleCase] = [
    .accepted("version 2 with zeroed-grain entries") {
      $0.version = 2
      $0.flags.insert(.zeroedGrainEntries)
    },
    .accepted("version 3") { $0.version = 3 },
    .accepted("unknown compatible flag bit 15") { $0.flags.insert(.init(rawValue: 1 << 15)) },
    .accepted("stream flags 0x30001 with deflate") {
      $0.flags = [.validNewlineDetector, .compressed, .markers]
      $0.compressAlgorithm = 1
    },
    .accepted("redundant directory ignored without flag bit 1") {
      $0.flags.remove(.useRedundantGrainDirectory)
      $0.rgdOffsetSectors = 1 << 58
    },
    .accepted("directory at the end (the footer is validated instead)") {
      $0.gdOffsetSectors = SparseExtentHeader.gdAtEnd
    },
    .accepted("no embedded descriptor, whatever its size says") {
      $0.descriptorOffsetSectors = 0
      $0.descriptorSizeSectors = .max
    },
    .accepted("grain 1") { $0.grainSectors = 1 },
    .accepted("grain 8192 (the cap)") { $0.grainSectors = 8192 },
    .accepted("capacity 0") { $0.capacitySectors = 0 },
  ]

  @Test(arguments: accepted)
  func accepts(_ c: HeaderRuleCase) throws {
    var h = qemuHeader
    c.mutate(&h)
    #expect(c.error == nil)
    _ = try h.validate(fileSize: qemuFileSize)
  }

  /// Directory sizes from the notes' Appendix A (qemu's formulas, grain 128).
  @Test(arguments: [
    (UInt64(131_072), UInt64(2), UInt64(1)), (2_097_152, 32, 1), (4_194_304, 64, 1), (6147, 1, 1),
    (33_554_432, 512, 4), (1, 1, 1), (0, 0, 0),
  ])
  func layout(capacity: UInt64, tables: UInt64, directorySectors: UInt64) {
    let layout = SparseLayout(capacitySectors: capacity, grainSectors: 128)
    #expect(layout.grainTableCount == tables)
    #expect(layout.grainDirectorySectors == directorySectors)
  }
}

/// The placement of a new hosted sparse extent's metadata: the notes' Appendix A numbers.
@Suite struct HostedPlacementTests {
  @Test func appendixA() {
    // (capacity sectors, rgd, gd, overhead) with a 20-sector descriptor and 128-sector grains.
    let rows: [(UInt64, UInt64, UInt64, UInt64)] = [
      (131_072, 21, 30, 128), (2_097_152, 21, 150, 384), (6147, 21, 26, 128), (33_554_432, 21, 2073, 4224),
    ]
    for (capacity, rgd, gd, overhead) in rows {
      let p = SparseLayout(capacitySectors: capacity, grainSectors: 128).hostedPlacement(descriptorSectors: 20)
      #expect(p.rgd == rgd && p.gd == gd && p.overhead == overhead, "\(capacity): \(p)")
    }
  }
}
