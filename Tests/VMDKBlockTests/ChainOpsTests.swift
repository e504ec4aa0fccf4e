// Chain operations through the library, on images ImageCreator makes: a snapshot reads as its
// parent and takes writes; commit leaves the parent reading what the chain read; a safe rebase
// keeps what the child reads, an unsafe one only relinks (same capacities only); the restore
// guard counts the snapshots that name a disk with its CID; ddb keys round-trip.

import Foundation
import Testing
import VMDKFormat
import VMDKTransport

@testable import VMDKBlock

enum ChainOps {
  /// A new image with `writes` (offset, bytes) in increasing order, committed.
  static func make(
    _ path: String, type: DiskType = .monolithicSparse, capacity: UInt64 = 4 << 20,
    writes: [(UInt64, [UInt8])] = []
  ) throws {
    var o = CreateOptions(type: type, capacityBytes: capacity)
    o.splitSizeBytes = 1 << 20
    let w = try ImageCreator.create(path: path, options: o)
    for (at, bytes) in writes { try bytes.withUnsafeBytes { try w.write(at: at, $0) } }
    try w.commit()
  }

  static func write(_ path: String, _ writes: [(UInt64, [UInt8])], options: OpenOptions = OpenOptions()) throws {
    var o = options
    o.writable = true
    let disk = try Disk.open(path, options: o)
    for (at, bytes) in writes { try disk.write(at: at, bytes) }
    try disk.close()
  }

  static func content(_ path: String, options: OpenOptions = OpenOptions()) throws -> [UInt8] {
    let disk = try Disk.open(path, options: options)
    return try disk.read(at: 0, count: Int(disk.capacityBytes))
  }

  static func bytes(_ value: UInt8, _ count: Int) -> [UInt8] { [UInt8](repeating: value, count: count) }

  /// The files' bytes, to show that an operation left them alone.
  static func snapshotFiles(_ folder: String, _ names: [String]) throws -> [String: Data] {
    var out: [String: Data] = [:]
    for n in names { out[n] = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + n)) }
    return out
  }
}

/// `model` with `bytes` placed at `at`.
private func apply(_ model: inout [UInt8], _ writes: [(UInt64, [UInt8])]) {
  for (at, bytes) in writes { model.replaceSubrange(Int(at)..<(Int(at) + bytes.count), with: bytes) }
}

@Suite struct ChainOpsTests {
  @Test(arguments: [false, true])
  func snapshotWritesCommit(split: Bool) throws {
    let f = try TempFolder()
    let base = f.path("base.vmdk")
    let baseWrites: [(UInt64, [UInt8])] = [
      (0, Pattern.bytes(startingAt: 0, count: 1 << 20)), (2 << 20, ChainOps.bytes(0x12, 65536)),
    ]
    try ChainOps.make(base, writes: baseWrites)
    var model = [UInt8](repeating: 0, count: 4 << 20)
    apply(&model, baseWrites)
    let baseCID = try Disk.open(base).top.descriptor.cid

    let child = f.path("child.vmdk")
    try Disk.createSnapshot(of: base, at: child, split: split)
    let chain = try Disk.open(child)
    #expect(chain.links.count == 2)
    #expect(chain.top.descriptor.parentCID == baseCID)
    #expect(chain.top.descriptor.parentFileNameHint == "base.vmdk")
    #expect(chain.top.createType == (split ? "twoGbMaxExtentSparse" : "monolithicSparse"))
    #expect(chain.capacityBytes == 4 << 20)
    #expect(chain.top.descriptor.ddb("adapterType") == "lsilogic")
    #expect(try chain.top.descriptor.ddb("uuid") != Disk.open(base).top.descriptor.ddb("uuid"))
    #expect(try chain.read(at: 0, count: 4 << 20) == model, "a new snapshot reads as its parent")
    // An existing child is refused.
    #expect(throws: VMDKError.self) { try Disk.createSnapshot(of: base, at: child) }

    // Data at odd offsets, and zeros that hide the parent's second region.
    let childWrites: [(UInt64, [UInt8])] = [
      (700_000, ChainOps.bytes(0xAB, 100_000)), (2 << 20, ChainOps.bytes(0, 65536)),
      ((4 << 20) - 1000, ChainOps.bytes(0xCD, 1000)),
    ]
    try ChainOps.write(child, childWrites)
    apply(&model, childWrites)
    #expect(try ChainOps.content(child) == model)
    let childFiles = try FileManager.default.contentsOfDirectory(atPath: f.path).filter { $0.hasPrefix("child") }
    let before = try ChainOps.snapshotFiles(f.path, childFiles)

    let result = try Disk.commit(child)
    #expect(result.dataBytes > 0)
    // Zeros written through Disk.write are stored as data grains, so they are copied as data
    // (zeroed-grain entries take the zero path: the interop tests make them with qemu-io).
    #expect(result.dataBytes >= 100_000 + 65536 + 1000)
    #expect(try ChainOps.content(base) == model, "the parent alone reads what the chain read")
    #expect(try Disk.open(base).check().isClean)
    #expect(try ChainOps.snapshotFiles(f.path, childFiles) == before, "the child is left as it was")
    // The parent changed: the child's parentCID is stale, as after qemu-img commit.
    #expect(throws: VMDKError.self) { try Disk.open(child) }
    var ignore = OpenOptions()
    ignore.ignoreCIDMismatch = true
    #expect(try ChainOps.content(child, options: ignore) == model)
    // A stale child does not hold the parent back.
    try ChainOps.write(base, [(0, ChainOps.bytes(1, 512))])
  }

  @Test func commitRefusals() throws {
    let f = try TempFolder()
    let base = f.path("base.vmdk")
    try ChainOps.make(base, writes: [(0, ChainOps.bytes(1, 65536))])
    expectError(.invalidArgument) { try Disk.commit(base) }
    try Disk.createSnapshot(of: base, at: f.path("a.vmdk"))
    try Disk.createSnapshot(of: base, at: f.path("b.vmdk"))
    try ChainOps.write(f.path("a.vmdk"), [(0, ChainOps.bytes(2, 512))])
    let e = expectError(.hasSnapshots) { try Disk.commit(f.path("a.vmdk")) }
    #expect(e?.message.contains("b.vmdk") == true, "names the other snapshot: \(e?.message ?? "")")
    #expect(try ChainOps.content(base).prefix(512) == ChainOps.bytes(1, 512)[...], "nothing written")
  }

  @Test func rebaseSafeKeepsContent() throws {
    let f = try TempFolder()
    let a = f.path("a.vmdk")
    try ChainOps.make(a, writes: [(0, Pattern.bytes(startingAt: 0, count: 2 << 20))])
    let mid = f.path("mid.vmdk")
    try Disk.createSnapshot(of: a, at: mid)
    try ChainOps.write(mid, [(1 << 20, ChainOps.bytes(0x21, 300_000)), (3 << 20, ChainOps.bytes(0x22, 4096))])
    let top = f.path("top.vmdk")
    try Disk.createSnapshot(of: mid, at: top)
    try ChainOps.write(top, [(10_000, ChainOps.bytes(0x31, 20_000)), (3 << 20 + 512, ChainOps.bytes(0, 1024))])
    let want = try ChainOps.content(top)

    // The new parent: other data, some of it equal to the old chain's.
    let b = f.path("b.vmdk")
    try ChainOps.make(
      b, writes: [(0, Pattern.bytes(startingAt: 0, count: 1 << 20)), (2 << 20, ChainOps.bytes(0x77, 1 << 20))])
    let bCID = try Disk.open(b).top.descriptor.cid
    let result = try Disk.rebase(top, onto: b)
    #expect(result.copiedBytes > 0)
    #expect(result.copiedBytes < 4 << 20, "equal sectors are not copied")
    let after = try Disk.open(top)
    #expect(after.links.count == 2)
    #expect(after.top.descriptor.parentFileNameHint == "b.vmdk")
    #expect(after.top.descriptor.parentCID == bCID)
    #expect(try after.read(at: 0, count: 4 << 20) == want, "the child reads the same")
    #expect(try after.check().isClean)

    // No parent: everything the old parent provided is copied in.
    try Disk.rebase(top, onto: nil)
    let alone = try Disk.open(top)
    #expect(alone.links.count == 1)
    #expect(alone.top.descriptor.parentCID == Descriptor.noParentCID)
    #expect(alone.top.descriptor.parentFileNameHint == nil)
    #expect(try alone.read(at: 0, count: 4 << 20) == want)
  }

  @Test func rebaseIntoSubfolderUsesRelativeHint() throws {
    let f = try TempFolder()
    try FileManager.default.createDirectory(atPath: f.path("bases"), withIntermediateDirectories: true)
    let a = f.path("bases/a.vmdk")
    try ChainOps.make(a, writes: [(0, ChainOps.bytes(9, 65536))])
    let child = f.path("child.vmdk")
    try Disk.createSnapshot(of: a, at: child)
    let d = try Disk.open(child)
    #expect(d.top.descriptor.parentFileNameHint == "bases/a.vmdk")
    #expect(try d.read(at: 0, count: 65536) == ChainOps.bytes(9, 65536))
  }

  @Test func rebaseUnsafe() throws {
    let f = try TempFolder()
    let a = f.path("a.vmdk")
    try ChainOps.make(a, writes: [(0, ChainOps.bytes(0x11, 1 << 20))])
    let child = f.path("child.vmdk")
    try Disk.createSnapshot(of: a, at: child)
    try ChainOps.write(child, [(65536, ChainOps.bytes(0x22, 65536))])
    let small = f.path("small.vmdk")
    try ChainOps.make(small, capacity: 2 << 20)
    let before = try ChainOps.snapshotFiles(f.path, ["child.vmdk"])
    let e = expectError(.invalidArgument) { try Disk.rebase(child, onto: small, unsafe: true) }
    #expect(e?.message.contains("capacity") == true)
    #expect(try ChainOps.snapshotFiles(f.path, ["child.vmdk"]) == before, "a refused rebase changes nothing")

    let b = f.path("b.vmdk")
    try ChainOps.make(b, writes: [(0, ChainOps.bytes(0x55, 1 << 20))])
    let cid = try Disk.open(child).top.descriptor.cid
    try Disk.rebase(child, onto: b, unsafe: true)
    let d = try Disk.open(child)
    #expect(d.top.descriptor.parentFileNameHint == "b.vmdk")
    #expect(d.top.descriptor.cid == cid, "relinking writes no content: the CID stays")
    var want = ChainOps.bytes(0x55, 1 << 20)
    want.replaceSubrange(65536..<131072, with: ChainOps.bytes(0x22, 65536))
    #expect(try d.read(at: 0, count: 1 << 20) == want, "the child's grains over the new parent")

    // Unsafe also relinks a child whose parent is gone.
    try FileManager.default.removeItem(atPath: b)
    try Disk.rebase(child, onto: a, unsafe: true)
    #expect(try Disk.open(child).links.count == 2)
  }

  @Test func restoreGuard() throws {
    let f = try TempFolder()
    let base = f.path("base.vmdk")
    try ChainOps.make(base, writes: [(0, ChainOps.bytes(1, 4096))])
    try ChainOps.write(base, [(0, ChainOps.bytes(2, 512))])  // no snapshot yet: allowed
    try Disk.createSnapshot(of: base, at: f.path("s1.vmdk"))
    try Disk.createSnapshot(of: base, at: f.path("s2.vmdk"), split: true)
    // Not counted: a snapshot of base in another folder, a snapshot of another disk, a text file.
    try FileManager.default.createDirectory(atPath: f.path("sub"), withIntermediateDirectories: true)
    try Disk.createSnapshot(of: base, at: f.path("sub/elsewhere.vmdk"))
    try ChainOps.make(f.path("other.vmdk"))
    try Disk.createSnapshot(of: f.path("other.vmdk"), at: f.path("s3.vmdk"))
    try f.write("notes.vmdk", text: "not a disk\n")

    #expect(try RestoreGuard.snapshots(of: base).map { ($0 as NSString).lastPathComponent } == ["s1.vmdk", "s2.vmdk"])
    let before = try ChainOps.snapshotFiles(f.path, ["base.vmdk"])
    var o = OpenOptions()
    o.writable = true
    let e = expectError(.hasSnapshots) { _ = try Disk.open(base, options: o) }
    #expect(e?.code.rawValue == 20021)
    #expect(e?.message.contains("2 snapshots") == true, "\(e?.message ?? "")")
    #expect(e?.message.contains("s1.vmdk, s2.vmdk") == true)
    #expect(e?.message.contains("commit or delete them, or restore to another place") == true)
    #expect(try ChainOps.snapshotFiles(f.path, ["base.vmdk"]) == before)
    // Read-only opens and the snapshots themselves are not affected.
    _ = try Disk.open(base)
    try ChainOps.write(f.path("s1.vmdk"), [(0, ChainOps.bytes(3, 512))])
    // The override commit uses.
    o.allowWritingUnderSnapshots = true
    try Disk.open(base, options: o).close()
  }

  @Test(arguments: [DiskType.monolithicSparse, .twoGbMaxExtentSparse, .monolithicFlat])
  func metadataRoundTrip(type: DiskType) throws {
    let f = try TempFolder()
    let path = f.path("disk.vmdk")
    try ChainOps.make(path, type: type, writes: [(0, ChainOps.bytes(7, 65536))])
    try Disk.createSnapshot(of: path, at: f.path("snap.vmdk"))
    let cid = try Disk.open(path).top.descriptor.cid
    #expect(try Disk.topMetadata(path: path, key: "comment") == nil)
    #expect(try Disk.setMetadata(path: path, key: "ddb.comment", value: "backup 2026-11-26") == false)
    #expect(try Disk.topMetadata(path: path, key: "comment") == "backup 2026-11-26")
    #expect(try Disk.open(path).metadata("comment") == "backup 2026-11-26")
    try Disk.setMetadata(path: path, key: "adapterType", value: "buslogic")
    #expect(try Disk.open(path).metadata("adapterType") == "buslogic")
    #expect(try Disk.open(path).top.descriptor.cid == cid, "metadata is not content: the CID stays")
    #expect(try Disk.setMetadata(path: path, key: "comment", value: nil) == true)
    #expect(try Disk.topMetadata(path: path, key: "ddb.comment") == nil)
    #expect(try Disk.setMetadata(path: path, key: "comment", value: nil) == false)
    #expect(try ChainOps.content(path).prefix(65536) == ChainOps.bytes(7, 65536)[...])
    #expect(try Disk.open(f.path("snap.vmdk")).links.count == 2, "the snapshot still opens")
    expectError(.invalidArgument) { try Disk.setMetadata(path: path, key: "comment", value: "a \"quote\"") }
    expectError(.invalidArgument) { try Disk.setMetadata(path: path, key: "bad key", value: "x") }
  }

  /// Hand-written children: hints that leave the folder, symbolic links and stale CIDs do
  /// not count; a hint spelled with ./ or through the folder's own name does.
  @Test func restoreGuardHints() throws {
    let f = try TempFolder()
    let base = f.path("base.vmdk")
    try ChainOps.make(base)
    let cid = Descriptor.formatCID(try #require(Disk.open(base).top.descriptor.cid))
    let folderName = (f.path as NSString).lastPathComponent
    func child(_ hint: String, parentCID: String = cid) -> String {
      """
      # Disk DescriptorFile
      version=1
      CID=12345678
      parentCID=\(parentCID)
      createType="monolithicSparse"
      parentFileNameHint="\(hint)"

      # Extent description
      RW 8192 SPARSE "missing.vmdk"

      """
    }
    try f.write("a.vmdk", text: child("./base.vmdk"))
    try f.write("b.vmdk", text: child("../\(folderName)/base.vmdk"))
    try f.write("c.vmdk", text: child(base))
    try f.write("d.vmdk", text: child("../base.vmdk"))
    try f.write("e.vmdk", text: child("base.vmdk", parentCID: "00000001"))
    try f.write("f.txt", text: child("base.vmdk"))
    try f.symlink("g.vmdk", to: f.path("a.vmdk"))
    #expect(
      try RestoreGuard.snapshots(of: base).map { ($0 as NSString).lastPathComponent } == ["a.vmdk", "b.vmdk", "c.vmdk"])
  }

  @Test func intervals() {
    #expect(Intervals.union([(5, 10), (0, 3), (3, 4), (9, 12)]).map { [$0.0, $0.1] } == [[0, 4], [5, 12]])
    #expect(
      Intervals.intersect([(0, 10), (20, 30)], [(5, 25), (28, 40)]).map { [$0.0, $0.1] } == [
        [5, 10], [20, 25], [28, 30],
      ])
  }
}

/// Runs `body`, which must throw a VMDKError with `code`.
@discardableResult
private func expectError(
  _ code: VMDKError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> VMDKError? {
  do {
    try body()
    Issue.record("expected \(code), nothing thrown", sourceLocation: sourceLocation)
  } catch let e as VMDKError {
    #expect(e.code == code, "wrong error: \(e)", sourceLocation: sourceLocation)
    return e
  } catch {
    Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
  }
  return nil
}
