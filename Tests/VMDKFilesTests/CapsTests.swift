// Every cap on what a guest's metadata may claim, through the public readers: hostile bytes
// patched into a small valid image built here, each giving a typed VMDKError that names the
// image and the byte offset of the field at fault, in well under a second.
import Testing
import VMDKBlock

@testable import VMDKFiles

/// A 512 KiB ext2-style volume built byte by byte: 1 KiB blocks, one group, 32 inodes of
/// 256 bytes, filetype and extents. Root (inode 2, block map, block 20) holds:
/// - "file" (12): 3000 bytes in blocks 30-32 (block map);
/// - "sub" (13): a folder with an extent tree (one leaf extent, block 40);
/// - "ind" (14): a block-mapped file whose single indirect block is 50 (-> data 60) and
///   whose double indirect block is 51 (-> 52 -> data 61);
/// - "ext" (15): a regular file with a one-extent leaf root (block 62).
struct TinyExt {
  static let blockSize = 1024
  static let blocks = 512
  static let inodeSize = 256
  static let inodeTable = 5
  static let name = "caps-ext.img"
  var bytes = [UInt8](repeating: 0, count: blocks * blockSize)

  static func inodeOffset(_ n: Int) -> Int { inodeTable * blockSize + (n - 1) * inodeSize }
  static func block(_ b: Int) -> Int { b * blockSize }
  /// Byte of the indirect-file's data at logical block `l` (a pattern).
  static let fileContent: [UInt8] = (0..<3000).map { UInt8(($0 * 7) % 253) }

  init() {
    let sb = 1024
    bytes.put32(sb + 0x00, 32)  // inodes
    bytes.put32(sb + 0x04, UInt32(Self.blocks))
    bytes.put32(sb + 0x14, 1)  // first data block
    bytes.put32(sb + 0x18, 0)  // 1 KiB blocks
    bytes.put32(sb + 0x1C, 0)
    bytes.put32(sb + 0x20, 8192)
    bytes.put32(sb + 0x24, 8192)
    bytes.put32(sb + 0x28, 32)
    bytes.put16(sb + 0x38, 0xEF53)
    bytes.put16(sb + 0x3A, 1)
    bytes.put32(sb + 0x4C, 1)
    bytes.put32(sb + 0x54, 11)
    bytes.put16(sb + 0x58, UInt16(Self.inodeSize))
    bytes.put32(sb + 0x60, 0x42)  // filetype, extents
    // Group descriptor 0 in block 2: the inode table.
    bytes.put32(Self.block(2) + 0x08, UInt32(Self.inodeTable))

    putInode(2, mode: 0o040755, size: 1024, links: 3, blockMap: [20])
    putDirectory(
      block: 20, self: 2, parent: 2,
      [("file", 12, 1), ("sub", 13, 2), ("ind", 14, 1), ("ext", 15, 1)])
    putInode(12, mode: 0o100644, size: 3000, links: 1, blockMap: [30, 31, 32])
    bytes.replaceSubrange(Self.block(30)..<(Self.block(30) + 3000), with: Self.fileContent)
    putInode(13, mode: 0o040755, size: 1024, links: 2, extents: [(0, 1, 40)])
    putDirectory(block: 40, self: 13, parent: 2, [])
    // "ind": blocks 0-11 holes, 12 via the single indirect block, 268 via the double one.
    let indSize = UInt32((12 + 256 + 1) * Self.blockSize)
    putInode(14, mode: 0o100644, size: indSize, links: 1, blockMap: [])
    setBlockWord(inode: 14, 12, 50)
    setBlockWord(inode: 14, 13, 51)
    bytes.put32(Self.block(50), 60)
    bytes.put32(Self.block(51), 52)
    bytes.put32(Self.block(52), 61)
    for i in 0..<Self.blockSize {
      bytes[Self.block(60) + i] = 0x60
      bytes[Self.block(61) + i] = 0x61
    }
    putInode(15, mode: 0o100644, size: 100, links: 1, extents: [(0, 1, 62)])
    for i in 0..<100 { bytes[Self.block(62) + i] = 0x62 }
  }

  mutating func setBlockWord(inode n: Int, _ i: Int, _ v: UInt32) {
    bytes.put32(Self.inodeOffset(n) + 0x28 + 4 * i, v)
  }

  mutating func putInode(
    _ n: Int, mode: UInt16, size: UInt32, links: UInt16, blockMap: [UInt32] = [],
    extents: [(UInt32, UInt16, UInt32)]? = nil
  ) {
    let o = Self.inodeOffset(n)
    bytes.put16(o + 0x00, mode)
    bytes.put32(o + 0x04, size)
    bytes.put32(o + 0x10, 1_700_000_000)
    bytes.put16(o + 0x1A, links)
    bytes.put16(o + 0x80, 32)  // i_extra_isize
    if let extents {
      bytes.put32(o + 0x20, ExtInode.flagExtents)
      let a = o + 0x28
      bytes.put16(a, 0xF30A)
      bytes.put16(a + 2, UInt16(extents.count))
      bytes.put16(a + 4, 4)
      bytes.put16(a + 6, 0)
      for (i, e) in extents.enumerated() {
        bytes.put32(a + 12 + 12 * i, e.0)
        bytes.put16(a + 12 + 12 * i + 4, e.1)
        bytes.put32(a + 12 + 12 * i + 8, e.2)
      }
    } else {
      for (i, b) in blockMap.enumerated() { setBlockWord(inode: n, i, b) }
    }
  }

  /// ".", ".." and `entries` (name, inode, type byte); the last entry reaches the block's end.
  mutating func putDirectory(block: Int, self me: UInt32, parent: UInt32, _ entries: [(String, UInt32, UInt8)]) {
    let all = [(".", me, UInt8(2)), ("..", parent, UInt8(2))] + entries
    var o = Self.block(block)
    let end = o + Self.blockSize
    for (i, e) in all.enumerated() {
      let name = Array(e.0.utf8)
      let length = i == all.count - 1 ? end - o : 8 + ((name.count + 3) & ~3)
      bytes.put32(o, e.1)
      bytes.put16(o + 4, UInt16(length))
      bytes[o + 6] = UInt8(name.count)
      bytes[o + 7] = e.2
      bytes.replaceSubrange((o + 8)..<(o + 8 + name.count), with: name)
      o += length
    }
  }

  func open() throws -> ExtFileSystem { try ExtFileSystem(volume: MemoryVolume(bytes, name: Self.name)) }
}

/// Runs `body`, which must throw `code` naming `file` and `offset`, within a second.
func expectCap(
  _ code: VMDKError.Code, file: String, offset: UInt64?, sourceLocation: SourceLocation = #_sourceLocation,
  _ body: () throws -> Void
) {
  let clock = ContinuousClock()
  var caught: VMDKError?
  let took = clock.measure { caught = expectError(code, sourceLocation: sourceLocation, body) }
  #expect(took < .seconds(1), "took \(took)", sourceLocation: sourceLocation)
  guard let e = caught else { return }
  #expect(e.file == file, "file of \(e)", sourceLocation: sourceLocation)
  if let offset { #expect(e.offset == offset, "offset of \(e)", sourceLocation: sourceLocation) }
}

func readWhole(_ fs: any FileSystem, _ path: String) throws -> [UInt8] {
  let id = try fs.lookup(path)
  let size = try fs.stat(id).size
  var out = [UInt8](repeating: 0, count: Int(size))
  let n = try out.withUnsafeMutableBytes { try fs.read(id, at: 0, into: $0) }
  return Array(out.prefix(n))
}

@Suite struct CapsExtTests {
  @Test func theValidImageReads() throws {
    let fs = try TinyExt().open()
    #expect(try fs.list(fs.root).map(\.displayName) == ["file", "sub", "ind", "ext"])
    #expect(try readWhole(fs, "/file") == TinyExt.fileContent)
    #expect(try fs.list(try fs.lookup("/sub")).isEmpty)
    let ind = try readWhole(fs, "/ind")
    #expect(ind[0..<(12 * 1024)].allSatisfy { $0 == 0 })
    #expect(ind[(12 * 1024)..<(13 * 1024)].allSatisfy { $0 == 0x60 })
    #expect(ind[(268 * 1024)...].allSatisfy { $0 == 0x61 })
    #expect(try fs.dataRanges(try fs.lookup("/ind")) == [(12 * 1024)..<(13 * 1024), (268 * 1024)..<(269 * 1024)])
    #expect(try readWhole(fs, "/ext") == [UInt8](repeating: 0x62, count: 100))
  }

  @Test func extentDepthBeyondTheCap() throws {
    var t = TinyExt()
    let depth = TinyExt.inodeOffset(15) + 0x28 + 6
    t.bytes.put16(depth, UInt16(ExtExtentHeader.maxDepth + 1))
    let fs = try t.open()
    expectCap(.fileSystemLimit, file: TinyExt.name, offset: UInt64(depth)) { _ = try readWhole(fs, "/ext") }
    expectCap(.fileSystemLimit, file: TinyExt.name, offset: UInt64(depth)) {
      _ = try fs.dataRanges(try fs.lookup("/ext"))
    }
    // 65535, the largest a guest can write: the same cap.
    t.bytes.put16(depth, 0xFFFF)
    let fs2 = try t.open()
    expectCap(.fileSystemLimit, file: TinyExt.name, offset: UInt64(depth)) { _ = try readWhole(fs2, "/ext") }
  }

  @Test func extentIndexPointingBackToItsOwnBlock() throws {
    // Root of depth 2 -> block 70 (depth 1) whose index points at block 70 again: the child's
    // depth must be one less, so the cycle is refused at the second visit.
    var t = TinyExt()
    let a = TinyExt.inodeOffset(15) + 0x28
    t.bytes.put16(a + 6, 2)
    t.bytes.put32(a + 12, 0)
    t.bytes.put32(a + 16, 70)
    t.bytes.put16(a + 20, 0)
    let node = TinyExt.block(70)
    t.bytes.put16(node, 0xF30A)
    t.bytes.put16(node + 2, 1)
    t.bytes.put16(node + 4, UInt16((1024 - 12) / 12))
    t.bytes.put16(node + 6, 1)
    t.bytes.put32(node + 12, 0)
    t.bytes.put32(node + 16, 70)
    let fs = try t.open()
    // The offset is the pointer's: ei_leaf of the node's first index entry.
    expectCap(.corruptFileSystem, file: TinyExt.name, offset: UInt64(node + 16)) { _ = try readWhole(fs, "/ext") }
    expectCap(.corruptFileSystem, file: TinyExt.name, offset: UInt64(node + 16)) {
      _ = try fs.dataRanges(try fs.lookup("/ext"))
    }
  }

  @Test func directorySizeBeyondTheCap() throws {
    var t = TinyExt()
    let size = TinyExt.inodeOffset(13) + 0x04
    t.bytes.put32(size, 0xFFFF_FC00)
    let fs = try t.open()
    expectCap(.fileSystemLimit, file: TinyExt.name, offset: UInt64(size)) { _ = try fs.list(try fs.lookup("/sub")) }
    // Just under the cap, the holes past block 0 are skipped without reading them.
    t.bytes.put32(size, UInt32(ExtFileSystem.maxDirectoryBytes))
    let fs2 = try t.open()
    let clock = ContinuousClock()
    var names: [DirectoryEntry] = [DirectoryEntry(name: [], id: 0, type: .unknown)]
    let took = try clock.measure { names = try fs2.list(try fs2.lookup("/sub")) }
    #expect(names.isEmpty)
    #expect(took < .seconds(1))
  }

  @Test func singleIndirectBlockPointingToItself() throws {
    var t = TinyExt()
    t.bytes.put32(TinyExt.block(50), 50)
    let fs = try t.open()
    let pointer = UInt64(TinyExt.block(50))
    expectCap(.corruptFileSystem, file: TinyExt.name, offset: pointer) { _ = try readWhole(fs, "/ind") }
    expectCap(.corruptFileSystem, file: TinyExt.name, offset: pointer) { _ = try fs.dataRanges(try fs.lookup("/ind")) }
  }

  @Test func doubleIndirectBlockPointingToItself() throws {
    var t = TinyExt()
    t.bytes.put32(TinyExt.block(51), 51)
    let fs = try t.open()
    let pointer = UInt64(TinyExt.block(51))
    expectCap(.corruptFileSystem, file: TinyExt.name, offset: pointer) { _ = try readWhole(fs, "/ind") }
    expectCap(.corruptFileSystem, file: TinyExt.name, offset: pointer) { _ = try fs.dataRanges(try fs.lookup("/ind")) }
  }

  @Test func indirectBlocksInACycle() throws {
    // Triple indirect 53 -> 54 -> 53: a cycle of two.
    var t = TinyExt()
    let size = UInt64(12 + 256 + 256 * 256 + 1) * 1024
    t.bytes.put32(TinyExt.inodeOffset(14) + 0x04, UInt32(size & 0xFFFF_FFFF))
    t.bytes.put32(TinyExt.inodeOffset(14) + 0x6C, UInt32(size >> 32))
    t.setBlockWord(inode: 14, 14, 53)
    t.bytes.put32(TinyExt.block(53), 54)
    t.bytes.put32(TinyExt.block(54), 53)
    let fs = try t.open()
    let id = try fs.lookup("/ind")
    expectCap(.corruptFileSystem, file: TinyExt.name, offset: UInt64(TinyExt.block(54))) {
      var b = [UInt8](repeating: 0, count: 16)
      _ = try b.withUnsafeMutableBytes { try fs.read(id, at: size - 16, into: $0) }
    }
    expectCap(.corruptFileSystem, file: TinyExt.name, offset: UInt64(TinyExt.block(54))) { _ = try fs.dataRanges(id) }
  }

  @Test(arguments: [UInt16(8192), 100, 0, 0xFFFF])
  func bogusInodeSize(_ value: UInt16) {
    var t = TinyExt()
    t.bytes.put16(1024 + 0x58, value)
    let code: VMDKError.Code = value == 8192 ? .fileSystemLimit : .corruptFileSystem
    expectCap(code, file: TinyExt.name, offset: 1024 + 0x58) { _ = try t.open() }
    expectCap(code, file: TinyExt.name, offset: 1024 + 0x58) {
      _ = try ExtFileSystem.probe(MemoryVolume(t.bytes, name: TinyExt.name))
    }
  }

  @Test(arguments: [UInt32(7), 31, 0xFFFF_FFFF])
  func bogusBlockSize(_ value: UInt32) {
    var t = TinyExt()
    t.bytes.put32(1024 + 0x18, value)
    expectCap(.fileSystemLimit, file: TinyExt.name, offset: 1024 + 0x18) { _ = try t.open() }
  }
}

@Suite struct CapsFATTests {
  /// TinyFAT (FATTests.swift): a FAT12 of 197 clusters; "Hello world.txt" is clusters 2-3
  /// (700 bytes), folder SUB is cluster 4.
  static let name = "tiny.img"
  static func fatOffset(_ n: Int) -> UInt64 { UInt64(512 + n + n / 2) }

  @Test func chainLoopInsideTheFile() throws {
    var t = TinyFAT()
    t.setFAT(3, 2)
    t.bytes.put32(TinyFAT.rootOffset + 64 + 28, 60_000)  // 118 clusters: the loop shows
    let fs = try t.open()
    expectCap(.corruptFileSystem, file: Self.name, offset: Self.fatOffset(3)) {
      _ = try readWhole(fs, "/Hello world.txt")
    }
  }

  @Test func chainLongerThanTheFileIsFollowedOnlyAsFarAsTheFile() throws {
    // 2 -> 3 -> 6 -> 7 -> ... -> 198 -> 6: a chain of 195 clusters that then loops, for a file
    // of two. Reading stops after the file's two clusters: the right bytes, in milliseconds.
    var t = TinyFAT()
    t.setFAT(3, 6)
    for n in 6..<198 { t.setFAT(n, UInt16(n + 1)) }
    t.setFAT(198, 6)
    let fs = try t.open()
    let clock = ContinuousClock()
    var content: [UInt8] = []
    let took = try clock.measure { content = try readWhole(fs, "/Hello world.txt") }
    #expect(content == TinyFAT.content)
    #expect(took < .seconds(1))
    // The same chain under a folder, which has no size to stop at: the loop is the error.
    var d = TinyFAT()
    d.setFAT(4, 6)
    for n in 6..<198 { d.setFAT(n, UInt16(n + 1)) }
    d.setFAT(198, 6)
    let fs2 = try d.open()
    expectCap(.corruptFileSystem, file: Self.name, offset: Self.fatOffset(198)) {
      _ = try fs2.list(try fs2.lookup("/SUB"))
    }
  }

  @Test func chainShorterThanTheFile() throws {
    var t = TinyFAT()
    t.setFAT(2, 0xFFF)  // ends after one cluster; 700 bytes need two
    let fs = try t.open()
    expectCap(.corruptFileSystem, file: Self.name, offset: Self.fatOffset(2)) {
      _ = try readWhole(fs, "/Hello world.txt")
    }
  }
}

@Suite struct CapsPartitionTests {
  static let name = "caps-disk.img"

  @Test func ebrChainLoop() {
    // EBR 100 -> 150 -> 101 -> 150 again.
    var d = mbrWithLogicals()
    putEntry(&d, lba: 150, slot: 1, type: 0x05, start: 1, sectors: 10)
    putEntry(&d, lba: 101, slot: 0, type: 0x83, start: 1, sectors: 1)
    putEntry(&d, lba: 101, slot: 1, type: 0x05, start: 50, sectors: 10)
    expectCap(.invalidPartitionTable, file: Self.name, offset: 150 * 512) {
      _ = try PartitionTable.read(MemoryVolume(d, name: Self.name))
    }
    // An EBR that links to itself by a non-zero offset.
    var s = mbrWithLogicals()
    putEntry(&s, lba: 150, slot: 1, type: 0x05, start: 50, sectors: 10)
    expectCap(.invalidPartitionTable, file: Self.name, offset: 150 * 512) {
      _ = try PartitionTable.read(MemoryVolume(s, name: Self.name))
    }
  }

  @Test func ebrChainBeyondTheCap() {
    var d = blankDisk(2048)
    putEntry(&d, lba: 0, slot: 0, type: 0x05, start: 10, sectors: 2000)
    for i in 0..<(PartitionLimits.maxLogicalPartitions + 5) {
      let lba = 10 + i * 4
      putEntry(&d, lba: lba, slot: 0, type: 0x83, start: 1, sectors: 1)
      putEntry(&d, lba: lba, slot: 1, type: 0x05, start: UInt32((i + 1) * 4), sectors: 4)
    }
    let last = UInt64(10 + PartitionLimits.maxLogicalPartitions * 4)
    expectCap(.invalidPartitionTable, file: Self.name, offset: last * 512) {
      _ = try PartitionTable.read(MemoryVolume(d, name: Self.name))
    }
  }

  /// The GPT of `gptDisk` with the primary header's 32-bit `field` set (its CRC recomputed)
  /// and the backup header destroyed, so that nothing rescues the table.
  static func hostileGPT(_ fields: [(Int, UInt32)]) -> [UInt8] {
    var d = gptDisk(parts: [(40, 99, "root")])
    for (field, value) in fields { d.put32(512 + field, value) }
    d.put32(512 + 16, 0)
    d.put32(512 + 16, CRC32.checksum(d[512..<(512 + 92)]))
    for i in 0..<512 { d[399 * 512 + i] = 0 }
    return d
  }

  @Test(arguments: [UInt32(65_537), 1_000_000, 0xFFFF_FFFF])
  func gptEntryCountBeyondTheCap(_ count: UInt32) {
    let d = Self.hostileGPT([(80, count)])
    expectCap(.fileSystemLimit, file: Self.name, offset: 512 + 80) {
      _ = try PartitionTable.read(MemoryVolume(d, name: Self.name))
    }
  }

  @Test func gptArrayBytesBeyondTheCap() {
    // 65,536 entries of 4 KiB: each field within its own cap, 256 MiB together.
    let d = Self.hostileGPT([(80, 65_536), (84, 4096)])
    expectCap(.fileSystemLimit, file: Self.name, offset: 512 + 80) {
      _ = try PartitionTable.read(MemoryVolume(d, name: Self.name))
    }
  }

  @Test(arguments: [UInt32(0), 127, 200, 384, 8192, 0xFFFF_FF80])
  func gptEntrySizeNotOneTwentyEightTimesAPowerOfTwo(_ size: UInt32) {
    let d = Self.hostileGPT([(84, size)])
    expectCap(.invalidPartitionTable, file: Self.name, offset: 512 + 84) {
      _ = try PartitionTable.read(MemoryVolume(d, name: Self.name))
    }
  }

  @Test(arguments: [UInt32(390), 400, 0xFFFF_FFFF])
  func gptEntryArrayBeyondTheDisk(_ lba: UInt32) {
    // 128 entries of 128 bytes are 32 sectors: from LBA 390 they run past the 400-sector disk.
    let d = Self.hostileGPT([(72, lba), (76, lba == 0xFFFF_FFFF ? 0xFFFF_FFFF : 0)])
    expectCap(.invalidPartitionTable, file: Self.name, offset: 512 + 72) {
      _ = try PartitionTable.read(MemoryVolume(d, name: Self.name))
    }
  }
}
