// The writers through ImageCreator: write patterns within the sequential contract (odd
// offsets, partial grains, zero grains, a capacity that is not a multiple of the grain),
// commit, then read back with the library's reader and compare bytes, digest and check.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

/// A sequence of writes and the disk they should give.
struct WritePlan {
  var capacityBytes: UInt64
  var writes: [(offset: UInt64, bytes: [UInt8])] = []
  var expected: ExpectedDisk

  init(capacityBytes: UInt64) {
    self.capacityBytes = capacityBytes
    expected = ExpectedDisk(sectors: (capacityBytes + 511) / 512)
  }

  mutating func add(_ offset: UInt64, _ bytes: [UInt8]) {
    precondition(writes.last.map { $0.offset + UInt64($0.bytes.count) <= offset } ?? true)
    writes.append((offset, bytes))
    expected.place(bytes, at: offset)
  }

  mutating func add(_ offset: UInt64, count: Int, seed: UInt8 = 9) {
    add(offset, Pattern.bytes(startingAt: offset, count: count, seed: seed))
  }

  /// Odd pieces of every kind for a disk of at least 3 MiB: sectors inside one grain, a write
  /// across a grain boundary, explicit zeros, a long run holding a zero grain and starting
  /// mid-grain, and a tail that ends exactly at the capacity.
  static func mixed(capacityBytes: UInt64) -> WritePlan {
    var p = WritePlan(capacityBytes: capacityBytes)
    p.add(0, count: 512)
    p.add(1024, count: 1536)
    p.add(64 * 1024 - 512, count: 1024)
    p.add(128 * 1024, [UInt8](repeating: 0, count: 256 * 1024))
    var long = Pattern.bytes(startingAt: 512 * 1024 + 3584, count: 1024 * 1024 + 512, seed: 4)
    // A zero stretch of 512 KiB inside the run: several whole small grains.
    for i in 100_000..<(100_000 + 2 * 1024 * 1024 / 4) where i < long.count { long[i] = 0 }
    p.add(512 * 1024 + 3584, long)
    p.add(2 * 1024 * 1024 + 512 * 3, count: 4096)
    let sectors = (capacityBytes + 511) / 512
    let tailStart = (sectors * 512 - 3000) / 512 * 512
    p.add(tailStart, count: Int(capacityBytes - tailStart))
    return p
  }

  /// Writes the plan through `writer`, then commits.
  func run(_ writer: any ImageWriter) throws {
    for w in writes {
      try w.bytes.withUnsafeBytes { try writer.write(at: w.offset, $0) }
    }
    try writer.commit()
  }
}

/// One image type with the options a case varies.
struct WriterCase: Sendable, CustomTestStringConvertible {
  var type: DiskType
  var grainSectors: UInt64 = 128
  var zeroedGrains = false
  var capacityBytes: UInt64
  /// Small extents, so that small disks still have several.
  var splitSizeBytes: UInt64 = 1 << 20

  var testDescription: String {
    "\(type.rawValue) grain \(grainSectors)\(zeroedGrains ? " zeroed" : "") capacity \(capacityBytes)"
  }

  var options: CreateOptions {
    var o = CreateOptions(type: type, capacityBytes: capacityBytes)
    o.grainSectors = grainSectors
    o.zeroedGrains = zeroedGrains
    o.splitSizeBytes = max(splitSizeBytes, grainSectors * 512)
    return o
  }

  static let odd: UInt64 = 3 * 1024 * 1024 + 1536
  static let even: UInt64 = 4 * 1024 * 1024

  static let all: [WriterCase] = {
    var cases: [WriterCase] = []
    for type in [DiskType.raw, .monolithicFlat, .twoGbMaxExtentFlat, .vmfs, .vmfsThin] {
      for capacity in [odd, even] { cases.append(WriterCase(type: type, capacityBytes: capacity)) }
    }
    for type in [DiskType.monolithicSparse, .twoGbMaxExtentSparse] {
      for grain: UInt64 in [16, 128, 2048] {
        for capacity in [odd, even] {
          cases.append(WriterCase(type: type, grainSectors: grain, capacityBytes: capacity))
        }
      }
      cases.append(WriterCase(type: type, zeroedGrains: true, capacityBytes: odd))
    }
    return cases
  }()
}

/// Every file in `folder`, sorted.
func folderContents(_ folder: String) throws -> [String] {
  try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
}

@Suite struct WriterTests {
  @Test(arguments: WriterCase.all)
  func roundTrip(_ c: WriterCase) throws {
    let folder = try TempFolder()
    let path = folder.path(c.type == .raw ? "disk.img" : "disk.vmdk")
    let plan = WritePlan.mixed(capacityBytes: c.capacityBytes)
    let writer = try ImageCreator.create(path: path, options: c.options)
    #expect(writer.capacityBytes == (c.capacityBytes + 511) / 512 * 512)
    try plan.run(writer)

    let disk = try Disk.open(path)
    #expect(disk.capacityBytes == writer.capacityBytes)
    let back = try disk.read(at: 0, count: Int(disk.capacityBytes))
    #expect(back == plan.expected.bytes)
    #expect(try disk.digest(.sha256) == plan.expected.sha256)
    let report = try disk.check()
    #expect(report.isClean, "\(report.problems) leaked \(report.leakedBytes)")
    #expect(disk.top.createType == c.type.rawValue)
    // No temporary file is left next to the image.
    #expect(try folderContents(folder.path).allSatisfy { !$0.hasPrefix(".") })
  }

  /// The files and extent lines each type makes.
  @Test func fileNames() throws {
    let folder = try TempFolder()
    func make(_ type: DiskType, _ name: String, capacity: UInt64 = 3 << 20) throws {
      var o = CreateOptions(type: type, capacityBytes: capacity)
      o.splitSizeBytes = 1 << 20
      try ImageCreator.create(path: folder.path(name), options: o).commit()
    }
    try make(.raw, "r.img")
    try make(.monolithicFlat, "mf.vmdk")
    try make(.twoGbMaxExtentFlat, "tf.vmdk", capacity: (5 << 19) + 512)
    try make(.vmfs, "v.vmdk")
    try make(.vmfsThin, "vt.vmdk")
    try make(.monolithicSparse, "ms.vmdk")
    try make(.twoGbMaxExtentSparse, "ts.vmdk")
    try make(.monolithicFlat, "noext")
    // A dot in a folder's name is not an extension; a leading dot in the file's name neither.
    try FileManager.default.createDirectory(atPath: folder.path("dir.v"), withIntermediateDirectories: false)
    try make(.twoGbMaxExtentSparse, "dir.v/plain")
    try make(.monolithicFlat, "dir.v/.hidden")
    #expect(
      try folderContents(folder.path("dir.v")) == [
        ".hidden", ".hidden-flat", "plain", "plain-s001", "plain-s002", "plain-s003",
      ])
    #expect(try Disk.open(folder.path("dir.v/plain")).capacityBytes == 3 << 20)
    try FileManager.default.removeItem(atPath: folder.path("dir.v"))
    #expect(
      try folderContents(folder.path) == [
        "mf-flat.vmdk", "mf.vmdk", "ms.vmdk", "noext", "noext-flat", "r.img", "tf-f001.vmdk", "tf-f002.vmdk",
        "tf-f003.vmdk", "tf.vmdk", "ts-s001.vmdk", "ts-s002.vmdk", "ts-s003.vmdk", "ts.vmdk", "v-flat.vmdk",
        "v.vmdk", "vt-flat.vmdk", "vt.vmdk",
      ])
    func extents(_ name: String) throws -> [String] {
      let text = try String(contentsOfFile: folder.path(name), encoding: .utf8)
      return text.split(separator: "\n").filter { $0.hasPrefix("RW ") }.map(String.init)
    }
    #expect(try extents("mf.vmdk") == ["RW 6144 FLAT \"mf-flat.vmdk\" 0"])
    #expect(
      try extents("tf.vmdk") == [
        "RW 2048 FLAT \"tf-f001.vmdk\" 0", "RW 2048 FLAT \"tf-f002.vmdk\" 0", "RW 1025 FLAT \"tf-f003.vmdk\" 0",
      ])
    #expect(try extents("v.vmdk") == ["RW 6144 VMFS \"v-flat.vmdk\""])
    #expect(try extents("vt.vmdk") == ["RW 6144 VMFS \"vt-flat.vmdk\""])
    #expect(try extents("ts.vmdk").count == 3)
    #expect(try String(contentsOfFile: folder.path("v.vmdk"), encoding: .utf8).contains("createType=\"vmfs\""))
    #expect(try String(contentsOfFile: folder.path("vt.vmdk"), encoding: .utf8).contains("createType=\"vmfsThin\""))
    #expect(try String(contentsOfFile: folder.path("vt.vmdk"), encoding: .utf8).contains("ddb.thinProvisioned = \"1\""))
    #expect(try FileManager.default.attributesOfItem(atPath: folder.path("r.img"))[.size] as? UInt64 == 3 << 20)
    #expect(
      try FileManager.default.attributesOfItem(atPath: folder.path("tf-f003.vmdk"))[.size] as? UInt64 == 1025 * 512)
  }

  /// vmfs is preallocated (fallocate), the other flat types are holes but for their data.
  @Test func flatAllocation() throws {
    let folder = try TempFolder()
    func allocated(_ name: String) throws -> UInt64 {
      var st = stat()
      guard stat(folder.path(name), &st) == 0 else { throw VMDKError(.fileNotFound, "no \(name)") }
      return UInt64(st.st_blocks) * 512
    }
    for type in [DiskType.vmfs, .vmfsThin, .monolithicFlat] {
      let writer = try ImageCreator.create(
        path: folder.path("\(type.rawValue).vmdk"), options: CreateOptions(type: type, capacityBytes: 16 << 20))
      var plan = WritePlan(capacityBytes: 16 << 20)
      plan.add(1 << 20, count: 65536)
      plan.add(2 << 20, [UInt8](repeating: 0, count: 1 << 20))
      try plan.run(writer)
      #expect(try Disk.open(folder.path("\(type.rawValue).vmdk")).read(at: 0, count: 16 << 20) == plan.expected.bytes)
    }
    #if os(Linux)
      #expect(try allocated("vmfs-flat.vmdk") >= 16 << 20)
    #endif
    #expect(try allocated("vmfsThin-flat.vmdk") < 1 << 20)
    #expect(try allocated("monolithicFlat-flat.vmdk") < 1 << 20)
  }

  /// The sparse header matches qemu's numbers for 1 GiB (notes Appendix A) and VMware's split
  /// layout (no descriptor fields, RGD at sector 1).
  @Test func sparseHeaders() throws {
    let folder = try TempFolder()
    try ImageCreator.create(
      path: folder.path("m.vmdk"), options: CreateOptions(type: .monolithicSparse, capacityBytes: 1 << 30)
    )
    .commit()
    let m = try SparseExtentHeader(
      parsing: Array(try Data(contentsOf: URL(fileURLWithPath: folder.path("m.vmdk"))).prefix(512)))
    #expect(m.version == 1 && m.flags.rawValue == 3)
    #expect(m.capacitySectors == 2_097_152 && m.grainSectors == 128)
    #expect(m.descriptorOffsetSectors == 1 && m.descriptorSizeSectors == 20)
    #expect(m.rgdOffsetSectors == 21 && m.gdOffsetSectors == 150 && m.overheadSectors == 384)
    #expect(try FileManager.default.attributesOfItem(atPath: folder.path("m.vmdk"))[.size] as? UInt64 == 196_608)

    var o = CreateOptions(type: .twoGbMaxExtentSparse, capacityBytes: 5 << 30)
    o.zeroedGrains = true
    try ImageCreator.create(path: folder.path("t.vmdk"), options: o).commit()
    let s = try SparseExtentHeader(
      parsing: Array(try Data(contentsOf: URL(fileURLWithPath: folder.path("t-s001.vmdk"))).prefix(512)))
    #expect(s.version == 2 && s.flags.rawValue == 7)
    #expect(s.capacitySectors == 4_194_304 && s.descriptorOffsetSectors == 0 && s.descriptorSizeSectors == 0)
    #expect(s.rgdOffsetSectors == 1 && s.gdOffsetSectors == 1 + 1 + 64 * 4 && s.overheadSectors == 640)
    let last = try SparseExtentHeader(
      parsing: Array(try Data(contentsOf: URL(fileURLWithPath: folder.path("t-s003.vmdk"))).prefix(512)))
    #expect(last.capacitySectors == 2_097_152)
  }

  /// A descriptor too long for 20 sectors grows the embedded area instead of being cut.
  @Test func longEmbeddedDescriptor() throws {
    let folder = try TempFolder()
    var o = CreateOptions(type: .monolithicSparse, capacityBytes: 8 << 20)
    o.diskDatabase = (0..<400).map { ("ddb.comment\($0)", String(repeating: "x", count: 40)) }
    let writer = try ImageCreator.create(path: folder.path("d.vmdk"), options: o)
    var plan = WritePlan(capacityBytes: 8 << 20)
    plan.add(0, count: 70_000)
    try plan.run(writer)
    let disk = try Disk.open(folder.path("d.vmdk"))
    #expect(disk.top.descriptor.ddb("ddb.comment399") == String(repeating: "x", count: 40))
    #expect(try disk.read(at: 0, count: 8 << 20) == plan.expected.bytes)
    #expect(try disk.check().isClean)
    let h = try #require(disk.top.sparseHeader)
    #expect(h.descriptorSizeSectors > 20 && h.rgdOffsetSectors == 1 + h.descriptorSizeSectors)
  }

  @Test(arguments: [
    DiskType.raw, .monolithicFlat, .twoGbMaxExtentFlat, .vmfs, .monolithicSparse, .twoGbMaxExtentSparse,
  ])
  func abortLeavesNothing(_ type: DiskType) throws {
    let folder = try TempFolder()
    var o = CreateOptions(type: type, capacityBytes: 3 << 20)
    o.splitSizeBytes = 1 << 20
    let writer = try ImageCreator.create(path: folder.path("a.vmdk"), options: o)
    let data = Pattern.bytes(startingAt: 0, count: 200_000)
    try data.withUnsafeBytes { try writer.write(at: 0, $0) }
    #expect(try !folderContents(folder.path).isEmpty)
    writer.abort()
    writer.abort()
    #expect(try folderContents(folder.path) == [])
  }

  /// A writer let go without commit or abort removes its temporary files too.
  @Test func droppedWriterLeavesNothing() throws {
    let folder = try TempFolder()
    do {
      let writer = try ImageCreator.create(
        path: folder.path("a.vmdk"), options: CreateOptions(type: .monolithicSparse, capacityBytes: 1 << 20))
      _ = writer
    }
    #expect(try folderContents(folder.path) == [])
  }

  @Test(arguments: [
    DiskType.raw, .monolithicFlat, .twoGbMaxExtentFlat, .vmfsThin, .monolithicSparse, .twoGbMaxExtentSparse,
  ])
  func existingOutputRefused(_ type: DiskType) throws {
    let folder = try TempFolder()
    var o = CreateOptions(type: type, capacityBytes: 3 << 20)
    o.splitSizeBytes = 1 << 20
    try folder.write("e.vmdk", text: "keep me")
    let error = #expect(throws: VMDKError.self) { _ = try ImageCreator.create(path: folder.path("e.vmdk"), options: o) }
    #expect(error?.code == .fileExists)
    // Nothing made on the way is left, and the existing file is untouched.
    #expect(try folderContents(folder.path) == ["e.vmdk"])
    #expect(try String(contentsOfFile: folder.path("e.vmdk"), encoding: .utf8) == "keep me")

    // With overwrite, the image replaces it.
    let writer = try ImageCreator.create(path: folder.path("e.vmdk"), options: o, overwrite: true)
    try writer.commit()
    #expect(try Disk.open(folder.path("e.vmdk")).capacityBytes == 3 << 20)
  }

  /// An extent name that exists is refused as well, before anything is written.
  @Test func existingExtentRefused() throws {
    let folder = try TempFolder()
    try folder.write("x-flat.vmdk", text: "keep me")
    let error = #expect(throws: VMDKError.self) {
      _ = try ImageCreator.create(
        path: folder.path("x.vmdk"), options: CreateOptions(type: .monolithicFlat, capacityBytes: 1 << 20))
    }
    #expect(error?.code == .fileExists)
    #expect(try folderContents(folder.path) == ["x-flat.vmdk"])
  }

  @Test(arguments: [DiskType.monolithicFlat, .monolithicSparse])
  func contractEnforced(_ type: DiskType) throws {
    let folder = try TempFolder()
    let writer = try ImageCreator.create(
      path: folder.path("c.vmdk"), options: CreateOptions(type: type, capacityBytes: 1 << 20))
    let data = Pattern.bytes(startingAt: 0, count: 4096)
    try data.withUnsafeBytes { try writer.write(at: 8192, $0) }
    // Backwards, unaligned, past the end.
    for (offset, code) in [
      (UInt64(4096), VMDKError.Code.invalidArgument), (20_000, .invalidArgument), ((1 << 20) - 2048, .outOfRange),
    ] {
      let e = #expect(throws: VMDKError.self) { try data.withUnsafeBytes { try writer.write(at: offset, $0) } }
      #expect(e?.code == code)
    }
    writer.abort()
    #expect(try folderContents(folder.path) == [])
  }

  @Test func streamOptimizedThroughTheCreator() throws {
    let folder = try TempFolder()
    let path = folder.path("s.vmdk")
    let writer = try ImageCreator.create(
      path: path, options: CreateOptions(type: .streamOptimized, capacityBytes: 1 << 20))
    let data = Pattern.bytes(startingAt: 65536, count: 65536)
    try data.withUnsafeBytes { try writer.write(at: 65536, $0) }
    try writer.commit()
    let disk = try Disk.open(path)
    #expect(disk.top.createType == "streamOptimized")
    #expect(try disk.read(at: 65536, count: 65536) == data)
    #expect(try disk.read(at: 0, count: 65536) == [UInt8](repeating: 0, count: 65536))
    #expect(try folderContents(folder.path) == ["s.vmdk"])
  }

  @Test func badOptionsRefused() throws {
    let folder = try TempFolder()
    var o = CreateOptions(type: .monolithicSparse, capacityBytes: 1 << 20)
    o.grainSectors = 100
    let e = #expect(throws: VMDKError.self) { _ = try ImageCreator.create(path: folder.path("b.vmdk"), options: o) }
    #expect(e?.code == .invalidArgument)
  }

  /// Many small writes (one sector each, every other grain zero) coalesce and read back.
  @Test(arguments: [DiskType.monolithicFlat, .monolithicSparse, .twoGbMaxExtentSparse])
  func smallWrites(_ type: DiskType) throws {
    let folder = try TempFolder()
    var o = CreateOptions(type: type, capacityBytes: 6 << 20)
    o.splitSizeBytes = 2 << 20
    let writer = try ImageCreator.create(path: folder.path("w.vmdk"), options: o)
    var plan = WritePlan(capacityBytes: 6 << 20)
    var offset: UInt64 = 0
    while offset < 6 << 20 {
      if (offset / 65536) % 2 == 0 { plan.add(offset, count: 512) }
      offset += 512
    }
    try plan.run(writer)
    let disk = try Disk.open(folder.path("w.vmdk"))
    #expect(try disk.read(at: 0, count: 6 << 20) == plan.expected.bytes)
    #expect(try disk.check().isClean)
  }

  /// A 60 TiB monolithicSparse: tables are only written where data is, the rest are holes, so
  /// creating and committing take seconds and the file's allocated size stays small.
  @Test func hugeSparseStaysSmall() throws {
    let folder = try TempFolder()
    let capacity: UInt64 = 60 << 40
    let path = folder.path("huge.vmdk")
    let started = Date()
    let writer = try ImageCreator.create(
      path: path, options: CreateOptions(type: .monolithicSparse, capacityBytes: capacity))
    var plan: [(UInt64, [UInt8])] = []
    for offset: UInt64 in [0, 1 << 20, 7 << 40, capacity - (3 << 20), capacity - 65536] {
      plan.append((offset, Pattern.bytes(startingAt: offset, count: 65536, seed: 2)))
    }
    for (offset, bytes) in plan { try bytes.withUnsafeBytes { try writer.write(at: offset, $0) } }
    try writer.commit()
    let elapsed = Date().timeIntervalSince(started)
    #expect(elapsed < 20, "create + commit took \(elapsed) s")

    var st = stat()
    #expect(stat(path, &st) == 0)
    let allocated = UInt64(st.st_blocks) * 512
    // Two directories of 8 MiB, a few tables and five grains.
    #expect(allocated < 24 << 20, "allocated \(allocated) bytes")
    let disk = try Disk.open(path)
    #expect(disk.capacityBytes == capacity)
    for (offset, bytes) in plan { #expect(try disk.read(at: offset, count: bytes.count) == bytes) }
    #expect(try disk.read(at: 2 << 20, count: 65536) == [UInt8](repeating: 0, count: 65536))
  }
}
