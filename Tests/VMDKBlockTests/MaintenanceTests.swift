// vmdk-disk's maintenance operations at the library level: resize, compact, defragment,
// repair, rename, delete and cleanup, each on images built from scratch, with the content
// compared byte for byte and `check()` clean afterwards.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

private func content(_ path: String, options: OpenOptions = OpenOptions()) throws -> [UInt8] {
  let d = try Disk.open(path, options: options)
  return try d.read(at: 0, count: Int(d.capacityBytes))
}

private func expectClean(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
  var o = OpenOptions()
  o.singleLink = true
  let r = try Disk.open(path, options: o).check()
  #expect(r.isClean, "\(path): \(r.problems) leaked \(r.leakedBytes)", sourceLocation: sourceLocation)
}

/// Runs `body`, which must throw a VMDKError with `code`.
private func fileSize(_ path: String) throws -> UInt64 {
  (try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber).uint64Value
}

/// A monolithicSparse image of `capacity` sectors with the pattern in `grains`.
private func sparseImage(
  _ folder: TempFolder, name: String = "disk.vmdk", capacity: UInt64 = 4096, grains: [UInt64],
  zeroGrains: [UInt64] = [], zeroed: Set<UInt64> = []
) throws -> (path: String, expected: [UInt8]) {
  var image = SparseImage(capacitySectors: capacity)
  image.descriptor = descriptorText(createType: "monolithicSparse", extents: ["RW \(capacity) SPARSE \"\(name)\""])
  image.fill(grains)
  for g in zeroGrains { image.grains[g] = [UInt8](repeating: 0, count: 65536) }
  image.zeroedGrains = zeroed
  let built = image.build()
  return (try folder.write(name, built.bytes), built.expected.bytes)
}

@Suite(.timeLimit(.minutes(20))) struct MaintenanceTests {
  // MARK: Resize

  @Test func resizeGrowsSparseWithALargerDirectory() throws {
    let folder = try TempFolder()
    let (path, expected) = try sparseImage(folder, grains: [0, 5, 31])
    let r = try Disk.resize(path, to: 300_000 * 512)
    #expect(r.newCapacitySectors == 300_000)
    let disk = try Disk.open(path)
    #expect(disk.capacitySectors == 300_000)
    #expect(disk.top.sparseHeader?.capacitySectors == 300_000)
    #expect(disk.top.descriptor.extents[0].sectors == 300_000)
    #expect(disk.top.descriptor.ddb("ddb.geometry.cylinders") == String(300_000 / (64 * 32)))
    #expect(try content(path) == expected + [UInt8](repeating: 0, count: (300_000 - 4096) * 512))
    try expectClean(path)
    // The grown disk takes writes past the old end.
    var o = OpenOptions()
    o.writable = true
    let w = try Disk.open(path, options: o)
    try w.write(at: 200_000 * 512, [UInt8](repeating: 7, count: 4096))
    try w.close()
    try expectClean(path)
  }

  @Test func growWithRoomInTheDirectoryIsInPlace() throws {
    let folder = try TempFolder()
    // 1000 sectors (a partial last grain with data) to 60000: still inside the one table.
    var image = SparseImage(capacitySectors: 1000)
    image.descriptor = descriptorText(createType: "monolithicSparse", extents: [#"RW 1000 SPARSE "disk.vmdk""#])
    image.fill([0, 7])
    var built = image.build()
    // Garbage in the last grain past the old end must not show after the grow.
    let tail = built.grainOffsets[7]! + (1000 - 7 * 128) * 512
    for i in tail..<(built.grainOffsets[7]! + 65536) { built.bytes[i] = 0xEE }
    let path = try folder.write("disk.vmdk", built.bytes)
    let expected = built.expected.bytes
    let r = try Disk.resize(path, to: 60000 * 512)
    #expect(r.grewInPlace)
    let d = try Disk.open(path)
    #expect(d.capacitySectors == 60000)
    #expect(d.top.sparseHeader?.capacitySectors == 60000)
    #expect(try d.read(at: 0, count: 1000 * 512) == expected)
    #expect(try d.read(at: 1000 * 512, count: 65536) == [UInt8](repeating: 0, count: 65536))
    try expectClean(path)
    // Writes land in the new tables.
    var o = OpenOptions()
    o.writable = true
    let w = try Disk.open(path, options: o)
    try w.write(at: 59000 * 512, [UInt8](repeating: 9, count: 65536))
    try w.close()
    try expectClean(path)
    #expect(try Disk.open(path).read(at: 59000 * 512, count: 4) == [9, 9, 9, 9])
  }

  @Test func shrinkNeedsTheFlagAndNothingPastTheEnd() throws {
    let folder = try TempFolder()
    let (path, expected) = try sparseImage(folder, capacity: 8192, grains: [0, 5, 40])
    expectCode(.invalidArgument) { _ = try Disk.resize(path, to: 2048 * 512) }
    // Grain 40 (sectors 5120..<5248) is past 4096: CANTSHRINK, nothing changed.
    let before = try Data(contentsOf: URL(fileURLWithPath: path))
    expectCode(.invalidArgument) { _ = try Disk.resize(path, to: 4096 * 512, allowShrink: true) }
    #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
    // Past grain 40 it may shrink.
    _ = try Disk.resize(path, to: 6000 * 512, allowShrink: true)
    #expect(try content(path) == Array(expected[0..<(6000 * 512)]))
    try expectClean(path)
  }

  @Test func resizeSplitFlatGrowsAddsAndRemovesExtents() throws {
    let scenario = try WriteImages.twoFlatExtents()
    let path = scenario.path
    let folder = (path as NSString).deletingLastPathComponent
    // The last extent grows (up to VMware's 2 GiB split size).
    _ = try Disk.resize(path, to: 6000 * 512)
    #expect(try fileSize(folder + "/f-f002.vmdk") == (3 + 5000) * 512)
    #expect(try content(path) == scenario.expected + [UInt8](repeating: 0, count: 2000 * 512))
    // Past 2 GiB in the last extent, a new one is added.
    let split: UInt64 = 4_194_304
    _ = try Disk.resize(path, to: (1000 + split + 100) * 512)
    #expect(try fileSize(folder + "/f-f003.vmdk") == 100 * 512)
    let grown = try Disk.open(path)
    #expect(grown.top.descriptor.extents.map(\.sectors) == [1000, split, 100])
    #expect(try grown.read(at: (1000 + split) * 512 - 4096, count: 8192) == [UInt8](repeating: 0, count: 8192))
    // Shrinking over holes (zeros) only: the new extent goes, the last is cut.
    _ = try Disk.resize(path, to: 4000 * 512, allowShrink: true)
    #expect(!FileManager.default.fileExists(atPath: folder + "/f-f003.vmdk"))
    #expect(try fileSize(folder + "/f-f002.vmdk") == (3 + 3000) * 512)
    #expect(try content(path) == scenario.expected)
    // Data past the new end: refused, nothing changed.
    expectCode(.invalidArgument) { _ = try Disk.resize(path, to: 1500 * 512, allowShrink: true) }
    #expect(try content(path) == scenario.expected)
  }

  @Test func resizeSplitSparseGrowsTheLastExtent() throws {
    let scenario = try WriteImages.twoSparseExtents()
    _ = try Disk.resize(scenario.path, to: 9000 * 512)
    #expect(try content(scenario.path) == scenario.expected + [UInt8](repeating: 0, count: 1000 * 512))
    try expectClean(scenario.path)
  }

  @Test func chainsResizeTheTopOnly() throws {
    let scenario = try WriteImages.chain()
    expectCode(.invalidArgument) { _ = try Disk.resize(scenario.path, to: 2048 * 512, allowShrink: true) }
    // Growing the child is fine: past the parent's end it reads zeros.
    _ = try Disk.resize(scenario.path, to: 8192 * 512)
    #expect(try content(scenario.path) == scenario.expected + [UInt8](repeating: 0, count: 4096 * 512))
    // The parent, named by the child, is not resized.
    let base = (scenario.path as NSString).deletingLastPathComponent + "/base.vmdk"
    expectCode(.hasSnapshots) { _ = try Disk.resize(base, to: 8192 * 512) }
  }

  // MARK: Compact and defragment

  @Test func compactDropsZeroGrainsAndKeepsTheContent() throws {
    let folder = try TempFolder()
    let (path, expected) = try sparseImage(folder, capacity: 65536, grains: [0, 7, 300], zeroGrains: [1, 2, 3, 400])
    let before = try fileSize(path)
    let digest = try Disk.open(path).digest()
    let r = try Disk.compact(path)
    #expect(r.zeroGrainsDropped == 4)
    #expect(r.grainsStored == 3)
    #expect(try fileSize(path) < before)
    #expect(try Disk.open(path).digest() == digest)
    #expect(try content(path) == expected)
    #expect(try Disk.open(path).top.descriptor.cid == 0xFFFF_FFFE)
    try expectClean(path)
  }

  @Test func compactKeepsZeroGrainsThatHideTheParent() throws {
    let folder = try TempFolder()
    var base = SparseImage(capacitySectors: 4096)
    base.descriptor = descriptorText(
      createType: "monolithicSparse", cid: "0badcafe", extents: [#"RW 4096 SPARSE "base.vmdk""#])
    base.fill([0, 3, 4])
    try folder.write("base.vmdk", base.build().bytes)
    var child = SparseImage(capacitySectors: 4096)
    child.descriptor = descriptorText(
      createType: "monolithicSparse", cid: "00c0ffee", parentCID: "0badcafe", parentHint: "base.vmdk",
      extents: [#"RW 4096 SPARSE "child.vmdk""#])
    child.fill([1])
    let zeros = [UInt8](repeating: 0, count: 65536)
    child.grains[3] = zeros  // hides the parent's grain 3
    child.grains[9] = zeros  // over nothing: may go
    let path = try folder.write("child.vmdk", child.build().bytes)
    let digest = try Disk.open(path).digest()
    let r = try Disk.compact(path)
    #expect(r.zeroGrainsDropped == 1)
    #expect(try Disk.open(path).digest() == digest)
    let d = try Disk.open(path)
    #expect(try d.read(at: 3 * 65536, count: 65536) == zeros)
    #expect(d.top.descriptor.parentFileNameHint == "base.vmdk")
    #expect(d.top.descriptor.parentCID == 0x0bad_cafe)
    try expectClean(path)
  }

  @Test func compactTurnsHidingZeroGrainsIntoZeroedEntries() throws {
    let folder = try TempFolder()
    var base = SparseImage(capacitySectors: 4096)
    base.descriptor = descriptorText(
      createType: "monolithicSparse", cid: "0badcafe", extents: [#"RW 4096 SPARSE "base.vmdk""#])
    base.fill([2, 3])
    try folder.write("base.vmdk", base.build().bytes)
    var child = SparseImage(capacitySectors: 4096)
    child.descriptor = descriptorText(
      createType: "monolithicSparse", cid: "00c0ffee", parentCID: "0badcafe", parentHint: "base.vmdk",
      extents: [#"RW 4096 SPARSE "child.vmdk""#])
    child.zeroedGrains = [2]
    child.grains[3] = [UInt8](repeating: 0, count: 65536)
    let path = try folder.write("child.vmdk", child.build().bytes)
    let digest = try Disk.open(path).digest()
    _ = try Disk.compact(path)
    let d = try Disk.open(path)
    #expect(try d.digest() == digest)
    let status = try d.blockStatus()
    // Grains 2 and 3 are zero at depth 0 (zeroed-grain entries), not the parent's data.
    #expect(status.contains { $0.start == 2 * 65536 && $0.length == 2 * 65536 && $0.depth == 0 && $0.zero })
    try expectClean(path)
  }

  @Test func defragmentPutsGrainsInOrder() throws {
    let folder = try TempFolder()
    let (path, _) = try sparseImage(folder, capacity: 8192, grains: [])
    var o = OpenOptions()
    o.writable = true
    let w = try Disk.open(path, options: o)
    for g in [60, 9, 33, 2] as [UInt64] {
      try w.write(at: g * 65536, [UInt8](repeating: UInt8(g), count: 65536))
    }
    try w.close()
    let digest = try Disk.open(path).digest()
    func offsets() throws -> [UInt64] { try Disk.open(path).blockStatus().filter(\.data).compactMap(\.offset) }
    #expect(try offsets() != offsets().sorted())
    _ = try Disk.defragment(path)
    #expect(try offsets() == offsets().sorted())
    #expect(try Disk.open(path).digest() == digest)
    try expectClean(path)
  }

  @Test func compactRefusesAWriterHoldingTheDisk() throws {
    let folder = try TempFolder()
    let (path, _) = try sparseImage(folder, grains: [1])
    var o = OpenOptions()
    o.writable = true
    let w = try Disk.open(path, options: o)
    expectCode(.alreadyLocked) { _ = try Disk.compact(path) }
    try w.close()
  }

  // MARK: Repair

  static let repairBase: SparseImage.Built = {
    var image = SparseImage()
    image.capacitySectors = 128 * 600
    image.descriptor = descriptorText(createType: "monolithicSparse", extents: [#"RW 76800 SPARSE "disk.vmdk""#])
    image.fill([0, 3, 511, 512, 599])
    return image.build()
  }()

  /// A damage, and the grains whose content is lost by it.
  static let damages: [Named<@Sendable (inout SparseImage.Built) -> [UInt64]>] = [
    Named("redundant directory entry cleared") { b in
      b.bytes.put32(0, at: b.rgdOffset + 4)
      return []
    },
    Named("directory entry past the end") { b in
      b.bytes.put32(0x00FF_FFFF, at: b.gdeOffset(1))
      return []
    },
    Named("directory entry pointing into the header") { b in
      b.bytes.put32(0, at: b.gdeOffset(0))
      b.bytes.put32(0, at: b.gdeOffset(0) + 0)
      b.bytes.put32(1, at: b.gdeOffset(1))
      return []
    },
    Named("grain table entry past the end (both copies)") { b in
      let gt = b.gteOffset(3)
      b.bytes.put32(0x00FF_FFFF, at: gt)
      b.bytes.put32(0x00FF_FFFF, at: gt - (b.gdOffset - b.rgdOffset))
      return [3]
    },
    Named("redundant grain table entry differs") { b in
      let rgt = b.gteOffset(511) - (b.gdOffset - b.rgdOffset)
      b.bytes.put32(0x00FF_FFFF, at: rgt)
      return []
    },
    Named("primary grain table entry past the end") { b in
      b.bytes.put32(0x00FF_FFFF, at: b.gteOffset(512))
      return []
    },
    Named("leaked tail") { b in
      b.bytes += [UInt8](repeating: 0xAB, count: 3 * 65536)
      return []
    },
  ]

  @Test(arguments: damages)
  func repairMakesCheckClean(damage: Named<@Sendable (inout SparseImage.Built) -> [UInt64]>) throws {
    var built = Self.repairBase
    let lost = damage.value(&built)
    let folder = try TempFolder()
    let path = try folder.write("disk.vmdk", built.bytes)
    #expect(try !Disk.open(path).check().isClean)
    let report = try Disk.repair(path)
    #expect(report.isClean, "\(report.unrepaired)")
    #expect(!report.fixed.isEmpty)
    try expectClean(path)
    var expected = built.expected.bytes
    for g in lost {
      expected.replaceSubrange(Int(g * 65536)..<Int((g + 1) * 65536), with: [UInt8](repeating: 0, count: 65536))
      #expect(report.lost.contains { $0.contains("bytes \(g * 65536)..<") }, "\(report.lost)")
    }
    #expect(try content(path) == expected)
  }

  @Test func repairReportsOverlapsAndLeavesThem() throws {
    var built = Self.repairBase
    // Grain 3 and grain 0 at the same place, in both copies: which one is right is unknown.
    let sector = UInt32(built.grainOffsets[0]! / 512)
    let delta = built.gdOffset - built.rgdOffset
    built.bytes.put32(sector, at: built.gteOffset(3))
    built.bytes.put32(sector, at: built.gteOffset(3) - delta)
    let folder = try TempFolder()
    let path = try folder.write("disk.vmdk", built.bytes)
    let report = try Disk.repair(path)
    #expect(!report.isClean)
    #expect(report.unrepaired.contains { $0.contains("grain-overlap") })
  }

  // MARK: Rename and delete

  @Test func renameMovesEveryFileAndUpdatesChildren() throws {
    let scenario = try WriteImages.chain()
    let folder = (scenario.path as NSString).deletingLastPathComponent
    let sidecar = folder + "/base-changes.vtrack"
    try Data([1, 2, 3]).write(to: URL(fileURLWithPath: sidecar))
    let r = try Disk.rename(folder + "/base.vmdk", to: folder + "/renamed.vmdk")
    #expect(r.children == [scenario.path])
    #expect(!FileManager.default.fileExists(atPath: folder + "/base.vmdk"))
    #expect(!FileManager.default.fileExists(atPath: sidecar))
    #expect(FileManager.default.fileExists(atPath: folder + "/renamed-changes.vtrack"))
    let child = try Disk.open(scenario.path)
    #expect(child.links[1].path.hasSuffix("renamed.vmdk"))
    #expect(child.top.descriptor.parentFileNameHint == "renamed.vmdk")
    #expect(try child.read(at: 0, count: scenario.expected.count) == scenario.expected)
    #expect(try Disk.open(folder + "/renamed.vmdk").top.descriptor.extents[0].fileName == "renamed.vmdk")
    try expectClean(folder + "/renamed.vmdk")
  }

  @Test func renameRefusesWhileAChildIsOpenForWriting() throws {
    let scenario = try WriteImages.chain()
    let folder = (scenario.path as NSString).deletingLastPathComponent
    var o = OpenOptions()
    o.writable = true
    let child = try Disk.open(scenario.path, options: o)
    expectCode(.alreadyLocked) { _ = try Disk.rename(folder + "/base.vmdk", to: folder + "/other.vmdk") }
    #expect(FileManager.default.fileExists(atPath: folder + "/base.vmdk"))
    #expect(!FileManager.default.fileExists(atPath: folder + "/other.vmdk"))
    try child.close()
  }

  @Test func renameSplitDiskRenamesExtents() throws {
    let scenario = try WriteImages.twoSparseExtents()
    let folder = (scenario.path as NSString).deletingLastPathComponent
    _ = try Disk.rename(scenario.path, to: folder + "/e.vmdk")
    let names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
    #expect(names == ["e-s001.vmdk", "e-s002.vmdk", "e.vmdk"])
    #expect(try content(folder + "/e.vmdk") == scenario.expected)
  }

  @Test func renameRefusesATakenName() throws {
    let scenario = try WriteImages.twoSparseExtents()
    let folder = (scenario.path as NSString).deletingLastPathComponent
    try Data([0]).write(to: URL(fileURLWithPath: folder + "/e-s002.vmdk"))
    expectCode(.fileExists) { _ = try Disk.rename(scenario.path, to: folder + "/e.vmdk") }
    #expect(try content(scenario.path) == scenario.expected)
  }

  @Test func deleteRefusesAParentUnlessForced() throws {
    let scenario = try WriteImages.chain()
    let folder = (scenario.path as NSString).deletingLastPathComponent
    let base = folder + "/base.vmdk"
    expectCode(.hasSnapshots) { _ = try Disk.delete(base) }
    #expect(FileManager.default.fileExists(atPath: base))
    // The child itself has no children.
    _ = try Disk.delete(scenario.path)
    #expect(!FileManager.default.fileExists(atPath: scenario.path))
    _ = try Disk.delete(base)
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder).isEmpty)
  }

  @Test func deleteForcedAndSplit() throws {
    let chain = try WriteImages.chain()
    let folder = (chain.path as NSString).deletingLastPathComponent
    let r = try Disk.delete(folder + "/base.vmdk", force: true)
    #expect(r.children == [chain.path])
    let split = try WriteImages.twoSparseExtents()
    let splitFolder = (split.path as NSString).deletingLastPathComponent
    try Data([1]).write(to: URL(fileURLWithPath: Disk.sidecarPath(for: split.path)))
    _ = try Disk.delete(split.path)
    #expect(try FileManager.default.contentsOfDirectory(atPath: splitFolder).isEmpty)
  }

  // MARK: Cleanup

  @Test func cleanupRemovesDeadWritersFilesOnly() throws {
    let folder = try TempFolder()
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/true")
    try p.run()
    p.waitUntilExit()
    let dead = p.processIdentifier
    let deadFile = try folder.write(".disk.vmdk.tmp-\(dead)-1a2b", [1])
    let liveFile = try folder.write(".disk.vmdk.tmp-\(getpid())-3c4d", [1])
    let other = try folder.write(".notours.tmp", [1])
    #expect(Cleanup.writerPID(inTemporaryName: ".disk.vmdk.tmp-\(dead)-1a2b") == dead)
    #expect(Cleanup.writerPID(inTemporaryName: "disk.vmdk") == nil)
    let r = try Cleanup.run(folders: [folder.path])
    #expect(r.removed == [deadFile])
    #expect(r.keptLive == [liveFile])
    #expect(!FileManager.default.fileExists(atPath: deadFile))
    #expect(FileManager.default.fileExists(atPath: liveFile))
    #expect(FileManager.default.fileExists(atPath: other))
  }
}
