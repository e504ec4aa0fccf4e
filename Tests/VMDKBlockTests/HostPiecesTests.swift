// Disk.hostPieces: the pieces of a byte range, put back together from the host files (pread on
// each piece's descriptor), zeros and Disk.read, equal Disk.read of the range, for aligned and
// unaligned windows: flat extents with a ZERO extent between and a file shorter than the
// descriptor says (its missing tail is zeros, never a read past the file), and a sparse chain
// whose grains come from the child, the parent and neither. The piece cap gives nil.

import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#endif

@Suite struct HostPiecesTests {
  /// The bytes the pieces name.
  func assemble(_ disk: Disk, _ pieces: [HostPiece], from offset: UInt64) throws -> [UInt8] {
    var out: [UInt8] = []
    var at = offset
    for p in pieces {
      switch p {
      case .file(let fd, let o, let n):
        var b = [UInt8](repeating: 0xEE, count: n)
        let got = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n, off_t(o)) }
        #expect(got == n, "piece \(p): pread gave \(got)")
        out += b
      case .zero(let n): out += [UInt8](repeating: 0, count: n)
      case .read(let n): out += try disk.read(at: at, count: n)
      }
      at += UInt64(p.length)
    }
    return out
  }

  func expectWindows(_ disk: Disk, _ what: String) throws {
    let size = disk.capacityBytes
    var windows: [(UInt64, Int)] = [(0, Int(size)), (1, 1000), (511, 513), (65_000, 140_000), (size - 700, 700)]
    var x: UInt64 = 12345
    for _ in 0..<40 {
      x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      let o = (x >> 20) % size
      let n = Int((x >> 44) % min(300_000, size - o)) + 1
      windows.append((o, min(n, Int(size - o))))
    }
    for (o, n) in windows {
      let pieces = try #require(try disk.hostPieces(offset: o, length: n, maxPieces: 10_000), "\(what) \(o)+\(n)")
      #expect(pieces.reduce(0) { $0 + $1.length } == n)
      #expect(!pieces.contains { $0.length <= 0 })
      let ours = try assemble(disk, pieces, from: o)
      let want = try disk.read(at: o, count: n)
      #expect(ours == want, "\(what): window \(o)+\(n), pieces \(pieces)")
    }
  }

  @Test func flatExtentsZeroExtentAndAShortFile() throws {
    let folder = try TempFolder()
    // 384 sectors where the descriptor claims 512.
    try folder.write("a-flat.vmdk", flat(384))
    let path = try folder.write(
      "disk.vmdk",
      text: descriptorText(
        createType: "monolithicFlat",
        extents: [#"RW 256 FLAT "a-flat.vmdk" 0"#, "RW 256 ZERO", #"RW 256 FLAT "a-flat.vmdk" 256"#, "RW 1024 ZERO"]))
    let disk = try Disk.open(path)
    try expectWindows(disk, "flat")
    let all = try #require(try disk.hostPieces(offset: 0, length: Int(disk.capacityBytes)))
    // Each FLAT line opens the file on its own descriptor.
    guard all.count == 4, case .file(let a, 0, 131_072) = all[0], case .file(let b, 131_072, 65_536) = all[2] else {
      Issue.record("pieces: \(all)")
      return
    }
    #expect(
      all == [
        .file(descriptor: a, offset: 0, length: 131_072), .zero(length: 131_072),
        .file(descriptor: b, offset: 131_072, length: 65_536), .zero(length: 65_536 + 524_288),
      ])
    #expect(try disk.hostPieces(offset: 0, length: Int(disk.capacityBytes), maxPieces: 3) == nil)
    #expect(throws: VMDKError.self) { try disk.hostPieces(offset: disk.capacityBytes - 10, length: 11) }
  }

  @Test func sparseChainPiecesComeFromBothFilesAndZeros() throws {
    let folder = try TempFolder()
    func sparse(_ name: String, grains: [UInt64], cid: String, parent: (String, String)?) throws -> String {
      var image = SparseImage(capacitySectors: 2048, grainSectors: 128)
      image.descriptor = descriptorText(
        createType: "monolithicSparse", cid: cid, parentCID: parent?.1 ?? "ffffffff", parentHint: parent?.0,
        extents: ["RW 2048 SPARSE \"\(name)\""])
      image.fill(grains)
      return try folder.write(name, image.build().bytes)
    }
    _ = try sparse("parent.vmdk", grains: [0, 1, 2, 5, 9], cid: "0000000a", parent: nil)
    let child = try sparse("child.vmdk", grains: [1, 3, 9], cid: "0000000b", parent: ("parent.vmdk", "0000000a"))
    let disk = try Disk.open(child)
    try expectWindows(disk, "chain")
    let all = try #require(try disk.hostPieces(offset: 0, length: Int(disk.capacityBytes)))
    let fds = Set(all.compactMap { if case .file(let fd, _, _) = $0 { fd } else { nil } })
    #expect(fds.count == 2, "\(all)")
    #expect(all.contains { if case .zero = $0 { true } else { false } })
  }
}
