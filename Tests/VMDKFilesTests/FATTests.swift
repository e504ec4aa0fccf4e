// FAT12 built byte by byte in memory: long names and their checksum, chains, and hostile
// volumes (chain loops, clusters out of range, a folder inside itself, broken BPBs).
import Testing
import VMDKBlock

@testable import VMDKFiles

/// A 200-sector FAT12 volume: 512-byte sectors, 1 sector per cluster, 1 FAT, 16 root entries.
/// Root: "Hello world.txt" (LFN, 700 bytes, clusters 2-3) and folder SUB (cluster 4) holding
/// INNER.TXT (5 bytes, cluster 5).
struct TinyFAT {
  var bytes = [UInt8](repeating: 0, count: 200 * 512)
  static let rootOffset = 1024
  static let dataOffset = 1536
  static let content: [UInt8] = (0..<700).map { UInt8($0 % 251) }

  init() {
    bytes[0] = 0xEB
    bytes[1] = 0x3C
    bytes[2] = 0x90
    bytes.replaceSubrange(3..<11, with: Array("TESTFAT ".utf8))
    bytes.put16(11, 512)
    bytes[13] = 1
    bytes.put16(14, 1)
    bytes[16] = 1
    bytes.put16(17, 16)
    bytes.put16(19, 200)
    bytes[21] = 0xF8
    bytes.put16(22, 1)
    bytes[38] = 0x29
    bytes.put32(39, 0x1234_ABCD)
    bytes.replaceSubrange(43..<54, with: Array("TINY       ".utf8))
    bytes[510] = 0x55
    bytes[511] = 0xAA
    setFAT(0, 0xFF8)
    setFAT(1, 0xFFF)
    setFAT(2, 3)
    setFAT(3, 0xFFF)
    setFAT(4, 0xFFF)
    setFAT(5, 0xFFF)
    let short = Array("HELLOW~1TXT".utf8)
    var o = Self.rootOffset
    for e in Self.longEntries("Hello world.txt", checksum: FATNames.checksum(short)) {
      bytes.replaceSubrange(o..<(o + 32), with: e)
      o += 32
    }
    putShort(at: o, short, attr: 0x20, cluster: 2, size: 700)
    putShort(at: o + 32, Array("SUB        ".utf8), attr: 0x10, cluster: 4, size: 0)
    let sub = Self.dataOffset + 2 * 512
    putShort(at: sub, Array(".          ".utf8), attr: 0x10, cluster: 4, size: 0)
    putShort(at: sub + 32, Array("..         ".utf8), attr: 0x10, cluster: 0, size: 0)
    putShort(at: sub + 64, Array("INNER   TXT".utf8), attr: 0x20, cluster: 5, size: 5)
    bytes.replaceSubrange((Self.dataOffset)..<(Self.dataOffset + 700), with: Self.content)
    bytes.replaceSubrange((Self.dataOffset + 3 * 512)..<(Self.dataOffset + 3 * 512 + 5), with: Array("inner".utf8))
  }

  mutating func setFAT(_ n: Int, _ v: UInt16) {
    let o = 512 + n + n / 2
    var w = bytes.le16(o)
    if n & 1 == 1 { w = (w & 0x000F) | (v << 4) } else { w = (w & 0xF000) | (v & 0xFFF) }
    bytes.put16(o, w)
  }

  mutating func putShort(at o: Int, _ name: [UInt8], attr: UInt8, cluster: UInt16, size: UInt32) {
    bytes.replaceSubrange(o..<(o + 11), with: name)
    bytes[o + 11] = attr
    bytes.put16(o + 22, 0x6000)  // 12:00:00
    bytes.put16(o + 24, (44 << 9) | (5 << 5) | 17)  // 2024-05-17
    bytes.put16(o + 26, cluster)
    bytes.put32(o + 28, size)
  }

  /// The LFN entries of `name`, in on-disk order (last part first).
  static func longEntries(_ name: String, checksum: UInt8) -> [[UInt8]] {
    var units = Array(name.utf16)
    let parts = (units.count + 12) / 13
    if units.count % 13 != 0 { units.append(0) }
    while units.count < parts * 13 { units.append(0xFFFF) }
    var result: [[UInt8]] = []
    for p in (0..<parts).reversed() {
      var e = [UInt8](repeating: 0, count: 32)
      e[0] = UInt8(p + 1) | (p == parts - 1 ? 0x40 : 0)
      e[11] = 0x0F
      e[13] = checksum
      let u = Array(units[(p * 13)..<(p * 13 + 13)])
      let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
      for (i, off) in offsets.enumerated() { e.put16(off, u[i]) }
      result.append(e)
    }
    return result
  }

  func open() throws -> FATFileSystem {
    guard let fs = try FATFileSystem.open(MemoryVolume(bytes, name: "tiny.img")) else {
      throw VMDKError(.badMagic, "not FAT")
    }
    return fs
  }
}

func readAll(_ fs: any FileSystem, _ id: FileID) throws -> [UInt8] {
  let size = try fs.stat(id).size
  var out = [UInt8](repeating: 0, count: Int(size))
  // Odd-sized pieces, so that reads cross cluster boundaries.
  var pos = 0
  while pos < out.count {
    let n = min(333, out.count - pos)
    let got = try out.withUnsafeMutableBytes {
      try fs.read(id, at: UInt64(pos), into: UnsafeMutableRawBufferPointer(rebasing: $0[pos..<(pos + n)]))
    }
    #expect(got == n)
    pos += n
  }
  return out
}

@Suite struct FATTests {
  @Test func codePageTableHas128Characters() {
    #expect(FATNames.cp437High.count == 128)
    #expect(FATNames.oem([0x80, 0x81, 0xE1]) == "Çüß")
  }

  @Test func checksumOfAKnownShortName() {
    #expect(FATNames.checksum(Array("ALONGF~1TXT".utf8)) == 0x02)
  }

  @Test func readsNamesContentAndAttributes() throws {
    let fs = try TinyFAT().open()
    #expect(fs.kind == "fat12")
    #expect(fs.label == "TINY")
    #expect(fs.uuid == "1234-ABCD")
    let root = try fs.list(fs.root)
    #expect(root.map(\.displayName) == ["Hello world.txt", "SUB"])
    #expect(root.map(\.type) == [.regular, .directory])
    #expect(try readAll(fs, root[0].id) == TinyFAT.content)
    let inner = try fs.lookup("/sub/inner.txt")
    #expect(try readAll(fs, inner) == Array("inner".utf8))
    let a = try fs.stat(inner)
    #expect(a.size == 5 && a.timesAreLocal)
    #expect(a.modificationTime == FileTime(seconds: 1_715_947_200))  // 2024-05-17T12:00:00
    var paths: [String] = []
    try fs.walk(from: fs.root) { item in
      paths.append(item.displayPath)
      return true
    }
    #expect(paths == ["Hello world.txt", "SUB", "SUB/INNER.TXT"])
  }

  @Test func badLongNameChecksumFallsBackToTheShortName() throws {
    var t = TinyFAT()
    t.bytes[TinyFAT.rootOffset + 13] ^= 1
    t.bytes[TinyFAT.rootOffset + 32 + 13] ^= 1
    #expect(try t.open().list(0).first?.displayName == "HELLOW~1.TXT")
  }

  @Test func chainLoopIsCorruption() throws {
    var t = TinyFAT()
    t.setFAT(3, 2)
    let fs = try t.open()
    let id = try fs.lookup("/Hello world.txt")
    // The file needs two clusters: the loop shows only past them, so make it longer.
    var big = t
    big.bytes.put32(TinyFAT.rootOffset + 64 + 28, 5000)
    let fs2 = try big.open()
    let e = expectError(.corruptFileSystem) { _ = try readAll(fs2, id) }
    #expect(e?.message.contains("loops") == true)
    #expect(try readAll(fs, id) == TinyFAT.content)  // within its size the chain is fine
  }

  @Test func clusterOutOfRangeIsCorruption() throws {
    var t = TinyFAT()
    t.setFAT(2, 0x500)
    let fs = try t.open()
    let e = expectError(.corruptFileSystem) { _ = try readAll(fs, try fs.lookup("/Hello world.txt")) }
    #expect(e?.message.contains("outside") == true)
  }

  @Test func freeClusterMidChainIsCorruption() throws {
    var t = TinyFAT()
    t.setFAT(2, 0)
    let fs = try t.open()
    expectError(.corruptFileSystem) { _ = try readAll(fs, try fs.lookup("/Hello world.txt")) }
  }

  @Test func folderInsideItselfEndsTheWalk() throws {
    var t = TinyFAT()
    t.putShort(at: TinyFAT.dataOffset + 2 * 512 + 96, Array("LOOP       ".utf8), attr: 0x10, cluster: 4, size: 0)
    let fs = try t.open()
    var errors: [VMDKError] = []
    var count = 0
    try fs.walk(from: fs.root, onError: { _, e in errors.append(e as? VMDKError ?? VMDKError(.failure, "")) }) { _ in
      count += 1
      return true
    }
    #expect(errors.count == 1)
    #expect(errors.first?.code == .corruptFileSystem)
    #expect(count < 10)
  }

  @Test func directoryChainLoopIsCorruption() throws {
    var t = TinyFAT()
    t.setFAT(4, 4)
    let fs = try t.open()
    expectError(.corruptFileSystem) { _ = try fs.list(try fs.lookup("/SUB")) }
  }

  @Test func notFATAndBrokenFAT() throws {
    #expect(try FATFileSystem.open(MemoryVolume([UInt8](repeating: 0, count: 4096))) == nil)
    var t = TinyFAT()
    t.bytes.put16(22, 0)  // no sectors per FAT
    expectError(.corruptFileSystem) { _ = try t.open() }
    var u = TinyFAT()
    u.bytes.put16(19, 2)  // fewer sectors than the reserved and FAT areas
    expectError(.corruptFileSystem) { _ = try u.open() }
  }

  @Test func truncatedVolumesNeverTrap() {
    let t = TinyFAT()
    for n in stride(from: 0, through: t.bytes.count, by: 97) {
      guard let fs = try? FATFileSystem.open(MemoryVolume(Array(t.bytes[0..<n]))) else { continue }
      try? fs.walk(from: fs.root, onError: { _, _ in }) { item in
        _ = try? readAll(fs, item.entry.id)
        return true
      }
    }
  }

  @Test func unsafeNamesAreRefused() {
    for name in ["..", ".", "a/b", "/", "a\u{0}b", ""] {
      expectError(.unsafeName) { try Extractor.checkName(Array(name.utf8)) }
    }
    #expect(throws: Never.self) { try Extractor.checkName(Array("..a".utf8)) }
  }
}
