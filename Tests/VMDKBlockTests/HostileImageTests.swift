// Hostile images: a valid builder image with one thing broken, opened and read in full. Each
// must fail with a typed VMDKError of the expected code, naming the file and (where the
// notes locate the problem) the byte offset of the field or entry at fault. No crash, no trap.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

/// One way to break a valid image, and the error that must follow.
struct Hostile<Image: BuiltImage>: Sendable, CustomTestStringConvertible {
  let name: String
  let code: VMDKError.Code
  /// Breaks the image; returns the byte offset the error must name (nil: not checked).
  let mutate: @Sendable (inout Image) -> Int?
  /// A library bug that makes this case fail today (see the report); the case is recorded as
  /// a known issue until it is fixed, and then flags that the marker can go.
  let knownIssue: Comment?
  var testDescription: String { name }

  init(
    _ name: String, _ code: VMDKError.Code, knownIssue: Comment? = nil,
    _ mutate: @escaping @Sendable (inout Image) -> Int?
  ) {
    self.name = name
    self.code = code
    self.knownIssue = knownIssue
    self.mutate = mutate
  }
}

extension Hostile where Image: HeaderedImage {
  /// One header field changed; the error names that field's offset.
  init(
    _ name: String, _ code: VMDKError.Code, field: Int, _ change: @escaping @Sendable (inout Image.Header) -> Void
  ) {
    self.init(name, code) { image in
      image.header(change)
      return field
    }
  }
}

extension Hostile where Image == SESparseImage.Built {
  /// The u64 at byte `field` set to `value`; the error names that offset.
  init(_ name: String, _ code: VMDKError.Code, field: Int, value: UInt64) {
    self.init(name, code) { image in
      image.set(field, value)
      return field
    }
  }
}

/// Writes the broken image (and, for ESXi extents, a descriptor naming it), then expects the
/// case's error naming the image file.
func expect<Image>(_ c: Hostile<Image>, base: Image, file: String, descriptor: String? = nil) throws {
  var image = base
  let offset = c.mutate(&image)
  let folder = try TempFolder()
  var path = try folder.write(file, image.bytes)
  if let descriptor { path = try folder.write("descriptor.vmdk", text: descriptor) }
  if let issue = c.knownIssue {
    withKnownIssue(issue) { expectVMDKError(c.code, opening: path, file: file, offset: offset.map(UInt64.init)) }
  } else {
    expectVMDKError(c.code, opening: path, file: file, offset: offset.map(UInt64.init))
  }
}

@Suite(.timeLimit(.minutes(20))) struct HostileSparseTests {
  static let base: SparseImage.Built = {
    var image = SparseImage()
    image.fill([0, 1, 5])
    return image.build()
  }()

  typealias Case = Hostile<SparseImage.Built>

  static let cases: [Case] = [
    Case("grain size 0", .invalidGrainSize, field: 20) { $0.grainSectors = 0 },
    Case("grain size 3", .invalidGrainSize, field: 20) { $0.grainSectors = 3 },
    Case("grain size 2^40", .invalidGrainSize, field: 20) { $0.grainSectors = 1 << 40 },
    Case("grain size 2^64-1", .invalidGrainSize, field: 20) { $0.grainSectors = .max },
    Case("511 entries per table", .invalidTableSize, field: 44) { $0.numGTEsPerGT = 511 },
    Case("513 entries per table", .invalidTableSize, field: 44) { $0.numGTEsPerGT = 513 },
    Case("0 entries per table", .invalidTableSize, field: 44) { $0.numGTEsPerGT = 0 },
    Case("version 4", .unsupportedVersion, field: 4) { $0.version = 4 },
    Case("unknown incompatible flag", .invalidHeader, field: 8) { $0.flags.insert(.init(rawValue: 1 << 20)) },
    Case("compressAlgorithm 2", .invalidHeader, field: 77) { $0.compressAlgorithm = 2 },
    Case("capacity 2^63 sectors", .capacityOverflow, field: 12) { $0.capacitySectors = 1 << 63 },
    Case("capacity 2^64-1 sectors", .capacityOverflow, field: 12) { $0.capacitySectors = .max },
    Case("grain directory offset 0", .invalidHeader, field: 56) { $0.gdOffsetSectors = 0 },
    Case("grain directory past the end", .offsetPastEnd) { image in
      let sectors = UInt64(image.bytes.count / 512)
      image.header { $0.gdOffsetSectors = sectors + 10 }
      return 56
    },
    Case("grain directory sector overflowing", .offsetPastEnd, field: 56) { $0.gdOffsetSectors = 1 << 60 },
    Case("redundant directory past the end", .offsetPastEnd) { image in
      let sectors = UInt64(image.bytes.count / 512)
      image.header { $0.rgdOffsetSectors = sectors }
      return 48
    },
    Case("overHead past the end", .truncated) { image in
      let sectors = UInt64(image.bytes.count / 512)
      image.header { $0.overheadSectors = sectors + 1 }
      return 64
    },
    Case("embedded descriptor over 1 MiB", .descriptorTooLarge, field: 36) { $0.descriptorSizeSectors = 4096 },
    Case("embedded descriptor past the end", .offsetPastEnd, field: 28) { $0.descriptorOffsetSectors = 1 << 40 },
    Case("embedded descriptor of garbage", .invalidDescriptor) { image in
      image.bytes.replaceSubrange(512..<530, with: Array("\u{1}\u{2}garbage!\u{7F}\n@@@@@@".utf8))
      return 512
    },
    Case("embedded descriptor without createType", .invalidDescriptor) { image in
      let text = Array("# Disk DescriptorFile\nversion=1\nCID=fffffffe\n".utf8)
      image.bytes.replaceSubrange(512..<(21 * 512), with: text + [UInt8](repeating: 0, count: 20 * 512 - text.count))
      return 512
    },
    Case("a directory entry past the end", .offsetPastEnd) { image in
      image.bytes.put32(UInt32(image.bytes.count / 512), at: image.gdeOffset(0))
      return image.gdeOffset(0)
    },
    Case("a directory entry at sector 2^32-1", .offsetPastEnd) { image in
      image.bytes.put32(.max, at: image.gdeOffset(0))
      return image.gdeOffset(0)
    },
    Case("a grain entry past the end", .offsetPastEnd) { image in
      image.bytes.put32(UInt32(image.bytes.count / 512), at: image.gteOffset(1))
      return image.gteOffset(1)
    },
    Case("a grain entry at sector 2^32-1", .offsetPastEnd) { image in
      image.bytes.put32(.max, at: image.gteOffset(5))
      return image.gteOffset(5)
    },
    Case("the file cut before its last grain", .offsetPastEnd) { image in
      image.bytes.removeSubrange(image.grainOffsets[5]!...)
      return image.gteOffset(5)
    },
    Case("the file cut inside the grain tables", .truncated) { image in
      image.bytes.removeSubrange((image.gdOffset + 1024)...)
      return 64
    },
  ]

  @Test(arguments: cases)
  func rejects(_ c: Case) throws {
    try expect(c, base: Self.base, file: "disk.vmdk")
  }

  /// A file cut anywhere inside the header's 79 bytes of fields (after the magic, which is
  /// what makes it a sparse file) names the missing field's offset.
  @Test(arguments: 4..<79)
  func headerTruncatedAt(length: Int) throws {
    let folder = try TempFolder()
    let path = try folder.write("cut.vmdk", Array(Self.base.bytes.prefix(length)))
    let field = [4, 8, 12, 20, 28, 36, 44, 48, 56, 64, 72, 73, 77].last { $0 <= length }!
    expectVMDKError(.truncated, opening: path, file: "cut.vmdk", offset: UInt64(field))
  }

  /// Three bytes of the magic are not a sparse file: auto-detection reads them as a raw
  /// image, and insisting on VMDK makes them an invalid descriptor.
  @Test(arguments: 1..<4)
  func shorterThanTheMagic(length: Int) throws {
    let folder = try TempFolder()
    let path = try folder.write("cut.vmdk", Array(Self.base.bytes.prefix(length)))
    #expect(try Disk.open(path).top.kind == .raw)
    var vmdk = OpenOptions()
    vmdk.format = .vmdk
    expectVMDKError(.invalidDescriptor, opening: path, options: vmdk, file: "cut.vmdk")
  }
}

@Suite(.timeLimit(.minutes(20))) struct HostileStreamTests {
  static let image: StreamImage = {
    var image = StreamImage()
    image.fill([0, 3, 15])
    return image
  }()
  static let base = image.build()

  typealias Case = Hostile<StreamImage.Built>

  static let cases: [Case] = [
    Case("corrupt zlib data", .corruptCompressedData) { image in
      let data = image.markerOffsets[3]! + StreamMarker.grainHeaderBytes
      for i in 20..<40 { image.bytes[data + i] ^= 0x5A }
      return data
    },
    Case("zlib data without its header", .corruptCompressedData) { image in
      let data = image.markerOffsets[0]! + StreamMarker.grainHeaderBytes
      image.bytes[data] = 0
      image.bytes[data + 1] = 0
      return data
    },
    Case("a grain claiming more than the file holds", .compressedGrainTooLarge) { image in
      let marker = image.markerOffsets[15]!
      image.bytes.put32(UInt32(image.bytes.count - marker - StreamMarker.grainHeaderBytes + 1), at: marker + 8)
      return marker
    },
    Case("a grain claiming more than two grains", .compressedGrainTooLarge) { image in
      image.bytes.put32(2 * 65536 + 1, at: image.markerOffsets[0]! + 8)
      return image.markerOffsets[0]!
    },
    Case("a grain claiming 4 GiB", .compressedGrainTooLarge) { image in
      image.bytes.put32(.max, at: image.markerOffsets[3]! + 8)
      return image.markerOffsets[3]!
    },
    // A grain entry that lands on a metadata marker (size 0) is an invalid marker at that offset.
    Case("a grain marker of size 0", .invalidMarker) { image in
      image.bytes.put32(0, at: image.markerOffsets[3]! + 8)
      return image.markerOffsets[3]!
    },
    Case("a grain entry pointing at the footer marker", .invalidMarker) { image in
      image.bytes.put32(UInt32(image.footerMarkerOffset / 512), at: image.gteOffset(3))
      return image.footerMarkerOffset
    },
    Case("a grain entry past the end", .offsetPastEnd) { image in
      image.bytes.put32(UInt32(image.bytes.count / 512 + 1), at: image.gteOffset(15))
      return image.gteOffset(15)
    },
    Case("a footer marker of type 1", .invalidMarker) { image in
      image.bytes.put32(1, at: image.footerMarkerOffset + 12)
      return image.footerMarkerOffset
    },
    Case("a footer whose magic is gone", .invalidMarker) { image in
      image.bytes[image.footerMarkerOffset + 512] = 0
      return image.footerMarkerOffset + 512
    },
    Case("a footer that also says 'at end'", .invalidMarker) { image in
      image.bytes.put64(SparseExtentHeader.gdAtEnd, at: image.footerMarkerOffset + 512 + 56)
      return image.footerMarkerOffset + 512 + 56
    },
    Case("no end-of-stream marker", .invalidMarker) { image in
      image.bytes.removeLast(512)
      return image.bytes.count - 1536
    },
    Case("bytes after the end-of-stream marker", .invalidMarker) { image in
      image.bytes += [UInt8](repeating: 0xEE, count: 512)
      return image.bytes.count - 1536
    },
    Case("a file too short for a footer", .invalidMarker) { image in
      image.bytes.removeSubrange(1024...)
      return 0
    },
  ]

  @Test(arguments: cases)
  func rejects(_ c: Case) throws {
    try expect(c, base: Self.base, file: "stream.vmdk")
  }

  /// A grain whose stream inflates to less than a grain (it is not the disk's last grain).
  @Test func shortInflation() throws {
    var image = Self.image
    image.truncatedGrains = [3: 1000]
    let built = image.build()
    let folder = try TempFolder()
    let path = try folder.write("stream.vmdk", built.bytes)
    let e = expectVMDKError(.corruptCompressedData, opening: path, file: "stream.vmdk")
    #expect(e?.offset == UInt64(built.markerOffsets[3]!))
  }

  /// The footer's fields are validated like a header's, but the offset in the error is the
  /// field's offset in the footer near the end of the file, not in a header at byte 0.
  @Test func footerErrorsPointIntoTheFooter() throws {
    var built = Self.base
    built.bytes.put64(0, at: built.footerMarkerOffset + 512 + 20)
    let folder = try TempFolder()
    let path = try folder.write("stream.vmdk", built.bytes)
    let e = expectVMDKError(.invalidGrainSize, opening: path, file: "stream.vmdk")
    #expect(e?.offset == UInt64(built.footerMarkerOffset + 512 + 20))
  }
}

@Suite(.timeLimit(.minutes(20))) struct HostileCOWDTests {
  static let base: COWDImage.Built = {
    var image = COWDImage()
    image.fill([0, 1, 4097])
    return image.build()
  }()
  static let descriptor = descriptorText(createType: "vmfsSparse", extents: [#"RW 10000 VMFSSPARSE "snap-delta.vmdk""#])

  typealias Case = Hostile<COWDImage.Built>

  static let cases: [Case] = [
    Case("version 3 (VMDK3)", .unsupportedVersion, field: 4) { $0.version = 3 },
    Case("grain size 0", .invalidGrainSize, field: 16) { $0.grainSectors = 0 },
    Case("grain size 2^32-1", .invalidGrainSize, field: 16) { $0.grainSectors = .max },
    Case("too few directory entries", .invalidHeader, field: 24) { $0.numGDEntries = 1 },
    Case("2^32-1 directory entries", .capacityOverflow, field: 24) { $0.numGDEntries = .max },
    Case("directory offset 0", .invalidHeader, field: 20) { $0.gdOffsetSectors = 0 },
    Case("directory past the end", .offsetPastEnd) { image in
      let sectors = UInt32(image.bytes.count / 512)
      image.header { $0.gdOffsetSectors = sectors }
      return 20
    },
    Case("a directory entry past the end", .offsetPastEnd) { image in
      image.bytes.put32(UInt32(image.bytes.count / 512), at: image.gdeOffset(1))
      return image.gdeOffset(1)
    },
    Case("a grain entry past the end", .offsetPastEnd) { image in
      image.bytes.put32(.max, at: image.gteOffset(1))
      return image.gteOffset(1)
    },
    Case("not a COWD file at all", .badMagic) { image in
      image.bytes.replaceSubrange(0..<4, with: [0x43, 0x4F, 0x57, 0x45])
      return 0
    },
  ]

  /// Opened through a descriptor, so the error must name the extent file, not the descriptor.
  @Test(arguments: cases)
  func rejects(_ c: Case) throws {
    try expect(c, base: Self.base, file: "snap-delta.vmdk", descriptor: Self.descriptor)
  }
}

@Suite(.timeLimit(.minutes(20))) struct HostileSESparseTests {
  static let base: SESparseImage.Built = {
    var image = SESparseImage()
    image.fill([0, 1, 4100])
    image.zeroGrains = [2]
    image.unmappedGrains = [3]
    return image.build()
  }()
  static let descriptor = descriptorText(createType: "seSparse", extents: [#"RW 33000 SESPARSE "snap-sesparse.vmdk""#])

  typealias Case = Hostile<SESparseImage.Built>

  static let cases: [Case] = [
    Case("version 0x200000002", .unsupportedVersion, field: 8, value: 0x2_0000_0002),
    Case("grain size 16", .invalidGrainSize, field: 24, value: 16),
    Case("grain table size 32", .invalidTableSize, field: 32, value: 32),
    Case("flags 1", .invalidHeader, field: 40, value: 1),
    Case("non-zero pad", .invalidHeader, field: 400, value: 1),
    Case("volatile header past the end", .offsetPastEnd, field: 80, value: 1 << 40),
    // The volatile header is sector 1.
    Case("dissect's volatile magic (0xcafebabe)", .badMagic, field: 512, value: 0xCAFE_BABE),
    Case("a journal to replay", .invalidHeader, field: 512 + 24, value: 1),
    Case("a directory entry of type 2", .invalidTable) { image in
      image.set(image.gdeOffset(0), 0x2000_0000_0000_0000)
      return image.gdeOffset(0)
    },
    Case("a directory entry naming a table past the end", .offsetPastEnd) { image in
      image.set(image.gdeOffset(0), 0x1000_0000_FFFF_FFFF)
      return image.gdeOffset(0)
    },
    Case("a grain entry of type 4", .invalidTable) { image in
      image.set(image.gteOffset(0), 0x4000_0000_0000_0000)
      return image.gteOffset(0)
    },
    Case("a type-0 grain entry with low bits", .invalidTable) { image in
      image.set(image.gteOffset(5), 0x0000_0000_0000_0001)
      return image.gteOffset(5)
    },
    Case("a grain past the end", .offsetPastEnd) { image in
      image.set(image.gteOffset(1), SESparseImage.allocatedEntry(1 << 20))
      return image.gteOffset(1)
    },
  ]

  @Test(arguments: cases)
  func rejects(_ c: Case) throws {
    try expect(c, base: Self.base, file: "snap-sesparse.vmdk", descriptor: Self.descriptor)
  }

  /// A grain entry whose index times 4 KiB overflows 64 bits: a typed error, never a trap.
  /// Run in a child process so that a regression to a trap cannot take the test run down.
  @Test func grainIndexOverflowingAByteOffset() async {
    await #expect(processExitsWith: .success) {
      var image = HostileSESparseTests.base
      image.set(image.gteOffset(0), 0x3000_FFFF_FFFF_FFFF)
      let folder = try TempFolder()
      try folder.write("snap-sesparse.vmdk", image.bytes)
      let path = try folder.write("descriptor.vmdk", text: HostileSESparseTests.descriptor)
      do {
        _ = try Disk.open(path).digest()
        exit(3)
      } catch let e as VMDKError where e.code == .offsetPastEnd {
        exit(0)
      }
    }
  }
}
