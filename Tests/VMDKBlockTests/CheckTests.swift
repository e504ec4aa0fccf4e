// `Disk.check()` and `vmdk-inspect check` on damaged copies of a valid sparse image: each
// kind of damage is reported with its kind and the offset of the entry at fault, and a
// clean image is clean.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat

@Suite(.timeLimit(.minutes(20))) struct CheckTests {
  static let base: SparseImage.Built = {
    var image = SparseImage()
    image.capacitySectors = 128 * 600  // two grain tables
    image.descriptor = descriptorText(createType: "monolithicSparse", extents: [#"RW 76800 SPARSE "disk.vmdk""#])
    image.fill([0, 3, 511, 512, 599])
    return image.build()
  }()

  func report(_ built: SparseImage.Built) throws -> CheckReport {
    let folder = try TempFolder()
    let path = try folder.write("disk.vmdk", built.bytes)
    return try Disk.open(path).check()
  }

  @Test func cleanImageIsClean() throws {
    let r = try report(Self.base)
    #expect(r.isClean, "\(r.problems)")
    #expect(r.allocatedGrains == 5)
  }

  /// One damage, the problem kind expected, and the offset it must name.
  static let damages: [Named<@Sendable (inout SparseImage.Built) -> (kind: String, offset: UInt64)>] = [
    Named("directory entry differs from its redundant copy") { b in
      b.bytes.put32(0, at: b.rgdOffset + 4)  // the redundant entry of table 1
      // Which copy is wrong cannot be known; the problem names the primary entry.
      return ("redundant-directory-mismatch", UInt64(b.gdeOffset(1)))
    },
    Named("grain table entry differs from its redundant copy") { b in
      let gt = b.gteOffset(3)
      let rgt = gt - (b.gdOffset - b.rgdOffset)
      b.bytes.put32(0, at: rgt)
      return ("redundant-table-mismatch", UInt64(gt))
    },
    Named("grain entry past the end of the file") { b in
      let at = b.gteOffset(3)
      b.bytes.put32(UInt32(b.bytes.count / 512 + 1000), at: at)
      b.bytes.put32(UInt32(b.bytes.count / 512 + 1000), at: at - (b.gdOffset - b.rgdOffset))
      return ("grain-past-end", UInt64(at))
    },
    Named("grain entry pointing into the metadata") { b in
      let at = b.gteOffset(3)
      b.bytes.put32(1, at: at)
      b.bytes.put32(1, at: at - (b.gdOffset - b.rgdOffset))
      return ("grain-in-metadata", UInt64(at))
    },
    Named("two entries sharing one grain") { b in
      let at = b.gteOffset(3)
      let grain = UInt32(b.grainOffsets[0]! / 512)
      b.bytes.put32(grain, at: at)
      b.bytes.put32(grain, at: at - (b.gdOffset - b.rgdOffset))
      return ("grain-overlap", UInt64(at))
    },
  ]

  @Test(arguments: damages)
  func reportsDamage(_ damage: Named<@Sendable (inout SparseImage.Built) -> (kind: String, offset: UInt64)>) throws {
    var built = Self.base
    let want = damage.value(&built)
    let r = try report(built)
    #expect(!r.isClean)
    let found = r.problems.first { $0.kind == want.kind }
    #expect(found != nil, "\(r.problems)")
    #expect(found?.offset == want.offset, "\(r.problems)")
    #expect(found?.file.hasSuffix("disk.vmdk") == true)
  }

  @Test func leakedGrainIsCounted() throws {
    var built = Self.base
    // Drop the reference to grain 599 in both copies: its 64 KiB stay in the file, unused.
    let at = built.gteOffset(599)
    built.bytes.put32(0, at: at)
    built.bytes.put32(0, at: at - (built.gdOffset - built.rgdOffset))
    let r = try report(built)
    #expect(r.problems.isEmpty, "\(r.problems)")
    #expect(r.leakedBytes == 128 * 512)
    #expect(!r.isClean)
  }

  /// The tool's contract: 0 clean, 1 problems found, 2 not readable.
  @Test func exitStatus() throws {
    let tool = try #require(InspectTool.path, "vmdk-inspect is not built next to the tests")
    let folder = try TempFolder()
    let clean = try folder.write("clean.vmdk", Self.base.bytes)
    var damaged = Self.base
    damaged.bytes.put32(0, at: damaged.rgdOffset + 4)
    let bad = try folder.write("damaged.vmdk", damaged.bytes)
    var unreadable = Self.base
    unreadable.header { $0.grainSectors = 0 }
    let broken = try folder.write("broken.vmdk", unreadable.bytes)

    #expect(try run(tool, ["check", clean]).status == 0)
    let found = try run(tool, ["check", bad, "--json"])
    #expect(found.status == 1)
    let json = try JSONSerialization.jsonObject(with: Data(found.stdout.utf8)) as? [String: Any]
    #expect(json?["clean"] as? Bool == false, "\(found.stdout)")
    let failed = try run(tool, ["check", broken])
    #expect(failed.status == 2)
    #expect(failed.stderr.split(separator: "\n").count == 1)
  }
}
