// Hostile bytes for the ext parsers: each cap and each self-contradiction gives a typed
// VMDKError (.fileSystemLimit or .corruptFileSystem), never a trap.
import Testing
import VMDKBlock

@testable import VMDKFiles

@Suite struct ExtHostileTests {
  /// A consistent 4 KiB-block superblock: 8192 blocks, one group, 128 inodes of 256 bytes.
  static func superblock(_ patch: (inout [UInt8]) -> Void = { _ in }) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 1024)
    func put32(_ o: Int, _ v: UInt32) { for i in 0..<4 { b[o + i] = UInt8(v >> (8 * UInt32(i)) & 0xFF) } }
    func put16(_ o: Int, _ v: UInt16) {
      b[o] = UInt8(v & 0xFF)
      b[o + 1] = UInt8(v >> 8)
    }
    put32(0x00, 128)
    put32(0x04, 8192)
    put32(0x18, 2)
    put32(0x1C, 2)
    put32(0x20, 32768)
    put32(0x24, 32768)
    put32(0x28, 128)
    put16(0x38, 0xEF53)
    put32(0x4C, 1)
    put32(0x54, 11)
    put16(0x58, 256)
    put32(0x60, 0x2)
    patch(&b)
    return b
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

  @Test func aConsistentSuperblockParses() throws {
    let sb = try ExtSuperblock(parsing: Self.superblock(), volumeSize: 8192 * 4096)
    #expect(sb.blockSize == 4096 && sb.groupCount == 1 && sb.inodeSize == 256 && sb.kind == "ext2")
  }

  @Test func blockSizeBeyond64KiBIsACap() {
    let raw = Self.superblock { $0[0x18] = 7 }
    #expect(Self.code { _ = try ExtSuperblock(parsing: raw, volumeSize: 1 << 40) } == .fileSystemLimit)
  }

  @Test func inodeLargerThanABlockIsACap() {
    let raw = Self.superblock {
      $0[0x58] = 0x00
      $0[0x59] = 0x20
    }  // 8192 > 4096
    #expect(Self.code { _ = try ExtSuperblock(parsing: raw, volumeSize: 1 << 40) } == .fileSystemLimit)
  }

  @Test func inodeSizeNotAPowerOfTwoIsCorrupt() {
    let raw = Self.superblock {
      $0[0x58] = 200
      $0[0x59] = 0
    }
    #expect(Self.code { _ = try ExtSuperblock(parsing: raw, volumeSize: 1 << 40) } == .corruptFileSystem)
  }

  @Test func unknownIncompatibleFeatureIsNotSupported() {
    let raw = Self.superblock { $0[0x62] = 0x80 }  // 0x800000
    #expect(Self.code { _ = try ExtSuperblock(parsing: raw, volumeSize: 1 << 40) } == .notSupported)
  }

  /// An extent header of `depth` with one entry, in 60 bytes of i_block.
  static func extentRoot(depth: UInt16, entries: UInt16 = 1, max: UInt16 = 4) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 60)
    b[0] = 0x0A
    b[1] = 0xF3
    b[2] = UInt8(entries)
    b[4] = UInt8(max)
    b[6] = UInt8(depth)
    b[12] = 0  // ei_block / ee_block 0
    b[16] = 100  // ei_leaf_lo / ee_start_hi..: child or length
    b[20] = depth == 0 ? 100 : 0  // leaf: ee_start_lo; index: ei_leaf_hi
    return b
  }

  @Test func extentDepthBeyondFiveIsACap() {
    #expect(
      Self.code {
        _ = try ExtExtentNode.parse(
          ExtBytes(Self.extentRoot(depth: 6)), expectedDepth: nil, blocksCount: 1000, inode: 12)
      } == .fileSystemLimit)
    #expect(
      Self.code {
        _ = try ExtExtentNode.parse(
          ExtBytes(Self.extentRoot(depth: 5)), expectedDepth: nil, blocksCount: 1000, inode: 12)
      } == nil)
  }

  @Test func extentChildOfTheWrongDepthIsCorrupt() {
    #expect(
      Self.code {
        _ = try ExtExtentNode.parse(ExtBytes(Self.extentRoot(depth: 2)), expectedDepth: 0, blocksCount: 1000, inode: 12)
      } == .corruptFileSystem)
  }

  @Test func extentHeaderClaimingMoreEntriesThanFitIsCorrupt() {
    #expect(
      Self.code {
        _ = try ExtExtentNode.parse(
          ExtBytes(Self.extentRoot(depth: 0, entries: 5, max: 5)), expectedDepth: nil, blocksCount: 1000, inode: 12)
      } == .corruptFileSystem)
  }

  @Test func directoryRecordOverrunningItsBlockIsCorrupt() {
    var block = [UInt8](repeating: 0, count: 1024)
    block[0] = 12  // inode 12
    block[4] = 0x10
    block[5] = 0x04  // rec_len 1040 > 1024
    block[6] = 1
    block[7] = 1
    block[8] = 0x61
    var out: [DirectoryEntry] = []
    #expect(
      Self.code {
        try ExtDirectory.parse(
          ExtBytes(block), start: 0, end: 1024, blockSize: 1024, hasFileType: true, inodesCount: 100, directory: 2,
          into: &out)
      } == .corruptFileSystem)
    block[4] = 0x00  // rec_len 1024: one entry "a"
    #expect(
      Self.code {
        try ExtDirectory.parse(
          ExtBytes(block), start: 0, end: 1024, blockSize: 1024, hasFileType: true, inodesCount: 100, directory: 2,
          into: &out)
      } == nil)
    #expect(out == [DirectoryEntry(name: [0x61], id: 12, type: .regular)])
  }

  @Test func inlineDataValueOverrunningTheInodeIsCorrupt() {
    var raw = [UInt8](repeating: 0, count: 256)
    let start = 160
    raw[start] = 0x00
    raw[start + 1] = 0x00
    raw[start + 2] = 0x02
    raw[start + 3] = 0xEA
    let e = start + 4
    raw[e] = 4  // name_len
    raw[e + 1] = 7  // system.
    raw[e + 8] = 0xFF  // value_size 255: past the inode
    for (i, c) in "data".utf8.enumerated() { raw[e + 16 + i] = c }
    #expect(
      Self.code { _ = try ExtInode.inlineDataValue(ExtBytes(raw), xattrStart: start, number: 12) } == .corruptFileSystem
    )
  }
}
