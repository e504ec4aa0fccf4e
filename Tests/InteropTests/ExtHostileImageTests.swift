// Hostile ext images: a real mke2fs image with bytes patched through debugfs, read by us.
// Each gives a typed error (or a warning), never a trap.
import Foundation
import Testing
import VMDKBlock
import VMDKFiles

@Suite struct ExtHostileImageTests {
  static func image(_ dir: String, _ setup: [String]) throws -> String {
    let src = "\(dir)/src"
    try FileManager.default.createDirectory(atPath: "\(src)/d", withIntermediateDirectories: true)
    try ExtOracle.write("\(src)/d/f", ExtOracle.content(50_000, seed: 1))
    let image = "\(dir)/raw.img"
    try runChecked(try requireTool("mke2fs"), ["-q", "-F", "-t", "ext4", "-b", "4096", "-d", src, image, "32M"])
    for command in setup { try runChecked(try requireTool("debugfs"), ["-w", "-R", command, image]) }
    return image
  }

  static func code(_ body: () throws -> Void) -> VMDKError.Code? {
    do {
      try body()
      return nil
    } catch let e as VMDKError {
      return e.code
    } catch {
      return .failure
    }
  }

  @Test func needsRecoveryIsAWarning() throws {
    try withTemporaryFolder { dir in
      let image = try Self.image(dir, ["feature needs_recovery"])
      let fs = try #require(try ExtFileSystem.probe(try ExtRawVolume(image)))
      #expect(fs.warnings.contains { $0.contains("needs recovery") })
      #expect(try fs.list(fs.root).contains { $0.displayName == "d" })
    }
  }

  @Test func extentDepthBeyondTheCapIsRefused() throws {
    try withTemporaryFolder { dir in
      // i_block starts with the extent header; eh_depth is its u16 at byte 6 (block[1]'s high half).
      let image = try Self.image(dir, ["sif /d/f block[1] 0x00070004"])
      let fs = try #require(try ExtFileSystem.probe(try ExtRawVolume(image)))
      let d = try #require(try fs.list(fs.root).first { $0.displayName == "d" })
      let f = try #require(try fs.list(d.id).first { $0.displayName == "f" })
      var buffer = [UInt8](repeating: 0, count: 100)
      #expect(
        Self.code { _ = try buffer.withUnsafeMutableBytes { try fs.read(f.id, at: 0, into: $0) } } == .fileSystemLimit)
    }
  }

  @Test func aPatchedSuperblockIsMineButBroken() throws {
    try withTemporaryFolder { dir in
      let image = try Self.image(dir, ["ssv log_block_size 9"])
      #expect(Self.code { _ = try ExtFileSystem.probe(try ExtRawVolume(image)) } == .fileSystemLimit)
      let other = "\(dir)/zero.img"
      try ExtOracle.write(other, Data(count: 1 << 20))
      #expect(try ExtFileSystem.probe(try ExtRawVolume(other)) == nil)
    }
  }
}
