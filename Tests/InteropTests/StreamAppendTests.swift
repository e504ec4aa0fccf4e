// Appending to a streamOptimized disk (StreamAppender through Disk.write): sequential appends at
// and after the end of data are read back by our reader, qemu-img and vmdkinfo; a write before
// the end of data and a write that goes back are refused and change nothing.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

@Suite struct StreamAppendTests {
  static let mib: UInt64 = 1 << 20

  static func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &+ ($0 >> 9)) }
  }

  static func writable() -> OpenOptions {
    var o = OpenOptions()
    o.writable = true
    return o
  }

  static func sha256(_ bytes: [UInt8]) -> String {
    let context = DigestContext(.sha256)
    bytes.withUnsafeBytes { context.update($0) }
    return context.finalHex()
  }

  /// Checks the image with our reader (a new handle), qemu-img check, qemu-img convert and
  /// vmdkinfo against `expected`.
  static func expectImage(_ path: String, equals expected: [UInt8], scratch: String) throws {
    let want = sha256(expected)
    let ours = try Disk.open(path)
    #expect(try ours.digest() == want, "our reader")
    #expect(try ours.check().isClean, "our check")
    let check = try runProcess(try requireTool("qemu-img"), ["check", path])
    #expect(check.status == 0, "qemu-img check: \(check.output) \(check.errorOutput)")
    #expect(!check.output.contains("leaked"), "\(check.output)")
    #expect(try Qemu.rawSHA256(path, scratch: scratch) == want, "qemu-img convert -O raw")
    let info = try runChecked(try requireTool("vmdkinfo"), [path])
    #expect(
      info.output.contains("Media size\t\t\t: \(expected.count) bytes")
        || info.output.contains("(\(expected.count) bytes)"),
      "vmdkinfo: \(info.output)")
  }

  @Test func appendsAfterTheEndOfData() throws {
    try withTemporaryFolder { folder in
      let capacity = 64 * Self.mib
      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: capacity, options: ["subformat=monolithicSparse"])
      try Qemu.io(src, ["write -P 0x5a 0 4M", "write -P 0x11 \(5 << 20 + 512) \(3 << 20 - 512)"])
      let dst = "\(folder)/stream.vmdk"
      try Convert.checked([src, dst, "--type", "streamOptimized", "--quiet"])

      var expected = [UInt8](repeating: 0, count: Int(capacity))
      try expected.withUnsafeMutableBytes { try Disk.open(src).read(at: 0, into: $0) }
      func put(_ offset: UInt64, _ bytes: [UInt8]) {
        expected.replaceSubrange(Int(offset)..<(Int(offset) + bytes.count), with: bytes)
      }
      try Self.expectImage(dst, equals: expected, scratch: folder)

      // Before the end of data (8 MiB): refused, nothing written, not even the CID.
      let untouched = try fileDigest(dst, .sha256)
      do {
        let disk = try Disk.open(dst, options: Self.writable())
        let e = expectVMDKError(.notSupported) { try disk.write(at: 4 * Self.mib, [1, 2, 3]) }
        #expect(
          e?.message
            == "streamOptimized disks accept only sequential appends at or after byte \(8 * Self.mib); this write is at \(4 * Self.mib)",
          "\(String(describing: e))")
        #expect(e?.file?.hasSuffix("stream.vmdk") == true)
        expectVMDKError(.notSupported) { try disk.write(at: 8 * Self.mib - 1, [1, 2]) }
        try disk.close()
      }
      #expect(try fileDigest(dst, .sha256) == untouched, "a refused write changed the file")

      // Appends: a partial grain, one that goes on from it, a gap, a run across the region
      // boundary at 32 MiB (512 grains of 64 KiB), a whole grain.
      let writes: [(UInt64, [UInt8])] = [
        (8 * Self.mib, Self.pattern(100_000, seed: 1)),
        (8 * Self.mib + 100_000, Self.pattern(Int(Self.mib) + 7, seed: 2)),
        (31 * Self.mib + 12345, Self.pattern(Int(2 * Self.mib) + 777, seed: 3)),
        (40 * Self.mib, Self.pattern(65536, seed: 4)),
      ]
      let cidBefore = try descriptorValue("CID", inFile: dst)
      do {
        let disk = try Disk.open(dst, options: Self.writable())
        let oldCID = disk.currentCID
        for (offset, bytes) in writes {
          try disk.write(at: offset, bytes)
          put(offset, bytes)
        }
        #expect(disk.currentCID != oldCID, "the first write gives a new CID")
        // Going back (before the end of the last write), even past the old end of data: refused,
        // and the file stays as it is.
        let before = try fileDigest(dst, .sha256)
        let e = expectVMDKError(.notSupported) { try disk.write(at: 35 * Self.mib, [9]) }
        #expect(e?.message.contains("at or after byte \(40 * Self.mib + 65536)") == true, "\(String(describing: e))")
        expectVMDKError(.notSupported) { try disk.write(at: 0, [9]) }
        #expect(try fileDigest(dst, .sha256) == before, "a refused append changed the file")
        try disk.close()
      }
      try Self.expectImage(dst, equals: expected, scratch: folder)
      #expect(try descriptorValue("CID", inFile: dst) != cidBefore, "the embedded descriptor has the new CID")

      // Again on the appended file, with a flush in the middle of a grain: the grain is
      // written twice and the later copy wins.
      do {
        let disk = try Disk.open(dst, options: Self.writable())
        expectVMDKError(.notSupported) { try disk.write(at: 40 * Self.mib + 65535, [1]) }
        let a = Self.pattern(1000, seed: 5)
        try disk.write(at: 41 * Self.mib, a)
        put(41 * Self.mib, a)
        try disk.flush()
        let b = Self.pattern(5000, seed: 6)
        try disk.write(at: 41 * Self.mib + 1000, b)
        put(41 * Self.mib + 1000, b)
        try disk.close()
      }
      try Self.expectImage(dst, equals: expected, scratch: folder)
    }
  }

  /// A disk dropped without `close` still ends its appends with a footer.
  @Test func droppedDiskFinishesTheTail() throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: 8 * Self.mib, options: ["subformat=monolithicSparse"])
      try Qemu.io(src, ["write -P 0x5a 0 1M"])
      let dst = "\(folder)/stream.vmdk"
      try Convert.checked([src, dst, "--type", "streamOptimized", "--quiet"])
      var expected = [UInt8](repeating: 0, count: Int(8 * Self.mib))
      try expected.withUnsafeMutableBytes { try Disk.open(src).read(at: 0, into: $0) }
      let data = Self.pattern(200_000, seed: 8)
      do {
        let disk = try Disk.open(dst, options: Self.writable())
        try disk.write(at: 3 * Self.mib + 3, data)
      }
      expected.replaceSubrange(Int(3 * Self.mib + 3)..<(Int(3 * Self.mib + 3) + data.count), with: data)
      try Self.expectImage(dst, equals: expected, scratch: folder)
    }
  }

  /// qemu writes streamOptimized with the grain directory near the start and no footer: such
  /// a stream is not appended to, and the refused write changes nothing.
  @Test func qemuLayoutIsRefused() throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: 8 * Self.mib, options: ["subformat=monolithicSparse"])
      try Qemu.io(src, ["write -P 0x5a 0 1M"])
      let dst = "\(folder)/qemu-stream.vmdk"
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", src, dst)
      let before = try fileDigest(dst, .sha256)
      do {
        let disk = try Disk.open(dst, options: Self.writable())
        let e = expectVMDKError(.notSupported) { try disk.write(at: 4 * Self.mib, [1, 2, 3]) }
        #expect(e?.message.contains("grain directory is not at the end") == true, "\(String(describing: e))")
        try disk.close()
      }
      #expect(try fileDigest(dst, .sha256) == before)
    }
  }

  /// Reads on the appending handle keep the grain directory found at open: the appended data
  /// is seen after the disk is opened again.
  @Test func readsOfAppendedDataNeedAReopen() throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: 8 * Self.mib, options: ["subformat=monolithicSparse"])
      try Qemu.io(src, ["write -P 0x5a 0 1M"])
      let dst = "\(folder)/stream.vmdk"
      try Convert.checked([src, dst, "--type", "streamOptimized", "--quiet"])
      let data = Self.pattern(70000, seed: 7)
      let disk = try Disk.open(dst, options: Self.writable())
      try disk.write(at: 2 * Self.mib, data)
      try disk.flush()
      var old = [UInt8](repeating: 1, count: 512)
      try old.withUnsafeMutableBytes { try disk.read(at: 0, into: $0) }
      #expect(old == [UInt8](repeating: 0x5a, count: 512), "data from before the append still reads")
      // This handle cannot see the appended data: it says so rather than reading zeros.
      let e = #expect(throws: VMDKError.self) { _ = try disk.read(at: 2 * Self.mib, count: data.count) }
      #expect(e?.code == .notSupported, "\(String(describing: e))")
      try disk.close()
      var back = [UInt8](repeating: 0, count: data.count)
      try back.withUnsafeMutableBytes { try Disk.open(dst).read(at: 2 * Self.mib, into: $0) }
      #expect(back == data)
    }
  }
}
