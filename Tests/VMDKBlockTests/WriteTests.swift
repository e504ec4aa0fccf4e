// Writing in place through the library: random writes at odd offsets and lengths, mirrored in
// an in-memory model, read back equal, after reopening too; the CID changes once per open
// that writes; check() stays clean; refused writes say why with the right code and leave the
// files alone; a second writer is locked out (in this process and from another one); readers
// running during writes see old or new grains, never garbage; a crash between a grain's data
// and its table leaves a readable image with at most a leaked grain.

import Foundation
import Synchronization
import Testing
import VMDKFormat
import VMDKTransport

@testable import VMDKBlock

/// A small, seeded random generator (SplitMix64), so that a failing case can be replayed.
struct SeededRandom: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// A disk image on which writes are tried, and what it reads as before any write.
struct WriteScenario: Sendable {
  /// The path to open.
  let path: String
  let expected: [UInt8]
  /// Whether check() must report no leaked bytes after writes.
  let sparse: Bool
  /// The folder, kept alive for the test.
  let folder: TempFolderBox
}

final class TempFolderBox: Sendable {
  nonisolated(unsafe) let folder: TempFolder
  init(_ f: TempFolder) { folder = f }
}

enum WriteImages {
  /// monolithicSparse with three grain tables, a partial last grain, data and zeroed grains.
  static func monolithicSparse() throws -> WriteScenario {
    let capacity: UInt64 = 2 * 65536 + 1000
    var image = SparseImage(capacitySectors: capacity)
    image.descriptor = descriptorText(createType: "monolithicSparse", extents: ["RW \(capacity) SPARSE \"disk.vmdk\""])
    image.fill([0, 1, 5, 600, (capacity + 127) / 128 - 1])
    image.zeroedGrains = [2, 513]
    let folder = try TempFolder()
    let built = image.build()
    let path = try folder.write("disk.vmdk", built.bytes)
    return WriteScenario(path: path, expected: built.expected.bytes, sparse: true, folder: TempFolderBox(folder))
  }

  /// A descriptor file and two bare sparse extents of odd sizes (the first ends mid-grain).
  static func twoSparseExtents() throws -> WriteScenario {
    let folder = try TempFolder()
    var a = SparseImage(capacitySectors: 3000)
    a.descriptor = nil
    a.fill([1, 23])
    var b = SparseImage(capacitySectors: 5000)
    b.descriptor = nil
    b.fill([0, 7])
    let ba = a.build()
    let bb = b.build()
    try folder.write("d-s001.vmdk", ba.bytes)
    try folder.write("d-s002.vmdk", bb.bytes)
    let path = try folder.write(
      "d.vmdk",
      text: descriptorText(
        createType: "twoGbMaxExtentSparse", cid: "12345678",
        extents: [#"RW 3000 SPARSE "d-s001.vmdk""#, #"RW 5000 SPARSE "d-s002.vmdk""#]))
    return WriteScenario(
      path: path, expected: ba.expected.bytes + bb.expected.bytes, sparse: true, folder: TempFolderBox(folder))
  }

  /// Two flat extents, the second at an offset of 3 sectors in its file.
  static func twoFlatExtents() throws -> WriteScenario {
    let folder = try TempFolder()
    let a = Pattern.bytes(startingAt: 0, count: 1000 * 512)
    let b = Pattern.bytes(startingAt: 1000 * 512, count: 3000 * 512)
    try folder.write("f-f001.vmdk", a)
    try folder.write("f-f002.vmdk", [UInt8](repeating: 0xEE, count: 3 * 512) + b)
    let path = try folder.write(
      "f.vmdk",
      text: descriptorText(
        createType: "twoGbMaxExtentFlat", cid: "0000abcd",
        extents: [#"RW 1000 FLAT "f-f001.vmdk" 0"#, #"RW 3000 FLAT "f-f002.vmdk" 3"#]))
    return WriteScenario(path: path, expected: a + b, sparse: false, folder: TempFolderBox(folder))
  }

  /// A child (monolithicSparse) over a parent with data: partial-grain writes copy the parent.
  static func chain() throws -> WriteScenario {
    let folder = try TempFolder()
    var base = SparseImage(capacitySectors: 4096)
    base.descriptor = descriptorText(
      createType: "monolithicSparse", cid: "0badcafe", extents: [#"RW 4096 SPARSE "base.vmdk""#])
    base.fill([0, 3, 4, 5, 31])
    let bb = base.build()
    try folder.write("base.vmdk", bb.bytes)
    var child = SparseImage(capacitySectors: 4096)
    child.descriptor = descriptorText(
      createType: "monolithicSparse", cid: "00c0ffee", parentCID: "0badcafe", parentHint: "base.vmdk",
      extents: [#"RW 4096 SPARSE "child.vmdk""#])
    child.grains[4] = [UInt8](repeating: 0x44, count: 65536)
    let cb = child.build()
    let path = try folder.write("child.vmdk", cb.bytes)
    var expected = bb.expected.bytes
    expected.replaceSubrange((4 * 65536)..<(5 * 65536), with: [UInt8](repeating: 0x44, count: 65536))
    return WriteScenario(path: path, expected: expected, sparse: true, folder: TempFolderBox(folder))
  }

  static let all: [Named<@Sendable () throws -> WriteScenario>] = [
    Named("monolithicSparse", monolithicSparse), Named("twoSparseExtents", twoSparseExtents),
    Named("twoFlatExtents", twoFlatExtents), Named("chain", chain),
  ]
}

func writableOptions() -> OpenOptions {
  var o = OpenOptions()
  o.writable = true
  return o
}

/// The CID in the top link's descriptor as the file has it now.
func cidOnDisk(_ path: String) throws -> UInt32? {
  try Disk.open(
    path,
    options: {
      var o = OpenOptions()
      o.singleLink = true
      o.ignoreCIDMismatch = true
      return o
    }()
  )
  .top.descriptor.cid
}

@Suite(.timeLimit(.minutes(20))) struct WriteTests {
  @Test(arguments: WriteImages.all)
  func randomWritesMatchModel(make: Named<@Sendable () throws -> WriteScenario>) throws {
    let scenario = try make.value()
    var model = scenario.expected
    let size = UInt64(model.count)
    var rng = SeededRandom(seed: 0x5EED_0001)
    let cidBefore = try cidOnDisk(scenario.path)
    do {
      let disk = try Disk.open(scenario.path, options: writableOptions())
      #expect(disk.isWritable)
      // Reading before writing changes nothing, the CID included.
      #expect(try disk.read(at: 0, count: model.count) == model)
      #expect(try cidOnDisk(scenario.path) == cidBefore)
      for round in 0..<300 {
        // Mostly small odd writes; some span grains, tables and extents.
        let length = Int(
          round % 10 == 0 ? UInt64.random(in: 60_000...300_000, using: &rng) : UInt64.random(in: 1...9000, using: &rng))
        let n = min(UInt64(length), size)
        let offset = UInt64.random(in: 0...(size - n), using: &rng)
        let fill = UInt8(truncatingIfNeeded: round &* 37 &+ 1)
        let data = (0..<Int(n)).map { UInt8(truncatingIfNeeded: Int(fill) &+ $0 / 512) }
        try disk.write(at: offset, data)
        model.replaceSubrange(Int(offset)..<Int(offset + n), with: data)
        if round % 25 == 0 {
          let at = UInt64.random(in: 0..<size, using: &rng)
          let count = Int(min(size - at, 200_000))
          #expect(try disk.read(at: at, count: count) == Array(model[Int(at)..<(Int(at) + count)]))
        }
      }
      #expect(try disk.read(at: 0, count: model.count) == model)
      try disk.flush()
      try disk.close()
      #expect(!disk.isWritable)
      // A write after close fails and changes nothing.
      #expect(throws: VMDKError.self) { try disk.write(at: 0, [1, 2, 3]) }
    }
    let reopened = try Disk.open(scenario.path)
    #expect(try reopened.read(at: 0, count: model.count) == model)
    let report = try reopened.check()
    #expect(report.problems.isEmpty, "\(report.problems)")
    if scenario.sparse { #expect(report.leakedBytes == 0) }
    // The CID changed once, to a valid value.
    let cidAfter = try cidOnDisk(scenario.path)
    #expect(cidAfter != cidBefore)
    #expect(cidAfter != 0xFFFF_FFFF && cidAfter != 0xFFFF_FFFE)
    // An open that only reads leaves it; the next open that writes changes it again.
    do {
      let disk = try Disk.open(scenario.path, options: writableOptions())
      _ = try disk.read(at: 0, count: 4096)
    }
    #expect(try cidOnDisk(scenario.path) == cidAfter)
    do {
      let disk = try Disk.open(scenario.path, options: writableOptions())
      try disk.write(at: 5, [9])
      try disk.write(at: 7, [9])
      #expect(disk.currentCID != cidAfter)
      #expect(try cidOnDisk(scenario.path) == disk.currentCID)
    }
    #expect(try cidOnDisk(scenario.path) != cidAfter)
  }

  /// The chain's parent is never written, and the child's parentCID still matches it.
  @Test func chainParentUntouched() throws {
    let scenario = try WriteImages.chain()
    let folder = scenario.folder.folder
    let parentBefore = try Data(contentsOf: URL(fileURLWithPath: folder.path("base.vmdk")))
    do {
      let disk = try Disk.open(scenario.path, options: writableOptions())
      try disk.write(at: 3 * 65536 + 700, [UInt8](repeating: 0x77, count: 100))
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: folder.path("base.vmdk"))) == parentBefore)
    var model = scenario.expected
    model.replaceSubrange((3 * 65536 + 700)..<(3 * 65536 + 800), with: [UInt8](repeating: 0x77, count: 100))
    #expect(try Disk.open(scenario.path).read(at: 0, count: model.count) == model)
    // The whole grain now lives in the child.
    let status = try Disk.open(scenario.path).blockStatus()
    #expect(status.contains { $0.depth == 0 && $0.data && $0.start <= 3 * 65536 && $0.start + $0.length >= 4 * 65536 })
  }

  /// Writes that reach a grain past the ones a directory entry of 0 covers: new tables at the
  /// end of the file, both copies, then the directories.
  @Test func writeIntoRegionWithoutTable() throws {
    let capacity: UInt64 = 3 * 65536
    var image = SparseImage(capacitySectors: capacity)
    image.descriptor = descriptorText(createType: "monolithicSparse", extents: ["RW \(capacity) SPARSE \"g.vmdk\""])
    image.fill([0])
    var built = image.build()
    // No table for the second region, as VMware's stream writer leaves it.
    built.bytes.put32(0, at: built.gdeOffset(1))
    built.bytes.put32(0, at: built.rgdOffset + 4)
    let folder = try TempFolder()
    let path = try folder.write("g.vmdk", built.bytes)
    var model = built.expected.bytes
    let at = 65536 * 512 + 1234
    let data = [UInt8](repeating: 0xAB, count: 70_000)
    do {
      let disk = try Disk.open(path, options: writableOptions())
      #expect(try disk.read(at: UInt64(at), count: 10) == [UInt8](repeating: 0, count: 10))
      try disk.write(at: UInt64(at), data)
      model.replaceSubrange(at..<(at + data.count), with: data)
      #expect(try disk.read(at: 0, count: model.count) == model)
    }
    let disk = try Disk.open(path)
    #expect(try disk.read(at: 0, count: model.count) == model)
    let report = try disk.check()
    #expect(report.problems.isEmpty, "\(report.problems)")
    // The new tables take 4 KiB at the end; the next grain starts at a grain boundary, so
    // what lies between is not pointed at (as in qemu, which rounds new grains up too).
    #expect(report.leakedBytes < 65536)
    if let qemu = QemuImg.path {
      let r = try run(qemu, ["check", "-f", "vmdk", path])
      #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }
  }

  /// Every refusal comes before anything is written, with its code and the file named.
  @Test func refusedWrites() throws {
    let folder = try TempFolder()
    func files() throws -> [String: Data] {
      var out: [String: Data] = [:]
      for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) {
        out[name] = try Data(contentsOf: URL(fileURLWithPath: folder.path(name)))
      }
      return out
    }
    func expectRefused(
      _ code: VMDKError.Code, _ path: String, at offset: UInt64 = 0, count: Int = 512, naming file: String? = nil,
      options: OpenOptions = writableOptions(), sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
      let before = try files()
      let disk = try Disk.open(path, options: options)
      let error = #expect(throws: VMDKError.self, sourceLocation: sourceLocation) {
        try disk.write(at: offset, [UInt8](repeating: 1, count: count))
      }
      #expect(error?.code == code, "\(String(describing: error))", sourceLocation: sourceLocation)
      if let file {
        #expect(error?.file?.hasSuffix(file) == true, "\(String(describing: error))", sourceLocation: sourceLocation)
      }
      #expect(try files() == before, "a refused write changed a file", sourceLocation: sourceLocation)
    }

    // streamOptimized: only appends at or after the end of data (grain 3 ends at 4 grains),
    // with a message that says so; an append is read back after a reopen.
    var stream = StreamImage()
    stream.descriptor = descriptorText(createType: "streamOptimized", extents: [#"RW 2048 SPARSE "s.vmdk""#])
    stream.fill([0, 3])
    let s = try folder.write("s.vmdk", stream.build().bytes)
    try expectRefused(.notSupported, s, naming: "s.vmdk")
    try expectRefused(.notSupported, s, at: 3 * 65536 + 512, naming: "s.vmdk")
    do {
      let disk = try Disk.open(s, options: writableOptions())
      let e = #expect(throws: VMDKError.self) { try disk.write(at: 0, [1]) }
      #expect(
        e?.message == "streamOptimized disks accept only sequential appends at or after byte 262144; this write is at 0"
      )
      try disk.write(at: 2048 * 512 - 512, [UInt8](repeating: 7, count: 512))
      try disk.close()
      var back = [UInt8](repeating: 0, count: 1024)
      try back.withUnsafeMutableBytes { try Disk.open(s).read(at: 2048 * 512 - 1024, into: $0) }
      #expect(back == [UInt8](repeating: 0, count: 512) + [UInt8](repeating: 7, count: 512))
    }

    // RDONLY and NOACCESS extents; a ZERO extent; COWD and seSparse.
    try folder.write("flat-a.bin", [UInt8](repeating: 0, count: 100 * 512))
    try folder.write("flat-b.bin", [UInt8](repeating: 0, count: 100 * 512))
    let mixed = try folder.write(
      "mixed.vmdk",
      text: descriptorText(
        createType: "monolithicFlat",
        extents: [
          #"RW 100 FLAT "flat-a.bin" 0"#, #"RDONLY 100 FLAT "flat-b.bin" 0"#, "RW 100 ZERO",
          #"NOACCESS 100 FLAT "flat-a.bin" 0"#,
        ]))
    try expectRefused(.fileReadOnly, mixed, at: 100 * 512, naming: "flat-b.bin")
    // A write that starts in the writable extent and runs into the RDONLY one: nothing written.
    try expectRefused(.fileReadOnly, mixed, at: 99 * 512, count: 1024, naming: "flat-b.bin")
    try expectRefused(.notSupported, mixed, at: 200 * 512)
    try expectRefused(.fileReadOnly, mixed, at: 300 * 512)

    var cowd = COWDImage(grainSectors: 16)
    cowd.fill([0])
    try folder.write("c-delta.vmdk", cowd.build().bytes)
    let c = try folder.write(
      "c.vmdk",
      text: descriptorText(
        createType: "vmfsSparse", extents: ["RW \(cowd.capacitySectors) VMFSSPARSE \"c-delta.vmdk\""]))
    try expectRefused(.notSupported, c, naming: "c-delta.vmdk")
    var se = SESparseImage()
    se.fill([0])
    try folder.write("e-sesparse.vmdk", se.build().bytes)
    let e = try folder.write(
      "e.vmdk",
      text: descriptorText(createType: "seSparse", extents: ["RW \(se.capacitySectors) SESPARSE \"e-sesparse.vmdk\""]))
    try expectRefused(.notSupported, e, naming: "e-sesparse.vmdk")

    // Opened read-only; past the end.
    var plain = SparseImage()
    plain.descriptor = descriptorText(createType: "monolithicSparse", extents: [#"RW 4096 SPARSE "p.vmdk""#])
    let p = try folder.write("p.vmdk", plain.build().bytes)
    try expectRefused(.fileReadOnly, p, options: OpenOptions())
    try expectRefused(.outOfRange, p, at: 4096 * 512 - 100, count: 101)
    try expectRefused(.outOfRange, p, at: UInt64.max - 10, count: 1)
  }

  /// A raw image is written in place; it has no descriptor, so no CID.
  @Test func rawImageInPlace() throws {
    let folder = try TempFolder()
    let original = Pattern.bytes(startingAt: 0, count: 64 * 512)
    let path = try folder.write("disk.img", original)
    var model = original
    do {
      let disk = try Disk.open(path, options: writableOptions())
      try disk.write(at: 511, [1, 2, 3])
      try disk.write(at: 64 * 512 - 1, [4])
      model.replaceSubrange(511..<514, with: [1, 2, 3])
      model[64 * 512 - 1] = 4
      try disk.flush()
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(model))
  }

  /// A descriptor reached through a symbolic link: the CID goes into the file it names, and
  /// the link stays a link.
  @Test func descriptorThroughSymlink() throws {
    let scenario = try WriteImages.twoFlatExtents()
    let folder = scenario.folder.folder
    let link = try folder.symlink("alias.vmdk", to: scenario.path)
    let before = try cidOnDisk(scenario.path)
    do {
      let disk = try Disk.open(link, options: writableOptions())
      try disk.write(at: 0, [1])
    }
    #expect(try cidOnDisk(scenario.path) != before)
    let attributes = try FileManager.default.attributesOfItem(atPath: link)
    #expect(attributes[.type] as? FileAttributeType == .typeSymbolicLink)
  }

  // MARK: Locking

  @Test func secondWriterInThisProcessIsLocked() throws {
    let scenario = try WriteImages.twoSparseExtents()
    let writer = try Disk.open(scenario.path, options: writableOptions())
    let error = #expect(throws: VMDKError.self) { _ = try Disk.open(scenario.path, options: writableOptions()) }
    #expect(error?.code == .alreadyLocked)
    #expect(error?.code.rawValue == 15)
    #expect(error?.file?.hasSuffix("d.vmdk") == true, "\(String(describing: error))")
    // A reader still opens, and sees what the writer wrote.
    try writer.write(at: 1000, [1, 2, 3])
    let reader = try Disk.open(scenario.path)
    #expect(try reader.read(at: 1000, count: 3) == [1, 2, 3])
    // A descriptor rename (the CID) keeps the lock: the extents stay locked too.
    #expect(throws: VMDKError.self) { _ = try Disk.open(scenario.path, options: writableOptions()) }
    try writer.close()
    let next = try Disk.open(scenario.path, options: writableOptions())
    try next.write(at: 0, [4])
  }

  /// The lock is released when the writer goes away, without close().
  @Test func lockReleasedOnDeinit() throws {
    let scenario = try WriteImages.monolithicSparse()
    do {
      let disk = try Disk.open(scenario.path, options: writableOptions())
      try disk.write(at: 0, [1])
    }
    _ = try Disk.open(scenario.path, options: writableOptions())
  }

  @Test func secondWriterInAnotherProcessIsLocked() async throws {
    let scenario = try WriteImages.monolithicSparse()
    let writer = try Disk.open(scenario.path, options: writableOptions())
    try writer.write(at: 0, [7])
    let path = scenario.path
    await #expect(processExitsWith: .success) { [path = path as String] in
      do {
        var o = OpenOptions()
        o.writable = true
        _ = try Disk.open(path, options: o)
        exit(1)  // not locked out: wrong
      } catch let e as VMDKError where e.code == .alreadyLocked {
        // A reader opens fine in the other process too.
        guard (try? Disk.open(path).read(at: 0, count: 1)) == [7] else { exit(3) }
        exit(0)
      } catch {
        exit(2)
      }
    }
    withExtendedLifetime(writer) {}
  }

  // MARK: Readers during writes

  /// One grain's content at version `v`: every 8-byte word is (grain, version).
  static func grainContent(_ grain: UInt64, _ version: UInt64) -> [UInt8] {
    let word = (grain << 32 | version).littleEndian
    return (0..<(65536 / 8)).flatMap { _ in withUnsafeBytes(of: word) { Array($0) } }
  }

  /// Whole-grain writes while readers loop: on the writer's own handle and on a second,
  /// read-only handle. On the writer's handle every grain read is one version of that grain
  /// (or zeros, before its first write), never a mix: reads and writes are ordered there. A
  /// second handle reads the file while it changes, so an overwrite in place may be seen half
  /// done (the page cache gives no more); it still only ever sees that grain's own data.
  @Test func readersDuringWritesSeeWholeGrains() throws {
    let folder = try TempFolder()
    var image = SparseImage(capacitySectors: 64 * 128)
    image.descriptor = descriptorText(createType: "monolithicSparse", extents: [#"RW 8192 SPARSE "r.vmdk""#])
    let path = try folder.write("r.vmdk", image.build().bytes)
    let writer = try Disk.open(path, options: writableOptions())
    let other = try Disk.open(path)
    let shared = ReaderState()
    let check: @Sendable (Disk, UInt64, Bool) -> Void = { disk, seed, whole in
      var rng = SeededRandom(seed: seed)
      while !shared.done.load(ordering: .acquiring) {
        let g = UInt64.random(in: 0..<64, using: &rng)
        do {
          let bytes = try disk.read(at: g * 65536, count: 65536)
          let first = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
          let ok = bytes.withUnsafeBytes { raw in
            (0..<(65536 / 8)).allSatisfy {
              let word = raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)
              return whole
                ? word == first && (first == 0 || UInt64(littleEndian: first) >> 32 == g)
                : word == 0 || UInt64(littleEndian: word) >> 32 == g
            }
          }
          if !ok { shared.bad.withLock { $0.append("grain \(g) read a mix or garbage") } }
          shared.reads.add(1, ordering: .relaxed)
        } catch {
          shared.bad.withLock { $0.append("grain \(g): \(error)") }
        }
      }
    }
    for (i, disk) in [writer, other].enumerated() {
      Thread {
        check(disk, UInt64(i + 1), i == 0)
        shared.finished.add(1, ordering: .releasing)
      }.start()
    }
    var rng = SeededRandom(seed: 99)
    var versions = [UInt64](repeating: 0, count: 64)
    for _ in 0..<400 {
      let g = UInt64.random(in: 0..<64, using: &rng)
      versions[Int(g)] += 1
      try writer.write(at: g * 65536, Self.grainContent(g, versions[Int(g)]))
    }
    shared.done.store(true, ordering: .releasing)
    while shared.finished.load(ordering: .acquiring) < 2 { usleep(1000) }
    #expect(shared.bad.withLock { $0 }.isEmpty, "\(shared.bad.withLock { $0.prefix(5) })")
    #expect(shared.reads.load(ordering: .relaxed) > 0)
    // The writer's handle reads the last versions.
    for g in 0..<64 where versions[g] > 0 {
      #expect(try writer.read(at: UInt64(g) * 65536, count: 65536) == Self.grainContent(UInt64(g), versions[g]))
    }
    // A read-only open made now reads them too.
    let fresh = try Disk.open(path)
    for g in 0..<64 where versions[g] > 0 {
      #expect(try fresh.read(at: UInt64(g) * 65536, count: 65536) == Self.grainContent(UInt64(g), versions[g]))
    }
  }

  /// Writers on several threads share one handle: they are serialized, nothing is lost.
  @Test func concurrentWritersOnOneHandle() throws {
    let scenario = try WriteImages.monolithicSparse()
    let disk = try Disk.open(scenario.path, options: writableOptions())
    let shared = ReaderState()
    for t in 0..<4 {
      Thread {
        for i in 0..<40 {
          // Thread t owns grains t, t+4, ...; a third of the writes are whole grains, the rest partial.
          let grain = UInt64(t + 4 * (i % 30))
          let bytes = [UInt8](repeating: UInt8(t * 50 + i % 50), count: i % 3 == 0 ? 65536 : 30_000)
          do { try disk.write(at: grain * 65536 + (i % 3 == 0 ? 0 : 1000), bytes) } catch {
            shared.bad.withLock { $0.append("\(error)") }
          }
        }
        shared.finished.add(1, ordering: .releasing)
      }.start()
    }
    while shared.finished.load(ordering: .acquiring) < 4 { usleep(1000) }
    #expect(shared.bad.withLock { $0 }.isEmpty)
    var model = scenario.expected
    // Replay in each thread's order: threads own different grains, so the order between
    // threads does not matter.
    for t in 0..<4 {
      for i in 0..<40 {
        let grain = t + 4 * (i % 30)
        let count = i % 3 == 0 ? 65536 : 30_000
        let at = grain * 65536 + (i % 3 == 0 ? 0 : 1000)
        model.replaceSubrange(at..<(at + count), with: [UInt8](repeating: UInt8(t * 50 + i % 50), count: count))
      }
    }
    #expect(try disk.read(at: 0, count: model.count) == model)
    try disk.close()
    let report = try Disk.open(scenario.path).check()
    #expect(report.isClean, "\(report.problems) \(report.leakedBytes)")
  }

  // MARK: Crash between data and table

  @Test func crashBetweenDataAndTableLeaksAtMostAGrain() throws {
    let scenario = try WriteImages.monolithicSparse()
    let size = try FileManager.default.attributesOfItem(atPath: scenario.path)[.size] as! UInt64
    do {
      let disk = try Disk.open(scenario.path, options: writableOptions())
      disk.setWriteStop(.afterGrainData)
      // Grain 10 is unallocated: its data goes to the end of the file, its table entry never.
      try disk.write(at: 10 * 65536, [UInt8](repeating: 0x5C, count: 65536))
    }
    let grew = try FileManager.default.attributesOfItem(atPath: scenario.path)[.size] as! UInt64
    #expect(grew > size)
    let disk = try Disk.open(scenario.path)
    #expect(try disk.read(at: 0, count: scenario.expected.count) == scenario.expected)
    let report = try disk.check()
    #expect(report.problems.isEmpty, "\(report.problems)")
    #expect(report.leakedBytes > 0 && report.leakedBytes <= 65536, "\(report.leakedBytes)")
    // The leaked grain is not reused by mistake: the next write appends after it.
    do {
      let w = try Disk.open(scenario.path, options: writableOptions())
      try w.write(at: 10 * 65536, [UInt8](repeating: 0x5D, count: 65536))
    }
    var model = scenario.expected
    model.replaceSubrange((10 * 65536)..<(11 * 65536), with: [UInt8](repeating: 0x5D, count: 65536))
    #expect(try Disk.open(scenario.path).read(at: 0, count: model.count) == model)
    #expect(try Disk.open(scenario.path).check().problems.isEmpty)
  }
}

/// What the reader threads share.
final class ReaderState: Sendable {
  let done = Atomic<Bool>(false)
  let bad = Locked<[String]>([])
  let reads = Atomic<Int>(0)
  let finished = Atomic<Int>(0)
}
