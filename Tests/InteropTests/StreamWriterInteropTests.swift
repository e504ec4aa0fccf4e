// Our streamOptimized output against other readers: qemu-img check finds no errors, qemu-img
// convert gives back the source bytes, vmdkinfo (libvmdk) opens it with the right size; and the
// bytes themselves, parsed here without the library's reader, have VMware's layout: header v3
// with the grain directory at the end, grain markers in LBA order, GT/GD/footer markers, and
// the end-of-stream marker last.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

@Suite(.timeLimit(.minutes(20))) struct StreamWriterInteropTests {
  /// 72 MiB + 3 sectors: grain-table regions 0 and 2 with data, region 1 without, a partial
  /// last grain.
  static let capacity: UInt64 = (72 << 20) + 1536

  /// Realistic content: executables from /usr/bin, an all-zero stretch, random (incompressible)
  /// grains, a region with no data at all, and data up to the last (partial) grain.
  static func source() throws -> [UInt8] {
    var disk = [UInt8](repeating: 0, count: Int(capacity))
    var binaries: [UInt8] = []
    let names = try FileManager.default.contentsOfDirectory(atPath: "/usr/bin").sorted()
    for name in names where binaries.count < 5 << 20 {
      let path = "/usr/bin/" + name
      var isDir: ObjCBool = false
      guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue,
        let data = FileManager.default.contents(atPath: path)
      else { continue }
      binaries += data.prefix(1 << 20)
    }
    try #require(binaries.count >= 4 << 20, "not enough bytes in /usr/bin")
    func put(_ bytes: ArraySlice<UInt8>, at offset: Int) {
      disk.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }
    put(binaries[0..<(3 << 20)], at: 0)
    var rng = SystemRandomNumberGenerator()
    put(ArraySlice((0..<(3 * 65536)).map { _ in UInt8.random(in: 0...255, using: &rng) }), at: 4 << 20)
    // Region 1 (32..64 MiB) stays empty; region 2 ends with a partial grain.
    put(binaries[(3 << 20)..<(4 << 20)], at: disk.count - (1 << 20))
    return disk
  }

  static func sha256(_ bytes: [UInt8]) -> String {
    let ctx = DigestContext(.sha256)
    bytes.withUnsafeBytes { ctx.update($0) }
    return ctx.finalHex()
  }

  /// Writes `bytes` as streamOptimized in writes of 1 MiB + 512 B (not grain-aligned).
  static func write(_ bytes: [UInt8], to path: String) throws {
    let writer = try StreamWriter(
      path: path, options: CreateOptions(type: .streamOptimized, capacityBytes: UInt64(bytes.count)),
      files: OutputFiles())
    let chunk = (1 << 20) + 512
    var at = 0
    while at < bytes.count {
      let n = min(chunk, bytes.count - at)
      try bytes.withUnsafeBytes {
        try writer.write(at: UInt64(at), UnsafeRawBufferPointer(rebasing: $0[at..<(at + n)]))
      }
      at += n
    }
    try writer.commit()
  }

  @Test func otherReadersAgree() throws {
    try withTemporaryFolder { folder in
      let source = try Self.source()
      let path = folder + "/stream.vmdk"
      try Self.write(source, to: path)

      let check = try runProcess(try requireTool("qemu-img"), ["check", "-f", "vmdk", path])
      #expect(check.status == 0, "qemu-img check: \(check.output) \(check.errorOutput)")
      #expect(check.output.contains("No errors were found"), "\(check.output)")

      #expect(try Qemu.rawSHA256(path, scratch: folder) == Self.sha256(source))

      let info =
        try JSONSerialization.jsonObject(
          with: try Qemu.img("info", "--output=json", path).stdout) as? [String: Any]
      #expect((info?["virtual-size"] as? NSNumber)?.uint64Value == Self.capacity)

      let vmdkinfo = try runChecked(try requireTool("vmdkinfo"), [path]).output
      #expect(vmdkinfo.contains("Stream optimized"), "\(vmdkinfo)")
      #expect(vmdkinfo.contains("Media size:") && vmdkinfo.contains("(\(Self.capacity) bytes)"), "\(vmdkinfo)")

      // And our own reader, through the footer.
      #expect(try Disk.open(path).digest() == Self.sha256(source))
    }
  }

  /// The file's structure, parsed from the bytes with nothing but the format's definitions.
  @Test func layoutIsVMwares() throws {
    try withTemporaryFolder { folder in
      let source = try Self.source()
      let path = folder + "/stream.vmdk"
      try Self.write(source, to: path)
      let f = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
      #expect(f.count % 512 == 0)
      func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(f[o + $1]) << (8 * $1) } }
      func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(f[o + $1]) << (8 * $1) } }

      // Header: KDMV, version 3, flags 0x30001, grain 128, descriptor at 1, GD at end, deflate.
      #expect(Array(f[0..<4]) == Array("KDMV".utf8))
      #expect(u32(4) == 3)
      #expect(u32(8) == 0x30001)
      #expect(u64(12) == Self.capacity / 512)
      #expect(u64(20) == 128)
      #expect(u64(28) == 1)
      #expect(u64(56) == SparseExtentHeader.gdAtEnd)
      #expect(u64(48) == 0)
      let overhead = Int(u64(64))
      #expect(overhead == 128)
      #expect(Array(f[73..<77]) == [0x0A, 0x20, 0x0D, 0x0A])
      #expect(f[77] == 1 && f[78] == 0)
      let descriptor = String(decoding: f[512..<(512 + Int(u64(36)) * 512)].prefix { $0 != 0 }, as: UTF8.self)
      #expect(descriptor.contains("createType=\"streamOptimized\""))
      #expect(descriptor.contains("RW \(Self.capacity / 512) SPARSE \"stream.vmdk\""))

      // Footer: the last three sectors are footer marker, footer, end-of-stream marker.
      let footer = try StreamFooter.parse(tail: Array(f[(f.count - 1536)...]), fileSize: UInt64(f.count))
      #expect(footer.version == 3 && footer.flags.rawValue == 0x30001 && footer.capacitySectors == Self.capacity / 512)
      let gd = Int(footer.gdOffsetSectors) * 512
      #expect(u32(gd - 512 + 12) == 2, "a GD marker precedes the grain directory")

      // Walk every marker from the first grain to the end.
      var at = overhead * 512
      var lastLBA: UInt64? = nil
      var grains = 0
      var tables: [Int] = []
      var kinds: [UInt32] = []
      while at < f.count {
        let value = u64(at)
        let size = u32(at + 8)
        if size != 0 {
          #expect(value % 128 == 0, "grain marker LBA \(value) at \(at)")
          if let last = lastLBA { #expect(value > last, "grains out of order at \(at)") }
          lastLBA = value
          #expect(f[at + 12] == 0x78, "zlib header at \(at + 12)")
          // Every grain is compressed at full grain length, the last (partial) one too.
          var out = [UInt8](repeating: 0, count: 65536)
          let inflated = try out.withUnsafeMutableBytes { buffer in
            try f.withUnsafeBytes { file in
              try GrainCompression.inflate(
                UnsafeRawBufferPointer(rebasing: file[(at + 12)..<(at + 12 + Int(size))]), into: buffer,
                offset: UInt64(at))
            }
          }
          #expect(inflated == 65536)
          let start = Int(value) * 512
          let real = min(65536, source.count - start)
          #expect(out[0..<real] == source[start..<(start + real)], "grain at LBA \(value)")
          grains += 1
          at += (12 + Int(size) + 511) / 512 * 512
          continue
        }
        let type = u32(at + 12)
        kinds.append(type)
        switch type {
        case 1:
          #expect(value == 4)
          tables.append(at / 512 + 1)
          at += 512 * 5
        case 2: at += 512 * (1 + Int(value))
        case 3:
          #expect(value == 1)
          at += 1024
        case 0:
          #expect(at == f.count - 512, "end-of-stream marker is not the last sector")
          at += 512
        default:
          Issue.record("unexpected marker type \(type) at \(at)")
          at = f.count
        }
      }
      #expect(kinds == [1, 1, 2, 3, 0], "metadata markers: GT (region 0), GT (region 2), GD, footer, EOS")
      // Non-zero grains of the source, which is what must be stored.
      let nonZero = stride(from: 0, to: source.count, by: 65536).filter { s in
        source[s..<min(s + 65536, source.count)].contains { $0 != 0 }
      }.count
      #expect(grains == nonZero)
      // The grain directory names the tables found, and 0 for region 1 (no data).
      let entries = (0..<3).map { Int(u32(gd + 4 * $0)) }
      #expect(tables.count == 2 && entries == [tables[0], 0, tables[1]], "GD \(entries), tables at \(tables)")
    }
  }

  /// A 64 TiB disk: its 8 MiB grain directory is written in pieces; qemu-img must find no
  /// error and read the data near the end back.
  @Test func largeSparseDisk() throws {
    try withTemporaryFolder { folder in
      let path = folder + "/big.vmdk"
      let capacity: UInt64 = 64 << 40
      let writer = try StreamWriter(
        path: path, options: CreateOptions(type: .streamOptimized, capacityBytes: capacity), files: OutputFiles())
      let tail = [UInt8](repeating: 0x5A, count: 65536)
      try tail.withUnsafeBytes { try writer.write(at: capacity - 65536, $0) }
      try writer.commit()
      let check = try runProcess(try requireTool("qemu-img"), ["check", "-f", "vmdk", path])
      #expect(
        check.status == 0 && check.output.contains("No errors were found"), "\(check.output) \(check.errorOutput)")
      let info =
        try JSONSerialization.jsonObject(
          with: try Qemu.img("info", "--output=json", path).stdout) as? [String: Any]
      #expect((info?["virtual-size"] as? NSNumber)?.uint64Value == capacity)
      let io = try runProcess(
        try requireTool("qemu-io"), ["-f", "vmdk", "-c", "read -P 0x5a \(capacity - 65536) 65536", path])
      #expect(io.status == 0 && !io.output.contains("Pattern verification failed"), "\(io.output) \(io.errorOutput)")
    }
  }
}
