// vmdk-convert end to end: sources made by qemu-img and qemu-io, every output type read back
// by qemu-img, vmdkinfo and our reader; a chain flattened; and the failure paths (a source
// that breaks half-way, a full disk, SIGINT, an existing output) leave nothing behind.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

enum Convert {
  static func path() throws -> String { try builtToolPath("vmdk-convert") }

  /// Runs vmdk-convert; returns the result whatever the exit status.
  static func run(_ arguments: [String]) throws -> ProcessResult {
    try runProcess(try path(), arguments)
  }

  /// Runs vmdk-convert, which must succeed.
  @discardableResult
  static func checked(_ arguments: [String]) throws -> ProcessResult {
    try runChecked(try path(), arguments)
  }
}

/// Files in `folder` other than `keep`: what a failed run must not leave.
func leftovers(_ folder: String, keeping keep: Set<String>) throws -> [String] {
  try FileManager.default.contentsOfDirectory(atPath: folder).filter { !keep.contains($0) }.sorted()
}

/// The source for most tests: a qemu-made monolithicSparse of an odd capacity (not a multiple
/// of the grain), with data at odd offsets, across grain boundaries, an all-zero write that
/// allocates, and data in the last partial grain.
func makeSource(_ folder: String, capacity: UInt64 = 3 * (1 << 20) + 1536 + 64 * (1 << 20)) throws -> String {
  let src = "\(folder)/src.vmdk"
  // buslogic and hardware version 6: not our defaults, so a writer that falls back to them fails.
  try Qemu.create(src, size: capacity, options: ["subformat=monolithicSparse", "adapter_type=buslogic", "hwversion=6"])
  try Qemu.io(
    src,
    [
      "write -P 0x11 0 4096",
      "write -P 0x22 65000 70000",
      "write -z 1048576 131072",
      "write -P 0x33 \(5 << 20 + 512) 3M",
      "write -P 0x44 \(capacity - 1536 - 4096) \(4096 + 1536)",
    ])
  return src
}

@Suite struct ConvertTests {
  /// Every output type: qemu-img reads the same bytes (where it reads the type), vmdkinfo
  /// opens it with the right size, our reader agrees, qemu-img check is clean for sparse.
  @Test(arguments: DiskType.allCases)
  func everyType(type: DiskType) throws {
    try withTemporaryFolder { folder in
      let src = try makeSource(folder)
      let want = try Qemu.rawSHA256(src, scratch: folder)
      let dst = "\(folder)/out.\(type == .raw ? "raw" : "vmdk")"
      try Convert.checked([src, dst, "--type", type.rawValue, "--quiet"])

      var options = OpenOptions()
      options.format = type == .raw ? .raw : .vmdk
      let ours = try Disk.open(dst, options: options)
      #expect(try ours.digest() == want, "our reader on \(type)")
      #expect(try ours.check().isClean, "check on \(type)")
      if type != .raw {
        #expect(ours.metadata("ddb.adapterType") == "buslogic", "the source's adapter type is kept")
        #expect(ours.metadata("ddb.virtualHWVersion") == "6", "the source's hardware version is kept")
        #expect(ours.top.createType == type.rawValue)
      }
      // qemu refuses createType vmfsThin ("unsupported image type"): VMware's own readers
      // and libvmdk read it.
      if type != .vmfsThin {
        #expect(try Qemu.rawSHA256(dst, scratch: folder) == want, "qemu-img on \(type)")
        let compare = try runProcess(try requireTool("qemu-img"), ["compare", src, dst])
        #expect(compare.status == 0, "qemu-img compare: \(compare.output) \(compare.errorOutput)")
      }
      if type.isSparse {
        let check = try runProcess(try requireTool("qemu-img"), ["check", dst])
        #expect(check.status == 0, "qemu-img check \(type): \(check.output)")
        #expect(!check.output.contains("leaked"), "\(check.output)")
      }
      if type != .raw {
        let info = try runChecked(try requireTool("vmdkinfo"), [dst])
        let size = ours.capacityBytes
        #expect(
          info.output.contains("Media size\t\t\t: \(size) bytes") || info.output.contains("(\(size) bytes)"),
          "vmdkinfo: \(info.output)")
      }
      // Nothing but the image's files is left in the folder.
      let left = try leftovers(folder, keeping: ["src.vmdk"]).filter { $0.hasPrefix(".") }
      #expect(left.isEmpty, "temporary files left: \(left)")
    }
  }

  /// Unallocated and zero ranges are not written: a raw output is sparse on disk, a sparse
  /// output holds only the grains with data.
  @Test func holesStayHoles() throws {
    try withTemporaryFolder { folder in
      let src = try makeSource(folder, capacity: 1 << 30)
      try Convert.checked([src, "\(folder)/out.raw", "--type", "raw", "-q"])
      var st = stat()
      stat("\(folder)/out.raw", &st)
      #expect(UInt64(st.st_size) == 1 << 30)
      #expect(UInt64(st.st_blocks) * 512 < 16 << 20, "raw output allocates \(st.st_blocks * 512) bytes")
      try Convert.checked([src, "\(folder)/out.vmdk", "-q"])
      let disk = try Disk.open("\(folder)/out.vmdk")
      let dataBytes = try disk.blockStatus().filter { $0.data && !$0.zero }.reduce(0) { $0 + $1.length }
      #expect(dataBytes <= 5 << 20, "sparse output holds \(dataBytes) bytes of grains")
    }
  }

  /// A three-link chain made with qemu-img -b converts to one disk with the chain's content.
  @Test func chainIsFlattened() throws {
    try withTemporaryFolder { folder in
      let base = "\(folder)/base.vmdk"
      try Qemu.create(base, size: 32 << 20)
      try Qemu.io(base, ["write -P 0x01 0 8M"])
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "\(folder)/mid.vmdk")
      try Qemu.io("\(folder)/mid.vmdk", ["write -P 0x02 1M 1M", "write -z 3M 64k"])
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk", "\(folder)/top.vmdk")
      try Qemu.io("\(folder)/top.vmdk", ["write -P 0x03 \(2 << 20 + 4096) 512", "write -P 0x04 20M 1M"])
      let want = try Qemu.rawSHA256("\(folder)/top.vmdk", scratch: folder)
      for type in ["monolithicSparse", "raw"] {
        let out = "\(folder)/flat-\(type)"
        try Convert.checked(["\(folder)/top.vmdk", out, "--type", type, "-q"])
        #expect(try Qemu.rawSHA256(out, scratch: folder) == want, "\(type)")
        let chain = try vmdkInspect("chain", out).output
        #expect(!chain.contains("base.vmdk"), "the output has no parent: \(chain)")
      }
    }
  }

  /// Images written by qemu-img in every subformat convert with us to the same bytes.
  @Test(arguments: [
    "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized",
  ])
  func fromQemuSubformats(subformat: String) throws {
    try withTemporaryFolder { folder in
      let src = try makeSource(folder)
      let qemuOut = "\(folder)/q.vmdk"
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=\(subformat)", src, qemuOut)
      let want = try Qemu.rawSHA256(src, scratch: folder)
      try Convert.checked([qemuOut, "\(folder)/ours.vmdk", "-q", "--verify"])
      #expect(try Qemu.rawSHA256("\(folder)/ours.vmdk", scratch: folder) == want)
    }
  }

  /// Split outputs larger than 2 GiB, with data across the extent boundary.
  @Test(arguments: ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"])
  func splitLargerThan2GiB(type: String) throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: 5 << 30)
      try Qemu.io(src, ["write -P 0x5a \((2 << 30) - 3000) 70000", "write -P 0x6b \((5 << 30) - 65536) 65536"])
      let dst = "\(folder)/split.vmdk"
      try Convert.checked([src, dst, "--type", type, "-q"])
      #expect(try Qemu.rawSHA256(dst, scratch: folder) == Qemu.rawSHA256(src, scratch: folder))
      let extents = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("split-") }
      #expect(extents.count == 3, "\(extents)")
    }
  }

  /// Piped, the tool prints nothing on success; on a terminal it draws a progress bar with
  /// the rate and the time left (run under `script`, which gives it a pseudo-terminal).
  @Test func progressOnlyOnATerminal() throws {
    try withTemporaryFolder { folder in
      let src = try makeSource(folder)
      let piped = try Convert.checked([src, "\(folder)/a.vmdk"])
      #expect(piped.errorOutput.isEmpty && piped.output.isEmpty, "\(piped.errorOutput)")
      let tool = try Convert.path()
      let command = "'\(tool)' '\(src)' '\(folder)/b.vmdk' 2>&1"
      let tty = try runChecked(try requireTool("script"), ["-qefc", command, "/dev/null"])
      #expect(tty.output.contains("100%") && tty.output.contains("/s") && tty.output.contains("left"), "\(tty.output)")
      let quiet = try runChecked(
        try requireTool("script"),
        ["-qefc", command.replacingOccurrences(of: "b.vmdk", with: "c.vmdk") + " --quiet", "/dev/null"])
      #expect(!quiet.output.contains("%"), "\(quiet.output)")
    }
  }

  @Test func verifyReportsTheDigest() throws {
    try withTemporaryFolder { folder in
      let src = try makeSource(folder)
      let r = try Convert.checked([src, "\(folder)/v.vmdk", "--verify"])
      let want = try Qemu.rawSHA256(src, scratch: folder)
      #expect(r.errorOutput.contains("verified: sha256 \(want)"), "\(r.errorOutput)")
    }
  }
}

@Suite struct ConvertFailureTests {
  /// One line on stderr naming the tool.
  func expectOneLine(_ r: ProcessResult, sourceLocation: SourceLocation = #_sourceLocation) {
    let lines = r.errorOutput.split(separator: "\n")
    #expect(lines.count == 1, "stderr: \(r.errorOutput)", sourceLocation: sourceLocation)
    #expect(lines.first?.hasPrefix("vmdk-convert: ") == true, sourceLocation: sourceLocation)
  }

  @Test func existingOutputIsRefusedWithoutForce() throws {
    try withTemporaryFolder { folder in
      let src = try makeSource(folder)
      let dst = "\(folder)/dst.vmdk"
      try Data("precious".utf8).write(to: URL(fileURLWithPath: dst))
      let r = try Convert.run([src, dst, "-q"])
      #expect(r.status == 1)
      expectOneLine(r)
      #expect(r.errorOutput.contains("exists"), "\(r.errorOutput)")
      #expect(try String(contentsOfFile: dst, encoding: .utf8) == "precious")
      try Convert.checked([src, dst, "-q", "--force"])
      #expect(try Qemu.rawSHA256(dst, scratch: folder) == Qemu.rawSHA256(src, scratch: folder))
    }
  }

  /// A grain table entry that points past the end of the file, in the middle of the disk:
  /// the conversion fails there, with the file and offset, and leaves nothing.
  @Test func sourceThatBreaksHalfWay() throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: 64 << 20)
      try Qemu.io(src, ["write -P 0x11 0 16M", "write -P 0x22 40M 1M"])
      // Grain 400 (at 25 MiB) gets an entry pointing far past the end of the file. qemu's
      // layout: GD at sector 30 for 64 MiB; its first entry names GT 0.
      let file = try LocalFile(path: src, writable: true)
      let gd = try file.readExactly(at: 30 * 512, count: 4, what: "gd")
      let gt0 = UInt64(gd[0]) | UInt64(gd[1]) << 8 | UInt64(gd[2]) << 16 | UInt64(gd[3]) << 24
      try [UInt8](arrayLiteral: 0, 0, 0, 0x40).withUnsafeBytes { try file.write(at: gt0 * 512 + 400 * 4, from: $0) }
      let before = try fileDigest(src, .sha256)
      let r = try Convert.run([src, "\(folder)/dst.vmdk", "-q"])
      #expect(r.status == 1)
      expectOneLine(r)
      #expect(r.errorOutput.contains("src.vmdk"), "\(r.errorOutput)")
      #expect(try leftovers(folder, keeping: ["src.vmdk"]).isEmpty)
      #expect(try fileDigest(src, .sha256) == before, "the source is untouched")
    }
  }

  /// A file-size limit (what a full disk looks like to the writer): exit 1, one line that
  /// says the disk is full, nothing left.
  @Test func fullDisk() throws {
    try withTemporaryFolder { folder in
      let src = try makeSource(folder, capacity: 256 << 20)
      try Qemu.io(src, ["write -P 0x77 16M 64M"])
      let tool = try Convert.path()
      // ulimit -f counts 1024-byte blocks: 8 MiB.
      let r = try runProcess(
        "/bin/bash",
        ["-c", "ulimit -f 8192; exec \"$0\" \"$@\"", tool, src, "\(folder)/dst.raw", "--type", "raw", "-q"])
      #expect(r.status == 1, "\(r.errorOutput)")
      expectOneLine(r)
      #expect(r.errorOutput.contains("disk full"), "\(r.errorOutput)")
      #expect(try leftovers(folder, keeping: ["src.vmdk"]).isEmpty)
    }
  }

  /// SIGINT while converting: exit 130, one line, no partial DST, no temporary file, and an
  /// existing DST (with --force) is still the old one.
  @Test func interrupted() throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: 2 << 30)
      try Qemu.io(src, ["write -P 0x5a 0 1536M"])
      let dst = "\(folder)/dst.raw"
      try Data("old".utf8).write(to: URL(fileURLWithPath: dst))
      let p = Process()
      p.executableURL = URL(fileURLWithPath: try Convert.path())
      p.arguments = [src, dst, "--type", "raw", "--force", "-q"]
      let err = Pipe()
      p.standardError = err
      try p.run()
      // Wait until the temporary file exists, then interrupt.
      let deadline = Date().addingTimeInterval(30)
      while Date() < deadline,
        try !FileManager.default.contentsOfDirectory(atPath: folder).contains(where: { $0.hasPrefix(".dst.raw.tmp") })
      {
        usleep(2000)
      }
      usleep(50_000)
      kill(p.processIdentifier, SIGINT)
      let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
      p.waitUntilExit()
      #expect(p.terminationStatus == 130, "\(stderr)")
      #expect(stderr.split(separator: "\n").count == 1 && stderr.contains("interrupted"), "\(stderr)")
      #expect(try leftovers(folder, keeping: ["src.vmdk", "dst.raw"]).isEmpty)
      #expect(try String(contentsOfFile: dst, encoding: .utf8) == "old")
    }
  }
}
