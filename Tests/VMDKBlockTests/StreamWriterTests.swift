// The streamOptimized writer, read back with our own reader: write patterns (odd write sizes,
// partial last grain, empty regions, all-zero disks, incompressible grains), check() clean,
// abort leaving nothing, and the parallel output byte-identical to the single-threaded one.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

/// Test content made fast: every sector a fixed 512-byte block stamped with its LBA and a seed,
/// except grains listed as random (incompressible: their zlib stream is longer than the grain).
struct StreamContent {
  var seed: UInt64 = 1
  var randomGrains: Set<UInt64> = []

  func bytes(at offset: UInt64, count: Int) -> [UInt8] {
    precondition(offset % 512 == 0)
    var out = [UInt8](repeating: 0, count: (count + 511) / 512 * 512)
    var block = [UInt8](repeating: 0, count: 512)
    var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    for i in 0..<512 {
      x ^= x << 13
      x ^= x >> 7
      x ^= x << 17
      block[i] = UInt8(truncatingIfNeeded: x % 7)
    }
    out.withUnsafeMutableBytes { o in
      for s in 0..<(o.count / 512) {
        let lba = offset / 512 + UInt64(s)
        if randomGrains.contains(lba / 128) {
          var r = (lba &+ 1) &* 0x2545_F491_4F6C_DD1D ^ seed
          for k in 0..<64 {
            r ^= r << 13
            r ^= r >> 7
            r ^= r << 17
            o.storeBytes(of: r, toByteOffset: s * 512 + k * 8, as: UInt64.self)
          }
          continue
        }
        block.withUnsafeBytes { o.baseAddress!.advanced(by: s * 512).copyMemory(from: $0.baseAddress!, byteCount: 512) }
        o.storeBytes(of: lba | 1 << 63, toByteOffset: s * 512, as: UInt64.self)
        o.storeBytes(of: seed, toByteOffset: s * 512 + 8, as: UInt64.self)
      }
    }
    return Array(out.prefix(count))
  }
}

/// One way of writing a disk: its capacity and the writes, in order.
struct StreamCase: Sendable, CustomTestStringConvertible {
  var name: String
  var capacityBytes: UInt64
  /// (offset, length) of each write; the bytes are `content`'s (or zeros when `zeros`).
  var writes: [(UInt64, Int)]
  var content = StreamContent()
  var zeros = false
  var testDescription: String { name }

  /// Sequential writes covering `range` in chunks whose sizes cycle through `sizes` (sectors).
  static func chunks(_ range: Range<UInt64>, sizes: [Int]) -> [(UInt64, Int)] {
    var out: [(UInt64, Int)] = []
    var at = range.lowerBound
    var i = 0
    while at < range.upperBound {
      let n = min(UInt64(sizes[i % sizes.count] * 512), range.upperBound - at)
      out.append((at, Int(n)))
      at += n
      i += 1
    }
    return out
  }

  static let mib: UInt64 = 1 << 20

  static let all: [StreamCase] = [
    StreamCase(
      name: "odd write sizes, partial last grain", capacityBytes: 5 * mib + 3 * 512,
      writes: chunks(0..<(5 * mib + 3 * 512), sizes: [1, 3, 129, 7, 200, 128, 1000])),
    StreamCase(
      name: "one sector past a grain multiple", capacityBytes: 2 * mib + 512,
      writes: chunks(0..<(2 * mib + 512), sizes: [128])),
    StreamCase(
      name: "one write of everything", capacityBytes: 3 * mib, writes: [(0, Int(3 * mib))]),
    StreamCase(
      name: "regions with no grains", capacityBytes: 100 * mib,
      writes: [(0, Int(mib)), (70 * mib + 4096, 5000 * 512), (100 * mib - 512, 512)]),
    StreamCase(
      name: "gaps inside grains", capacityBytes: 1 * mib,
      writes: [(512, 512), (4096, 1024), (65536 + 1024, 512), (3 * 65536 - 512, 1024), (mib - 1024, 512)]),
    StreamCase(
      name: "crossing a table boundary, incompressible grains", capacityBytes: 40 * mib,
      writes: chunks(0..<(40 * mib), sizes: [2048, 77]),
      content: StreamContent(seed: 7, randomGrains: [0, 5, 511, 512, 513, 639])),
    StreamCase(
      name: "all-zero disk written", capacityBytes: 6 * mib, writes: chunks(0..<(6 * mib), sizes: [300]),
      zeros: true),
    StreamCase(name: "nothing written", capacityBytes: 33 * mib, writes: []),
  ]
}

/// Writes `c` with the stream writer at `path`; returns what the disk should read as.
@discardableResult
func writeStream(_ c: StreamCase, to path: String, threads: Int? = nil, cid: UInt32? = nil, uuid: UUID? = nil)
  throws -> ExpectedDisk
{
  var options = CreateOptions(type: .streamOptimized, capacityBytes: c.capacityBytes)
  options.cid = cid
  options.uuid = uuid
  let writer = try StreamWriter(path: path, options: options, files: OutputFiles(), threads: threads)
  var expected = ExpectedDisk(sectors: options.capacitySectors)
  for (offset, length) in c.writes {
    let data = c.zeros ? [UInt8](repeating: 0, count: length) : c.content.bytes(at: offset, count: length)
    try data.withUnsafeBytes { try writer.write(at: offset, $0) }
    expected.place(data, at: offset)
  }
  try writer.commit()
  return expected
}

@Suite(.timeLimit(.minutes(20))) struct StreamWriterTests {
  @Test(arguments: StreamCase.all)
  func readsBack(_ c: StreamCase) throws {
    let folder = try TempFolder()
    let path = folder.path("out.vmdk")
    let expected = try writeStream(c, to: path)
    try expectReads(path, as: expected)
    let disk = try Disk.open(path)
    let report = try disk.check()
    #expect(report.problems.isEmpty, "\(report.problems)")
    // Only the temporary file was made, and it was renamed.
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["out.vmdk"])
    let info = disk.top.extents[0]
    let footer = try #require(info.sparseHeader)
    #expect(footer.version == 3)
    #expect(footer.flags.rawValue == 0x30001)
  }

  /// Grains that are all zeros, and regions without grains, cost nothing in the file.
  @Test func zeroGrainsAreSkipped() throws {
    let folder = try TempFolder()
    for c in StreamCase.all where c.zeros || c.writes.isEmpty {
      let path = folder.path("\(c.name.count).vmdk")
      try writeStream(c, to: path)
      let disk = try Disk.open(path)
      #expect(try disk.check().allocatedGrains == 0)
      let size = try LocalFile(path: path).size()
      // Header + descriptor area (128 sectors), GD marker + GD, footer marker + footer, EOS.
      let gdSectors = (c.capacityBytes / 512 / 128 / 512 * 4 + 4 + 511) / 512
      #expect(size == (128 + 1 + gdSectors + 3) * 512, "\(c.name)")
    }
  }

  /// The regions with no grains get no grain table: grain directory entries 0.
  @Test func emptyRegionsHaveNoTable() throws {
    let folder = try TempFolder()
    let c = StreamCase.all.first { $0.name == "regions with no grains" }!
    let path = folder.path("r.vmdk")
    try writeStream(c, to: path)
    let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    let footer = try SparseExtentHeader(parsing: Array(bytes[(bytes.count - 1024)..<(bytes.count - 512)]))
    let gd = Int(footer.gdOffsetSectors) * 512
    let entries = (0..<4).map { i in
      UInt32(bytes[gd + 4 * i]) | UInt32(bytes[gd + 4 * i + 1]) << 8 | UInt32(bytes[gd + 4 * i + 2]) << 16
        | UInt32(bytes[gd + 4 * i + 3]) << 24
    }
    #expect(entries[0] != 0 && entries[1] == 0 && entries[2] != 0 && entries[3] != 0, "\(entries)")
  }

  /// Parallel compression writes exactly the bytes the single-threaded path writes.
  @Test func parallelOutputIsDeterministic() throws {
    let folder = try TempFolder()
    let c = StreamCase.all.first { $0.name.hasPrefix("crossing") }!
    let uuid = UUID()
    let one = folder.path("one.vmdk")
    let many = folder.path("many.vmdk")
    try writeStream(c, to: one, threads: 0, cid: 0x1234_5678, uuid: uuid)
    try writeStream(c, to: many, threads: 4, cid: 0x1234_5678, uuid: uuid)
    let a = Array(try Data(contentsOf: URL(fileURLWithPath: one)))
    let b = Array(try Data(contentsOf: URL(fileURLWithPath: many)))
    #expect(a.count == b.count)
    // The descriptor's ddb.longContentID is random; everything else must match.
    let header = try SparseExtentHeader(parsing: Array(a[0..<512]))
    let grains = Int(header.overheadSectors) * 512
    #expect(a[0..<512] == b[0..<512])
    #expect(a[grains...] == b[grains...])
  }

  @Test func abortLeavesNoFile() throws {
    let folder = try TempFolder()
    let files = OutputFiles()
    let writer = try StreamWriter(
      path: folder.path("a.vmdk"), options: CreateOptions(type: .streamOptimized, capacityBytes: 8 << 20),
      files: files)
    let data = StreamContent().bytes(at: 0, count: 3 << 20)
    try data.withUnsafeBytes { try writer.write(at: 0, $0) }
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).count == 1)
    writer.abort()
    writer.abort()
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
  }

  @Test func rejectsBackwardAndOutOfRangeWrites() throws {
    let folder = try TempFolder()
    let writer = try StreamWriter(
      path: folder.path("b.vmdk"), options: CreateOptions(type: .streamOptimized, capacityBytes: 1 << 20),
      files: OutputFiles())
    defer { writer.abort() }
    let data = [UInt8](repeating: 1, count: 4096)
    try data.withUnsafeBytes { try writer.write(at: 65536, $0) }
    let back = #expect(throws: VMDKError.self) { try data.withUnsafeBytes { try writer.write(at: 0, $0) } }
    #expect(back?.code == .invalidArgument)
    let past = #expect(throws: VMDKError.self) {
      try data.withUnsafeBytes { try writer.write(at: (1 << 20) - 512, $0) }
    }
    #expect(past?.code == .outOfRange)
  }

  @Test func refusesOtherTypes() throws {
    let folder = try TempFolder()
    let e = #expect(throws: VMDKError.self) {
      _ = try StreamWriter(
        path: folder.path("c.vmdk"), options: CreateOptions(type: .monolithicSparse, capacityBytes: 1 << 20),
        files: OutputFiles())
    }
    #expect(e?.code == .invalidArgument)
  }

  /// A commit that cannot rename the file into place (its folder is gone) throws.
  @Test func commitErrorsPropagate() throws {
    let folder = try TempFolder()
    let sub = folder.path("sub")
    try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
    let writer = try StreamWriter(
      path: sub + "/d.vmdk", options: CreateOptions(type: .streamOptimized, capacityBytes: 4 << 20),
      files: OutputFiles())
    let data = StreamContent().bytes(at: 0, count: 4 << 20)
    try data.withUnsafeBytes { try writer.write(at: 0, $0) }
    try FileManager.default.removeItem(atPath: sub)
    #expect(throws: VMDKError.self) { try writer.commit() }
    writer.abort()
  }
}

@Suite struct StreamWriterGrainSizeTests {
  /// A grain of 8 KiB instead of 64 KiB: the batches hold more grains, the tables cover less.
  @Test func smallGrains() throws {
    let folder = try TempFolder()
    let path = folder.path("g.vmdk")
    var options = CreateOptions(type: .streamOptimized, capacityBytes: (5 << 20) + 512)
    options.grainSectors = 16
    let writer = try StreamWriter(path: path, options: options, files: OutputFiles())
    var expected = ExpectedDisk(sectors: options.capacitySectors)
    for (offset, length) in StreamCase.chunks(0..<((5 << 20) + 512), sizes: [7, 33, 1]) where offset % 3 != 0 {
      let data = StreamContent().bytes(at: offset, count: length)
      try data.withUnsafeBytes { try writer.write(at: offset, $0) }
      expected.place(data, at: offset)
    }
    try writer.commit()
    try expectReads(path, as: expected)
    #expect(try Disk.open(path).check().problems.isEmpty)
    #expect(try Disk.open(path).top.sparseHeader?.grainSectors == 16)
  }
}

@Suite(.timeLimit(.minutes(20))) struct StreamWriterLargeDiskTests {
  /// A 64 TiB disk with three small pieces of data: the grain directory (2 Mi entries, 8 MiB)
  /// is written in pieces, the file stays small, and the pieces read back.
  @Test func sparse64TiB() throws {
    let folder = try TempFolder()
    let path = folder.path("big.vmdk")
    let capacity: UInt64 = 64 << 40
    let writer = try StreamWriter(
      path: path, options: CreateOptions(type: .streamOptimized, capacityBytes: capacity), files: OutputFiles())
    let pieces: [(UInt64, Int)] = [(0, 1 << 20), ((40 << 40) + 4096, 300 * 512), (capacity - 4096, 4096)]
    for (offset, length) in pieces {
      let data = StreamContent().bytes(at: offset, count: length)
      try data.withUnsafeBytes { try writer.write(at: offset, $0) }
    }
    try writer.commit()
    let size = try LocalFile(path: path).size()
    #expect(size < 12 << 20, "\(size) bytes")
    let disk = try Disk.open(path)
    #expect(disk.capacityBytes == capacity)
    for (offset, length) in pieces {
      #expect(try disk.read(at: offset, count: length) == StreamContent().bytes(at: offset, count: length))
    }
    #expect(try disk.read(at: 32 << 40, count: 65536) == [UInt8](repeating: 0, count: 65536))
    #expect(try disk.read(at: (40 << 40), count: 4096) == [UInt8](repeating: 0, count: 4096))
  }

  @Test func refusesCapacitiesReadersRefuse() throws {
    let folder = try TempFolder()
    let e = #expect(throws: VMDKError.self) {
      _ = try StreamWriter(
        path: folder.path("huge.vmdk"), options: CreateOptions(type: .streamOptimized, capacityBytes: 2 << 50),
        files: OutputFiles())
    }
    #expect(e?.code == .invalidArgument)
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
  }
}
