// streamOptimized pieces: markers, the footer tail (qemu's three-sector rule) and zlib grains.

import Testing
import VMDKFormat

@Suite struct StreamMarkerTests {
  @Test func grainMarkerRoundTrips() throws {
    let m = StreamMarker(value: 0x1234_5678_9ABC, size: 794)
    let bytes = m.serialized()
    #expect(bytes.count == StreamMarker.grainHeaderBytes)
    let parsed = try StreamMarker(parsing: bytes)
    #expect(parsed == m)
    #expect(parsed.isGrain)
  }

  @Test(arguments: [
    (UInt64(0), StreamMarker.MetadataType.endOfStream), (4, .grainTable), (1, .grainDirectory), (1, .footer),
    (0, .progress),
  ])
  func metadataMarkerRoundTrips(value: UInt64, type: StreamMarker.MetadataType) throws {
    let m = StreamMarker(value: value, size: 0, type: type.rawValue)
    let bytes = m.serialized()
    // A metadata marker fills its sector; the pad is zero.
    #expect(bytes.count == 512)
    #expect(bytes[16...].allSatisfy { $0 == 0 })
    let parsed = try StreamMarker(parsing: bytes)
    #expect(parsed == m)
    #expect(!parsed.isGrain)
    #expect(StreamMarker.MetadataType(rawValue: parsed.type) == type)
  }

  /// A grain marker needs 12 bytes; a metadata marker (size 0) also needs its type at 12.
  @Test(arguments: [
    ([UInt8](repeating: 1, count: 7), "marker value", UInt64(0)),
    ([UInt8](repeating: 1, count: 11), "marker size", 8),
    ([UInt8](repeating: 0, count: 12), "marker type", 12),
    ([UInt8](repeating: 0, count: 15), "marker type", 12),
  ])
  func shortMarkers(bytes: [UInt8], field: String, at: UInt64) {
    expectFormatError(.truncated, offset: 65536 + at, mentioning: field) {
      _ = try StreamMarker(parsing: bytes, baseOffset: 65536)
    }
  }

  @Test func grainMarkerNeedsNoType() throws {
    let m = try StreamMarker(parsing: [1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0])
    #expect(m.value == 1 && m.size == 9 && m.type == 0)
  }
}

@Suite struct StreamFooterTests {
  static let footerHeader: SparseExtentHeader = {
    var h = SparseExtentHeader(
      version: 3, flags: [.validNewlineDetector, .compressed, .markers], capacitySectors: 2048, grainSectors: 128,
      descriptorOffsetSectors: 1, descriptorSizeSectors: 1, gdOffsetSectors: 300, overheadSectors: 128,
      compressAlgorithm: 1)
    h.rgdOffsetSectors = 0
    return h
  }()

  /// The last three sectors of a VMware stream file: footer marker, footer, end of stream.
  static func tail(
    marker: StreamMarker = StreamMarker(value: 1, size: 0, type: 3), footer: [UInt8] = footerHeader.serialized(),
    eos: StreamMarker = StreamMarker(value: 0, size: 0, type: 0)
  ) -> [UInt8] {
    sector(marker.serialized()) + footer + sector(eos.serialized())
  }

  /// A marker padded to its sector (a grain marker serialises as its 12-byte header only).
  static func sector(_ bytes: [UInt8]) -> [UInt8] { bytes + [UInt8](repeating: 0, count: 512 - bytes.count) }

  static let fileSize: UInt64 = 1 << 20

  @Test func parsesTheFooter() throws {
    let footer = try StreamFooter.parse(tail: Self.tail(), fileSize: Self.fileSize)
    #expect(footer == Self.footerHeader)
  }

  /// qemu does not look at the footer marker's value; neither do we.
  @Test func ignoresTheFooterMarkerValue() throws {
    let tail = Self.tail(marker: StreamMarker(value: 77, size: 0, type: 3))
    #expect(try StreamFooter.parse(tail: tail, fileSize: Self.fileSize) == Self.footerHeader)
  }

  /// Broken tails, and where in the tail the error must point.
  static let broken: [Named<(tail: [UInt8], offsetInTail: UInt64)>] = {
    var badMagic = footerHeader.serialized()
    badMagic[0] = 0x6B  // "kdmv"
    var atEnd = footerHeader
    atEnd.gdOffsetSectors = SparseExtentHeader.gdAtEnd
    return [
      Named("footer marker is a grain marker", (tail(marker: StreamMarker(value: 1, size: 100)), 0)),
      Named("footer marker of type 1 (grain table)", (tail(marker: StreamMarker(value: 4, size: 0, type: 1)), 0)),
      Named("footer marker of type 0xffffffff", (tail(marker: StreamMarker(value: 1, size: 0, type: .max)), 0)),
      Named("footer without KDMV magic", (tail(footer: badMagic), 512)),
      Named("footer that is all zeros", (tail(footer: [UInt8](repeating: 0, count: 512)), 512)),
      Named("end-of-stream marker with a value", (tail(eos: StreamMarker(value: 1, size: 0, type: 0)), 1024)),
      Named("end-of-stream marker of type 3", (tail(eos: StreamMarker(value: 0, size: 0, type: 3)), 1024)),
      Named("end-of-stream marker that is a grain", (tail(eos: StreamMarker(value: 0, size: 5)), 1024)),
      Named("footer that also says 'at end'", (tail(footer: atEnd.serialized()), 512 + 56)),
    ]
  }()

  @Test(arguments: broken)
  func rejects(_ c: Named<(tail: [UInt8], offsetInTail: UInt64)>) {
    expectFormatError(.invalidMarker, offset: Self.fileSize - 1536 + c.value.offsetInTail, mentioning: "footer") {
      _ = try StreamFooter.parse(tail: c.value.tail, fileSize: Self.fileSize)
    }
  }

  /// A file shorter than three sectors cannot hold a footer: the opener passes what it could
  /// read, and a caller's size may even be smaller than the bytes (see the fuzz fixture).
  @Test(arguments: [
    (1535, UInt64(1535)), (0, 0), (512, 512), (1536, 1535), (1536, 0), (1537, 1 << 20),
  ])
  func rejectsShortTails(count: Int, fileSize: UInt64) {
    let bytes = Array(Self.tail().prefix(count)) + [UInt8](repeating: 0, count: max(0, count - 1536))
    expectFormatError(.invalidMarker, mentioning: "too short") {
      _ = try StreamFooter.parse(tail: bytes, fileSize: fileSize)
    }
  }
}

@Suite struct GrainCompressionTests {
  static let grain: [UInt8] = (0..<65536).map { UInt8(truncatingIfNeeded: $0 * 7 + $0 / 300) }

  static func compress(_ bytes: [UInt8], level: Int32 = 6) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: GrainCompression.bound(bytes.count))
    let n = bytes.withUnsafeBytes { src in
      out.withUnsafeMutableBytes { GrainCompression.deflate(src, into: $0, level: level) }
    }
    return Array(out.prefix(n!))
  }

  static func inflate(_ bytes: [UInt8], capacity: Int = 65536) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: capacity)
    let n = try bytes.withUnsafeBytes { src in
      try out.withUnsafeMutableBytes { try GrainCompression.inflate(src, into: $0, offset: 4096) }
    }
    return Array(out.prefix(n))
  }

  /// Levels 1, 6 and 9 give the zlib headers 78 01, 78 9C and 78 DA that VMware, qemu and
  /// open-vmdk write (notes §2.4).
  @Test(arguments: [(Int32(1), UInt8(0x01)), (6, 0x9C), (9, 0xDA)])
  func roundTrips(level: Int32, headerByte: UInt8) throws {
    let z = Self.compress(Self.grain, level: level)
    #expect(Array(z.prefix(2)) == [0x78, headerByte])
    #expect(try Self.inflate(z) == Self.grain)
  }

  /// Damaged streams: each must be a typed error, never a partial grain taken as good.
  static let damaged: [Named<(bytes: [UInt8], capacity: Int)>] = {
    let z = compress(grain)
    var flipped = z
    flipped[z.count / 2] ^= 0xFF
    var badChecksum = z
    badChecksum[z.count - 1] ^= 0x01
    return [
      Named("empty", ([], 65536)),
      Named("one byte", ([0x78], 65536)),
      Named("cut in half", (Array(z.prefix(z.count / 2)), 65536)),
      Named("without the Adler-32", (Array(z.dropLast(4)), 65536)),
      Named("a flipped byte", (flipped, 65536)),
      Named("a bad Adler-32", (badChecksum, 65536)),
      Named("raw deflate, no zlib header", (Array(z.dropFirst(2)), 65536)),
      Named("garbage", ([UInt8](repeating: 0xA5, count: 300), 65536)),
      Named("more than the buffer holds", (z, 65535)),
    ]
  }()

  @Test(arguments: damaged)
  func rejects(_ c: Named<(bytes: [UInt8], capacity: Int)>) {
    expectFormatError(.corruptCompressedData, offset: 4096) {
      _ = try Self.inflate(c.value.bytes, capacity: c.value.capacity)
    }
  }

  /// A stream shorter than a grain is not an error here: the extent decides whether the grain
  /// needed all of it (the disk's last grain may be partial).
  @Test func shortOutputIsReturned() throws {
    #expect(try Self.inflate(Self.compress(Array(Self.grain.prefix(1000)))) == Array(Self.grain.prefix(1000)))
  }
}
