// vmdk-serve on qemu-made images of every VMDK subformat qemu-img writes (monolithicSparse,
// monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized): 3 GiB virtual,
// data written by qemu-io at scattered offsets, one write across the 2 GiB boundary between
// the extents of the split variants. nbdcopy over one and over four connections must give the
// bytes `qemu-img convert -O raw` gives from the local file.

import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

@Suite(.serialized) struct ServeSubformatTests {
  static let subformats = [
    "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized",
  ]

  /// The writes every image gets (whole 64 KiB grains): the first and last grains, one
  /// across grain-table boundaries, one across 2 GiB (the extent boundary of the twoGb
  /// variants, 2048 MiB), and data above 2 GiB.
  static let writes = [
    "write -P 0x11 0 64k", "write -P 0x12 1M 64k", "write -P 0x13 700M 1M", "write -P 0x14 1500M 128k",
    "write -P 0x15 2047M 2M", "write -P 0x16 2560M 512k", "write -P 0x17 3071M 1M",
  ]
  /// Partial grains, and zeros over data: not for streamOptimized, which qemu writes only in
  /// whole grains, once each.
  static let inPlace = [
    "write -P 0x21 1M 4k", "write -P 0x22 1600M 100k", "write -P 0x23 2048M 1000", "write -z 2097664k 64k",
    "write -z 700M 4k",
  ]

  /// SHA-256 of a (sparse) file's contents that skips zeros: the file's size, then every
  /// 64 KiB block that is not all zeros, with its offset. Two files get the same digest
  /// exactly when they hold the same bytes; hashing the 3 GiB of zeros whole would take
  /// minutes on a shared 2-core machine, so holes (SEEK_DATA) are not read at all.
  static func contentDigest(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw ToolFailure("cannot open \(path)") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw ToolFailure("cannot stat \(path)") }
    let size = Int(st.st_size)
    // SEEK_DATA and SEEK_HOLE (Linux), which Glibc's module does not export.
    let seekData: Int32 = 3
    let seekHole: Int32 = 4
    let context = DigestContext(.sha256)
    withUnsafeBytes(of: UInt64(size).littleEndian) { context.update($0) }
    let block = 64 << 10
    var buffer = [UInt8](repeating: 0, count: block)
    var position = 0
    while position < size {
      let data = lseek(fd, position, seekData)
      if data < 0 { break }  // ENXIO: only a hole is left
      // Blocks are aligned to 64 KiB so that both files are cut in the same places.
      var at = data / block * block
      let hole = max(lseek(fd, data, seekHole), data + 1)
      while at < hole && at < size {
        let n = try buffer.withUnsafeMutableBytes { raw -> Int in
          let r = pread(fd, raw.baseAddress, block, off_t(at))
          guard r >= 0 else { throw ToolFailure("cannot read \(path) at \(at)") }
          return r
        }
        if n == 0 { break }
        let bytes = buffer[0..<n]
        if bytes.contains(where: { $0 != 0 }) {
          withUnsafeBytes(of: UInt64(at).littleEndian) { context.update($0) }
          bytes.withUnsafeBytes { context.update($0) }
        }
        at += n
      }
      position = at
    }
    return context.finalHex()
  }

  static func copyDigest(_ uri: String, in folder: String, connections: Int) throws -> String {
    let out = "\(folder)/copy-\(connections).raw"
    defer { try? FileManager.default.removeItem(atPath: out) }
    try runChecked(try requireTool("nbdcopy"), ["--connections=\(connections)", uri, out])
    return try contentDigest(out)
  }

  @Test("nbdcopy from vmdk-serve equals qemu-img convert", arguments: subformats)
  func everySubformat(subformat: String) throws {
    try withTemporaryFolder { folder in
      let image = "\(folder)/\(subformat).vmdk"
      try Qemu.create(image, size: 3 << 30, options: ["subformat=\(subformat)"])
      try Qemu.io(image, Self.writes + (subformat == "streamOptimized" ? [] : Self.inPlace))
      let raw = "\(folder)/reference.raw"
      try Qemu.img("convert", "-f", "vmdk", "-O", "raw", image, raw)
      let expected = try Self.contentDigest(raw)
      try FileManager.default.removeItem(atPath: raw)
      // The digest sees the data: it differs from an empty disk's.
      let empty = "\(folder)/empty.raw"
      try Qemu.img("create", "-q", "-f", "raw", empty, String(3 << 30))
      #expect(try Self.contentDigest(empty) != expected)
      let server = try VMDKServeProcess([image])
      defer { server.stop() }
      let uri = server.uri(export: "")
      #expect(try Self.copyDigest(uri, in: folder, connections: 1) == expected, "\(subformat), 1 connection")
      #expect(try Self.copyDigest(uri, in: folder, connections: 4) == expected, "\(subformat), 4 connections")
    }
  }
}
