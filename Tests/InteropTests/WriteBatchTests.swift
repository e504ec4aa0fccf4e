// Batched sparse writes (SparseExtent+Write.swift): a large write allocates its new grains
// contiguously and writes each touched grain table, its redundant copy and the directories
// once. Checked by the syscalls of a 64 MiB `vmdk-disk write` (strace -c) and by qemu on
// writes that mix new and allocated grains, partial grains, several tables, and images with
// and without a redundant grain directory.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

/// Counts per syscall name from `strace -c` output.
func straceCounts(_ text: String) -> [String: Int] {
  var counts: [String: Int] = [:]
  for line in text.split(separator: "\n") {
    let f = line.split(separator: " ", omittingEmptySubsequences: true)
    // "% time seconds usecs/call calls [errors] syscall"
    guard f.count >= 5, Double(f[0]) != nil, let name = f.last, let calls = Int(f[3]) else { continue }
    counts[String(name)] = calls
  }
  return counts
}

/// Writes `bytes` at `at` of `file`.
private func put(_ file: LocalFile, _ at: UInt64, _ bytes: [UInt8]) throws {
  try bytes.withUnsafeBytes { try file.write(at: at, from: $0) }
}

/// Clears the header's "use redundant grain directory" flag (bit 1 of the flags at byte 8).
func dropRedundantDirectoryFlag(_ path: String) throws {
  let file = try LocalFile(path: path, writable: true)
  var flags = try file.readExactly(at: 8, count: 4, what: "flags")
  flags[0] &= ~0x02
  try put(file, 8, flags)
  try file.flush()
}

@Suite(.serialized, .timeLimit(.minutes(10))) struct WriteBatchTests {
  /// A 64 MiB write into an empty qemu-made monolithicSparse disk: one round of syscalls per
  /// grain table, not per grain (before: 3073 pwrite, 1036 pread, 1024 lseek, 1080 fstat).
  @Test func syscallsOf64MiBWrite() throws {
    let strace = try requireTool("strace")
    try withTemporaryFolder { folder in
      let image = "\(folder)/e.vmdk"
      let input = "\(folder)/in.raw"
      try Qemu.create(image, size: 1 << 30)
      var bytes = [UInt8](repeating: 0, count: 64 << 20)
      var x: UInt64 = 0x9E37_79B9_7F4A_7C15
      for i in stride(from: 0, to: bytes.count, by: 8) {
        x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        withUnsafeBytes(of: x) { bytes.replaceSubrange(i..<(i + 8), with: $0) }
      }
      try Data(bytes).write(to: URL(fileURLWithPath: input))
      let out = "\(folder)/strace.txt"
      try runChecked(
        strace,
        [
          "-f", "-c", "-o", out, "-e", "trace=pwrite64,pread64,lseek,fstat,newfstatat,statx",
          try builtToolPath("vmdk-disk"), "write", image, "--offset", "0", "--input", input,
        ])
      let counts = straceCounts(try String(contentsOfFile: out, encoding: .utf8))
      let fstats = (counts["fstat"] ?? 0) + (counts["newfstatat"] ?? 0) + (counts["statx"] ?? 0)
      #expect((counts["pwrite64"] ?? 0) <= 64, "\(counts)")
      #expect((counts["pread64"] ?? 0) <= 32, "\(counts)")
      #expect((counts["lseek"] ?? 0) <= 16, "\(counts)")
      #expect(fstats <= 100, "\(counts)")
      #expect((counts["pwrite64"] ?? 0) > 0, "strace saw no writes: \(counts)")
      let compare = try runProcess(try requireTool("qemu-img"), ["compare", "-f", "vmdk", "-F", "raw", image, input])
      #expect(compare.status == 0, "\(compare.output)\(compare.errorOutput)")
      try expectQemuCheckClean(image)
      let info = try runProcess(try requireTool("vmdkinfo"), [image])
      #expect(info.status == 0, "\(info.output)\(info.errorOutput)")
    }
  }

  /// Large writes in one call over allocated and new grains, partial at both ends, across
  /// grain tables (32 MiB each), through the library, against the same writes by qemu-io.
  @Test(arguments: [true, false])
  func largeWritesMatchQemuIO(redundant: Bool) throws {
    try withTemporaryFolder { folder in
      let ours = "\(folder)/ours.vmdk"
      let theirs = "\(folder)/theirs.vmdk"
      let capacity: UInt64 = 160 << 20
      try Qemu.create(ours, size: capacity)
      try Qemu.create(theirs, size: capacity)
      if !redundant {
        try dropRedundantDirectoryFlag(ours)
        try dropRedundantDirectoryFlag(theirs)
      }
      // Allocated grains scattered where the large writes land: overwritten in place.
      let setup = [
        PatternWrite(offset: 31 << 20, count: 65536, byte: 0x11),
        PatternWrite(offset: (33 << 20) + 4096, count: 3 * 65536, byte: 0x12),
        PatternWrite(offset: 70 << 20, count: 1000, byte: 0x13),
      ]
      try Qemu.io(ours, setup.map(\.qemuIO))
      try Qemu.io(theirs, setup.map(\.qemuIO))
      var model = SparseModel(capacity: capacity)
      for w in setup { model.write(at: w.offset, [UInt8](repeating: w.byte, count: w.count)) }
      let writes = [
        // Crosses the first table boundary (32 MiB) and the allocated grains; odd ends.
        PatternWrite(offset: (30 << 20) + 1234, count: (6 << 20) + 777, byte: 0xA1),
        // Three tables in one call.
        PatternWrite(offset: (60 << 20) + 512, count: 70 << 20, byte: 0xA2),
        // Inside one grain, already allocated by the call before.
        PatternWrite(offset: (61 << 20) + 100, count: 300, byte: 0xA3),
        // One whole grain, new.
        PatternWrite(offset: 150 << 20, count: 65536, byte: 0xA4),
      ]
      try writeWithLibrary(ours, writes, model: &model)
      try Qemu.io(theirs, writes.map(\.qemuIO))
      try expectQemuCheckClean(ours)
      let report = try Disk.open(ours).check()
      #expect(report.problems.isEmpty, "\(report.problems)")
      #expect(try Qemu.rawSHA256(ours, scratch: folder) == model.sha256)
      try expectQemuSame(ours, theirs)
      let info = try runProcess(try requireTool("vmdkinfo"), [ours])
      #expect(info.status == 0, "\(info.output)\(info.errorOutput)")
      if redundant {
        // The redundant tables got the same entries: qemu reads them once the primary
        // directory is gone (its offset pointed at the redundant one).
        let copy = "\(folder)/rgd.vmdk"
        try FileManager.default.copyItem(atPath: ours, toPath: copy)
        let file = try LocalFile(path: copy, writable: true)
        let rgd = try file.readExactly(at: 0x30, count: 8, what: "rgd")
        try put(file, 0x38, rgd)
        try file.flush()
        #expect(try Qemu.rawSHA256(copy, scratch: folder) == model.sha256)
      }
    }
  }

  /// One write over three regions whose directory entries are 0 (no table, as VMware's
  /// stream writer leaves them): the new tables come after the data, in one write, then the
  /// directory entries (both directories); qemu reads the result as written.
  @Test func writeMakesSeveralTables() throws {
    try withTemporaryFolder { folder in
      let image = "\(folder)/t.vmdk"
      let capacity: UInt64 = 160 << 20
      try Qemu.create(image, size: capacity)
      let file = try LocalFile(path: image, writable: true)
      let header = try file.readExactly(at: 0, count: 64, what: "header")
      func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(header[at + $1]) << (8 * UInt64($1)) } }
      let rgd = u64(48) * 512
      let gd = u64(56) * 512
      for index in UInt64(1)...3 {
        try put(file, gd + index * 4, [0, 0, 0, 0])
        try put(file, rgd + index * 4, [0, 0, 0, 0])
      }
      try file.flush()
      var model = SparseModel(capacity: capacity)
      let writes = [PatternWrite(offset: (40 << 20) + 4096, count: (80 << 20) + 512, byte: 0xB1)]
      try writeWithLibrary(image, writes, model: &model)
      try expectQemuCheckClean(image)
      #expect(try Qemu.rawSHA256(image, scratch: folder) == model.sha256)
      let report = try Disk.open(image).check()
      #expect(report.problems.isEmpty, "\(report.problems)")
      let disk = try Disk.open(image)
      #expect(try disk.read(at: 40 << 20, count: 8192) == model.read(at: 40 << 20, count: 8192))
    }
  }
}
