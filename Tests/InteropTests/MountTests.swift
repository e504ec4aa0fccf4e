// vmdk-mount through the kernel: ext4 and FAT made by mke2fs -d and mkfs.fat + mcopy, and
// NTFS filled through ntfs-3g (against a read-only ntfs-3g mount), each inside a
// GPT disk, mounted and read with find, md5sum (8 at once) and readlink against the source
// tree; the raw view against qemu-img convert; streamOptimized, a 2-link chain and nbd://;
// SIGTERM, SIGINT, fusermount3 -u and the daemon leaving nothing behind; writes refused with
// EROFS; hostile names escaped. Every test unmounts in a defer, whatever failed.
import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

/// /dev/fuse and fusermount3, or a failure that says what is missing.
func requireFuse() throws -> String {
  let fusermount = try requireTool("fusermount3")
  guard FileManager.default.fileExists(atPath: "/dev/fuse") else {
    if ProcessInfo.processInfo.environment["CI"] == "true" {
      throw ToolFailure("/dev/fuse is missing on CI: the CI job must run with FUSE (--device /dev/fuse)")
    }
    throw ToolFailure("/dev/fuse is missing: load the fuse module (modprobe fuse) or run the container with it")
  }
  return fusermount
}

/// Whether `path` (absolute, canonical) is a mount point now: /proc/self/mountinfo's 5th field.
func isMounted(_ path: String) -> Bool {
  guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
  return text.split(separator: "\n").contains { line in
    let f = line.split(separator: " ")
    return f.count > 4 && f[4] == path
  }
}

/// Polls `condition` every 20 ms for up to `seconds`.
func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
  let deadline = Date().addingTimeInterval(seconds)
  while !condition() {
    if Date() > deadline { return false }
    usleep(20_000)
  }
  return true
}

/// A vmdk-mount in the foreground (a child of the test), mounted when init returns.
final class MountProcess {
  let process = Process()
  let mountpoint: String
  let logPath: String
  let fusermount: String

  init(_ image: String, at folder: String, _ extra: [String] = []) throws {
    fusermount = try requireFuse()
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    guard let real = realpath(folder, nil) else { throw ToolFailure("realpath \(folder) failed") }
    mountpoint = String(cString: real)
    free(real)
    logPath = mountpoint + ".log"
    _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    process.executableURL = URL(fileURLWithPath: try builtToolPath("vmdk-mount"))
    process.arguments = [image, mountpoint, "-f"] + extra
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = FileHandle(forWritingAtPath: logPath)
    process.standardError = FileHandle(forWritingAtPath: logPath)
    try process.run()
    guard waitFor(20, { isMounted(mountpoint) || !process.isRunning }), isMounted(mountpoint) else {
      cleanUp()
      throw ToolFailure("vmdk-mount \(process.arguments ?? []) did not mount: \(log)")
    }
  }

  var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

  /// `fusermount3 -u`; returns vmdk-mount's exit status (nil: it did not end within 10 s).
  /// "Device or resource busy" is asked again for up to 5 s: a process spawned by another test
  /// holds this process's open files (one in the mount too) from its fork until its exec.
  func unmount() throws -> Int32? {
    for attempt in 0..<50 {
      let r = try runProcess(fusermount, ["-u", mountpoint])
      if r.status == 0 { break }
      guard attempt < 49, r.errorOutput.contains("Device or resource busy") else {
        throw ToolFailure("`\(fusermount) -u \(mountpoint)` exited \(r.status): \(r.errorOutput)")
      }
      usleep(100_000)
    }
    return waitForExit()
  }

  func waitForExit() -> Int32? {
    guard waitFor(10, { !process.isRunning }) else { return nil }
    process.waitUntilExit()
    return process.terminationStatus
  }

  /// Whatever happened: unmount lazily, kill the process.
  func cleanUp() {
    if isMounted(mountpoint) { _ = try? runProcess(fusermount, ["-uz", mountpoint]) }
    if process.isRunning {
      kill(process.processIdentifier, SIGKILL)
      process.waitUntilExit()
    }
  }

  deinit { cleanUp() }
}

/// Mounts, runs `body`, and unmounts (checking the clean exit) or cleans up on failure.
func withMount(_ image: String, at folder: String, _ extra: [String] = [], _ body: (String) throws -> Void) throws {
  let m = try MountProcess(image, at: folder, extra)
  defer { m.cleanUp() }
  try body(m.mountpoint)
  let status = try m.unmount()
  #expect(status == 0, "vmdk-mount exit status after fusermount3 -u: \(String(describing: status)); \(m.log)")
  #expect(!isMounted(m.mountpoint), "still mounted after fusermount3 -u")
}

enum MountOracle {
  /// One line per name below `root`: type, size (not for folders: they differ by file
  /// system), mode, owner, link count, mtime in ns, path, symlink target.
  static func records(_ root: String, sizesOfFolders: Bool = false, skip: Set<String> = ["", "lost+found"]) throws
    -> [String: String]
  {
    let out = try runChecked("/usr/bin/find", [root, "-printf", "%y\t%s\t%m\t%U\t%G\t%n\t%T@\t%P\t%l\n"]).output
    var r: [String: String] = [:]
    for line in out.split(separator: "\n", omittingEmptySubsequences: true) {
      var f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
      guard f.count == 9, !skip.contains(f[7]), !f[7].hasPrefix("lost+found/") else { continue }
      if f[0] == "d" && !sizesOfFolders { f[1] = "-" }
      r[f[7]] = f.joined(separator: " ")
    }
    return r
  }

  /// md5 of every regular file, read by 8 md5sum processes at once.
  static func digests(_ root: String) throws -> [String: String] {
    let out = try runChecked(
      "/bin/bash", ["-c", "cd '\(root)' && find . -type f -print0 | xargs -0 -P8 -n2 md5sum"]
    ).output
    var r: [String: String] = [:]
    for line in out.split(separator: "\n") {
      let parts = line.split(separator: " ", maxSplits: 1)
      guard parts.count == 2 else { continue }
      r[String(parts[1].drop(while: { $0 == " " || $0 == "*" }))] = String(parts[0])
    }
    return r
  }

  /// Expects equal maps, naming the first differences.
  static func expectSame(
    _ ours: [String: String], _ theirs: [String: String], _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    guard ours != theirs else { return }
    let keys = Set(ours.keys).union(theirs.keys).sorted().filter { ours[$0] != theirs[$0] }
    let shown = keys.prefix(6).map { "\($0):\n  mount:  \(ours[$0] ?? "-")\n  source: \(theirs[$0] ?? "-")" }
    Issue.record("\(what): \(keys.count) differ\n\(shown.joined(separator: "\n"))", sourceLocation: sourceLocation)
  }

  /// The ext4 test tree: sizes around 4 KiB blocks, 24 files of 0.25–2 MiB (for the parallel
  /// readers), a sparse file, unicode and 255-byte names, 12 folders deep, fast and slow
  /// symlinks, hard links, a FIFO, special mode bits; every time a whole second (mke2fs -d
  /// copies seconds only).
  static func buildExtTree(_ src: String) throws {
    let deep = (1...12).map { "d\($0)" }.joined(separator: "/")
    let long = String(repeating: "L", count: 251) + ".txt"
    try shell(
      """
      set -e; mkdir -p '\(src)/\(deep)' '\(src)/Ünïcödé' '\(src)/empty' '\(src)/sticky'
      cd '\(src)'
      for s in 0 1 1023 4095 4096 4097 8191 65536 65537; do head -c $s /dev/urandom > size$s.bin; done
      for i in $(seq 1 24); do head -c $((i * 87381)) /dev/urandom > big$i.bin; done
      echo unicode > 'Ünïcödé/日本語のファイル名.txt'; echo long > '\(long)'; echo deep > '\(deep)/bottom.txt'
      truncate -s 5M sparse.bin; printf middle | dd of=sparse.bin bs=1 seek=3000000 conv=notrunc status=none
      ln -s size1.bin fast-link; ln -s "$(printf 'x%.0s' $(seq 1 200))/target" slow-link; ln -s '\(deep)' deep-link
      ln size4096.bin hard-a; ln size4096.bin 'Ünïcödé/hard-b'; mkfifo fifo
      chmod 600 size1.bin; chmod 751 size0.bin; chmod 4755 size1023.bin; chmod 1777 sticky; chmod 2750 empty
      find . -depth -exec touch -h -d @1700000000 {} +
      touch -h -d @1600000001 size1.bin fast-link empty
      touch -d @1500000002 '\(deep)'
      """)
  }

  /// A GPT disk whose partition 1 is exactly `fs` (64 MiB), as monolithicSparse.
  static func gptDisk(_ fs: String, _ dir: String, name: String) throws -> String {
    try shell(
      """
      cd '\(dir)'; truncate -s 72M \(name).img
      sgdisk -o -n 1:2048:+64M -t 1:8300 \(name).img >/dev/null
      dd if='\(fs)' of=\(name).img bs=1M seek=1 conv=notrunc status=none
      """)
    try Qemu.img(
      "convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/\(name).img", "\(dir)/\(name).vmdk")
    return "\(dir)/\(name).vmdk"
  }

  /// mke2fs -d of `src` into a 64 MiB ext4, with one file's mtime given nanoseconds (by
  /// debugfs, and the same on the source).
  static func ext4(_ src: String, _ fs: String, options: [String] = []) throws {
    try runChecked(try requireTool("mke2fs"), ["-q", "-F", "-t", "ext4"] + options + ["-d", src, fs, "64M"])
    // 123456789 ns: the extra field holds ns << 2 (the low 2 bits extend the epoch).
    try runChecked(try requireTool("debugfs"), ["-w", "-R", "sif /size4097.bin mtime_extra 493827156", fs])
    try shell("touch -d @1700000000.123456789 '\(src)/size4097.bin'")
  }
}

@Suite(.serialized) struct MountTests {
  @Test func ext4MountMatchesTheSourceTreeWithEightParallelReaders() throws {
    _ = try requireFuse()
    try withTemporaryFolder { dir in
      let src = "\(dir)/src"
      try MountOracle.buildExtTree(src)
      try MountOracle.ext4(src, "\(dir)/fs.img")
      let vmdk = try MountOracle.gptDisk("\(dir)/fs.img", dir, name: "d")
      let source = try MountOracle.records(src)
      let sourceDigests = try MountOracle.digests(src)
      #expect(sourceDigests.count == 9 + 24 + 6)
      try withMount(vmdk, at: "\(dir)/mnt") { mnt in
        let start = Date()
        let ours = try MountOracle.records(mnt)
        MountOracle.expectSame(ours, source, "find -printf")
        #expect(ours.count == source.count && source.count > 50)
        #expect(ours["size4097.bin"]?.contains("1700000000.1234567890") == true, "\(ours["size4097.bin"] ?? "")")
        let digests = try MountOracle.digests(mnt)
        MountOracle.expectSame(digests, sourceDigests, "md5sum -P8")
        print("mount ext4: \(ours.count) names, \(digests.count) files read in \(Date().timeIntervalSince(start)) s")
        // Symlinks and hard links.
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "\(mnt)/fast-link") == "size1.bin")
        #expect(try String(contentsOfFile: "\(mnt)/deep-link/bottom.txt", encoding: .utf8) == "deep\n")
        var a = stat()
        var b = stat()
        var c = stat()
        #expect(stat("\(mnt)/hard-a", &a) == 0 && stat("\(mnt)/Ünïcödé/hard-b", &b) == 0)
        #expect(stat("\(mnt)/size4096.bin", &c) == 0)
        #expect(a.st_ino == b.st_ino && a.st_ino == c.st_ino && a.st_nlink == 3)
        #expect(stat("\(mnt)/size4097.bin", &c) == 0 && c.st_ino != a.st_ino)
        // Read-only: every write fails with EROFS.
        for script in [
          "touch '\(mnt)/x'", "mkdir '\(mnt)/newdir'", "echo x >> '\(mnt)/size1.bin'", "rm '\(mnt)/size0.bin'",
          "chmod 777 '\(mnt)/size1.bin'", "ln -s a '\(mnt)/newlink'", "mv '\(mnt)/size0.bin' '\(mnt)/moved'",
        ] {
          let r = try runProcess("/bin/bash", ["-c", script])
          #expect(r.status != 0 && r.errorOutput.contains("Read-only file system"), "\(script): \(r.errorOutput)")
        }
        var vfs = statvfs()
        #expect(statvfs(mnt, &vfs) == 0 && vfs.f_flag & 1 != 0)
        #expect(vfs.f_bsize == 4096 && vfs.f_blocks == 16384 && vfs.f_namemax == 255, "statvfs: \(vfs)")
      }
    }
  }

  @Test func fatMountMatchesTheSourceTree() throws {
    _ = try requireFuse()
    _ = try requireTool("mkfs.fat")
    _ = try requireTool("mcopy")
    try withTemporaryFolder { dir in
      let src = "\(dir)/src"
      try shell(
        """
        set -e; mkdir -p '\(src)/Deep/a/b/c/d/e/f' '\(src)/Ünïcödé Földer' '\(src)/empty'; cd '\(src)'
        for s in 0 1 511 512 513 4095 4096 4097 100000; do head -c $s /dev/urandom > "size $s.bin"; done
        for i in $(seq 1 16); do head -c $((i * 65537)) /dev/urandom > big$i.bin; done
        echo unicode > 'Ünïcödé Földer/日本語のファイル名.txt'; echo deep > Deep/a/b/c/d/e/f/bottom.txt
        echo long > 'A rather long file name, with spaces and a comma.text'
        find . -type f -exec touch -d @1700000000 {} +; touch -d @1600000002 'size 1.bin'
        cd '\(dir)'; mkfs.fat -C -F 32 -s 1 -n MOUNTFAT fs.img 65536 >/dev/null
        TZ=UTC mcopy -s -m -i fs.img '\(src)'/* ::/
        """)
      let vmdk = try MountOracle.gptDisk("\(dir)/fs.img", dir, name: "d")
      // FAT has no modes, owners or links: types, sizes (files) and mtimes (files) are compared.
      func fatView(_ r: [String: String]) -> [String: String] {
        r.mapValues { line in
          let f = line.split(separator: " ", omittingEmptySubsequences: false)
          return f[0] == "d"
            ? "d \(f[7...].joined(separator: " "))" : "\(f[0]) \(f[1]) \(f[6]) \(f[7...].joined(separator: " "))"
        }
      }
      let source = fatView(try MountOracle.records(src))
      let sourceDigests = try MountOracle.digests(src)
      #expect(sourceDigests.count == 9 + 16 + 3)
      try withMount(vmdk, at: "\(dir)/mnt") { mnt in
        let ours = fatView(try MountOracle.records(mnt))
        MountOracle.expectSame(ours, source, "find -printf on FAT32")
        #expect(ours["size 1.bin"]?.contains(" 1600000002.0000000000 ") == true, "\(ours["size 1.bin"] ?? "")")
        MountOracle.expectSame(try MountOracle.digests(mnt), sourceDigests, "md5sum -P8 on FAT32")
        let r = try runProcess("/bin/bash", ["-c", "touch '\(mnt)/x'"])
        #expect(r.status != 0 && r.errorOutput.contains("Read-only file system"))
      }
    }
  }

  @Test func rawViewMatchesQemuImgAndThePartitionBytes() throws {
    _ = try requireFuse()
    try withTemporaryFolder { dir in
      try shell(
        "cd '\(dir)'; truncate -s 64M fs.img; head -c 3M /dev/urandom | dd of=fs.img bs=1M seek=7 conv=notrunc status=none"
      )
      try shell(
        "cd '\(dir)'; printf 'tail of the partition' | dd of=fs.img bs=1 seek=67108843 conv=notrunc status=none")
      let vmdk = try MountOracle.gptDisk("\(dir)/fs.img", dir, name: "d")
      let diskDigest = try Qemu.rawSHA256(vmdk, scratch: dir)
      let partitionDigest = try fileDigest("\(dir)/fs.img", .sha256)
      try withMount(vmdk, at: "\(dir)/mnt", ["--raw"]) { mnt in
        let names = try FileManager.default.contentsOfDirectory(atPath: mnt).sorted()
        #expect(names == ["disk", "p1"])
        #expect(try fileDigest("\(mnt)/disk", .sha256) == diskDigest)
        #expect(try fileDigest("\(mnt)/p1", .sha256) == partitionDigest)
        var st = stat()
        #expect(stat("\(mnt)/p1", &st) == 0 && st.st_size == 64 << 20)
        #expect(stat("\(mnt)/disk", &st) == 0 && st.st_size == 72 << 20)
        // 8 readers of the same file at once, each its own 8 MiB slice.
        let r = try runChecked(
          "/bin/bash",
          [
            "-c",
            "for i in $(seq 0 7); do dd if='\(mnt)/p1' bs=1M skip=$((i*8)) count=8 status=none | md5sum & done | sort; wait",
          ])
        let expected = try runChecked(
          "/bin/bash",
          [
            "-c",
            "for i in $(seq 0 7); do dd if='\(dir)/fs.img' bs=1M skip=$((i*8)) count=8 status=none | md5sum; done | sort",
          ]
        )
        #expect(r.output == expected.output && r.output.split(separator: "\n").count == 8)
      }

      // MBR with a logical partition: p1 and p5, each its byte range of the disk.
      _ = try requireTool("sfdisk")
      try shell(
        """
        cd '\(dir)'; truncate -s 40M m.img
        printf 'label: dos\\nstart=2048, size=8192, type=83\\nstart=12288, size=40000, type=5\\nstart=14336, size=20000, type=83\\n' | sfdisk -q m.img
        head -c 4M /dev/urandom | dd of=m.img bs=512 seek=2048 conv=notrunc status=none
        head -c 9M /dev/urandom | dd of=m.img bs=512 seek=14336 conv=notrunc status=none
        dd if=m.img of=p5.raw bs=512 skip=14336 count=20000 status=none
        """)
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/m.img", "\(dir)/m.vmdk")
      try withMount("\(dir)/m.vmdk", at: "\(dir)/mnt-mbr", ["--raw"]) { (mnt: String) throws in
        #expect(try FileManager.default.contentsOfDirectory(atPath: mnt).sorted() == ["disk", "p1", "p5"])
        #expect(try fileDigest("\(mnt)/p5", .sha256) == (try fileDigest("\(dir)/p5.raw", .sha256)))
        #expect(try fileDigest("\(mnt)/disk", .sha256) == (try fileDigest("\(dir)/m.img", .sha256)))
      }
    }
  }

  @Test func streamOptimizedChainAndNBDLocationsServeTheSameTree() throws {
    _ = try requireFuse()
    try withTemporaryFolder { dir in
      let src = "\(dir)/src"
      try MountOracle.buildExtTree(src)
      try MountOracle.ext4(src, "\(dir)/fs.img")
      let vmdk = try MountOracle.gptDisk("\(dir)/fs.img", dir, name: "d")
      let source = try MountOracle.records(src)
      let sourceDigests = try MountOracle.digests(src)

      // streamOptimized.
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "\(dir)/d.img", "\(dir)/s.vmdk")
      try withMount("\(dir)/s.vmdk", at: "\(dir)/mnt-stream") { mnt in
        MountOracle.expectSame(try MountOracle.records(mnt), source, "streamOptimized: find")
        MountOracle.expectSame(try MountOracle.digests(mnt), sourceDigests, "streamOptimized: md5")
      }

      // A 2-link chain whose child changes, adds and removes files.
      let src2 = "\(dir)/src2"
      try shell(
        """
        set -e; cp -a '\(src)' '\(src2)'; cd '\(src2)'
        echo changed > size1.bin; rm big3.bin; head -c 300000 /dev/urandom > added.bin
        touch -h -d @1700000000 size1.bin added.bin .; touch -d @1700000000.123456789 size4097.bin
        """)
      try MountOracle.ext4(src2, "\(dir)/fs2.img")
      _ = try MountOracle.gptDisk("\(dir)/fs2.img", dir, name: "d2")
      try Qemu.img("convert", "-O", "vmdk", "-B", vmdk, "-F", "vmdk", "\(dir)/d2.img", "\(dir)/child.vmdk")
      let changed = try MountOracle.digests(src2)
      try withMount("\(dir)/child.vmdk", at: "\(dir)/mnt-child") { mnt in
        MountOracle.expectSame(try MountOracle.records(mnt), try MountOracle.records(src2), "child: find")
        let d = try MountOracle.digests(mnt)
        MountOracle.expectSame(d, changed, "child: md5")
        #expect(d["./added.bin"] != nil && d["./big3.bin"] == nil)
      }

      // http:// through nginx.
      let web = try NginxServer(prefix: "\(dir)/nginx")
      defer { web.stop() }
      try FileManager.default.copyItem(atPath: vmdk, toPath: "\(web.root)/d.vmdk")
      try withMount("\(web.baseURL)/d.vmdk", at: "\(dir)/mnt-http") { mnt in
        MountOracle.expectSame(try MountOracle.records(mnt), source, "http: find")
        MountOracle.expectSame(try MountOracle.digests(mnt), sourceDigests, "http: md5")
      }

      // nbd:// through qemu-nbd.
      let server = try QemuNBDServer(file: vmdk, format: "vmdk", readOnly: true)
      defer { server.stop() }
      try withMount(server.uri(export: "disk"), at: "\(dir)/mnt-nbd") { mnt in
        MountOracle.expectSame(try MountOracle.records(mnt), source, "nbd: find")
        MountOracle.expectSame(try MountOracle.digests(mnt), sourceDigests, "nbd: md5")
      }
    }
  }

  @Test func signalsUnmountAndTheDaemonLeavesNothingBehind() throws {
    let fusermount = try requireFuse()
    try withTemporaryFolder { dir in
      try shell("mkdir -p '\(dir)/src'; echo hello > '\(dir)/src/hello.txt'")
      try runChecked(try requireTool("mke2fs"), ["-q", "-F", "-t", "ext4", "-d", "\(dir)/src", "\(dir)/fs.img", "64M"])
      let vmdk = try MountOracle.gptDisk("\(dir)/fs.img", dir, name: "d")
      for signal in [SIGTERM, SIGINT] {
        let m = try MountProcess(vmdk, at: "\(dir)/mnt-\(signal)")
        defer { m.cleanUp() }
        #expect(try String(contentsOfFile: "\(m.mountpoint)/hello.txt", encoding: .utf8) == "hello\n")
        kill(m.process.processIdentifier, signal)
        #expect(m.waitForExit() == 0, "exit status after signal \(signal): \(m.log)")
        #expect(!isMounted(m.mountpoint), "still mounted after signal \(signal)")
      }

      // Without -f: returns 0 once mounted; fusermount3 -u ends the daemon.
      let mnt = "\(dir)/mnt-daemon"
      try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
      let canonical = try #require(
        realpath(mnt, nil).map { p in
          defer { free(p) }
          return String(cString: p)
        })
      defer { if isMounted(canonical) { _ = try? runProcess(fusermount, ["-uz", canonical]) } }
      let started = try runProcess(try builtToolPath("vmdk-mount"), [vmdk, mnt])
      #expect(started.status == 0, "\(started.errorOutput)")
      #expect(isMounted(canonical))
      func daemons() -> [Int32] {
        let all = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return all.compactMap { Int32($0) }.filter { pid in
          guard let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
          return String(decoding: cmd, as: UTF8.self).contains("vmdk-mount\0\(vmdk)\0\(mnt)")
            && (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.contains(") Z ") != true
        }
      }
      let pids = daemons()
      defer { for p in daemons() { kill(p, SIGKILL) } }
      #expect(pids.count == 1)
      #expect(try String(contentsOfFile: "\(canonical)/hello.txt", encoding: .utf8) == "hello\n")
      try runChecked(fusermount, ["-u", canonical])
      #expect(waitFor(10) { daemons().isEmpty }, "the daemon is still running after fusermount3 -u")
      #expect(!isMounted(canonical))

      // SIGTERM to the daemon unmounts too.
      let again = try runProcess(try builtToolPath("vmdk-mount"), [vmdk, mnt])
      #expect(again.status == 0 && isMounted(canonical), "\(again.errorOutput)")
      let second = daemons()
      #expect(second.count == 1)
      for p in second { kill(p, SIGTERM) }
      #expect(waitFor(10) { daemons().isEmpty }, "the daemon is still running after SIGTERM")
      #expect(waitFor(5) { !isMounted(canonical) }, "still mounted after SIGTERM to the daemon")

      // Errors are reported by the parent, with exit status 2.
      let missing = try runProcess(try builtToolPath("vmdk-mount"), ["\(dir)/missing.vmdk", mnt])
      #expect(missing.status == 2 && missing.errorOutput.contains("missing.vmdk"), "\(missing.errorOutput)")
      #expect(!isMounted(canonical))
    }
  }

  @Test func hostileNamesAreEscapedNotServedAsPathComponents() throws {
    _ = try requireFuse()
    try withTemporaryFolder { dir in
      try shell(
        """
        set -e; mkdir -p '\(dir)/src/sub'; cd '\(dir)/src'
        echo slash > hostile_slash_aXb; echo nul > hostile_nul_aXb; echo plain > sub/plain.txt
        """)
      let fs = "\(dir)/fs.img"
      try runChecked(
        try requireTool("mke2fs"), ["-q", "-F", "-t", "ext4", "-O", "^metadata_csum", "-d", "\(dir)/src", fs, "64M"])
      try patchFile(fs, replacing: "hostile_slash_aXb", with: "hostile_slash_a/b", within: 64 << 20)
      guard let h = FileHandle(forUpdatingAtPath: fs) else { throw ToolFailure("cannot open \(fs)") }
      let all = Array(try h.readToEnd() ?? Data())
      let needle = Array("hostile_nul_aXb".utf8)
      let at = try #require(
        (0...(all.count - needle.count)).first {
          all[$0] == needle[0] && all[$0..<($0 + needle.count)].elementsEqual(needle)
        })
      try h.seek(toOffset: UInt64(at + needle.count - 2))
      try h.write(contentsOf: Data([0]))
      try h.close()
      let vmdk = try MountOracle.gptDisk(fs, dir, name: "d")
      try withMount(vmdk, at: "\(dir)/mnt") { mnt in
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: mnt))
        #expect(names == ["lost+found", "sub", "hostile_slash_a%2Fb", "hostile_nul_a%00b"], "\(names)")
        #expect(try String(contentsOfFile: "\(mnt)/hostile_slash_a%2Fb", encoding: .utf8) == "slash\n")
        #expect(try String(contentsOfFile: "\(mnt)/hostile_nul_a%00b", encoding: .utf8) == "nul\n")
        #expect(!FileManager.default.fileExists(atPath: "\(mnt)/hostile_slash_a"))
      }
    }
  }

  @Test func aReaderErrorIsEIOLoggedOnceAndTheRestStillReads() throws {
    _ = try requireFuse()
    try withTemporaryFolder { dir in
      try shell(
        "mkdir -p '\(dir)/src'; head -c 20000 /dev/urandom > '\(dir)/src/bad.bin'; echo good > '\(dir)/src/good.txt'")
      let fs = "\(dir)/fs.img"
      try runChecked(try requireTool("mke2fs"), ["-q", "-F", "-t", "ext4", "-d", "\(dir)/src", fs, "64M"])
      // The first extent's physical start (i_block word 5) far past the 64 MiB volume.
      try runChecked(try requireTool("debugfs"), ["-w", "-R", "sif /bad.bin block[5] 0x7fffff00", fs])
      let vmdk = try MountOracle.gptDisk(fs, dir, name: "d")
      let m = try MountProcess(vmdk, at: "\(dir)/mnt")
      defer { m.cleanUp() }
      for _ in 0..<3 {
        let r = try runProcess("/bin/cat", ["\(m.mountpoint)/bad.bin"])
        #expect(r.status != 0 && r.errorOutput.contains("Input/output error"), "\(r.errorOutput)")
      }
      #expect(try String(contentsOfFile: "\(m.mountpoint)/good.txt", encoding: .utf8) == "good\n")
      var st = stat()
      #expect(stat("\(m.mountpoint)/bad.bin", &st) == 0 && st.st_size == 20000)
      #expect(try m.unmount() == 0)
      let lines = m.log.split(separator: "\n").filter { $0.contains("/bad.bin") }
      #expect(lines.count == 1, "\(m.log)")
      #expect(lines.first?.contains("at offset 0") == true && lines.first?.contains("outside") == true, "\(m.log)")
    }
  }

  @Test func ntfsMountMatchesAReadOnlyNtfs3gMountOfTheSameVolume() throws {
    _ = try requireFuse()
    let mkntfs = try requireTool("mkntfs")
    _ = try requireTool("ntfs-3g")
    try withTemporaryFolder { dir in
      let fs = "\(dir)/fs.img"
      let theirs = "\(dir)/ntfs3g"
      try FileManager.default.createDirectory(atPath: theirs, withIntermediateDirectories: true)
      try runChecked("/usr/bin/truncate", ["-s", "64M", fs])
      try runChecked(mkntfs, ["-F", "-f", "-q", "-c", "4096", "-L", "MOUNTNTFS", fs])
      try NTFSOracle.withMount(fs, theirs, options: "rw") {
        try shell(
          """
          set -e; cd '\(theirs)'; mkdir -p Deep/a/b/c/d/e 'Ünïcödé Földer' empty comp
          for s in 0 1 511 4095 4096 4097 65537; do head -c $s /dev/urandom > size$s.bin; done
          for i in $(seq 1 12); do head -c $((i * 98304)) /dev/urandom > big$i.bin; done
          echo unicode > 'Ünïcödé Földer/日本語のファイル名.txt'; echo deep > Deep/a/b/c/d/e/bottom.txt
          ln size4096.bin 'Ünïcödé Földer/hard-b'
          truncate -s 3M sparse.bin; printf middle | dd of=sparse.bin bs=1 seek=2000000 conv=notrunc status=none
          """)
        try NTFSOracle.setXattr("\(theirs)/comp", "system.ntfs_attrib_be", [0, 0, 0x08, 0])
        try NTFSOracle.write("\(theirs)/comp/log.txt", NTFSOracle.text(300_000, seed: 41))
        try NTFSOracle.setXattr("\(theirs)/size1.bin", "user.stream", Array("a stream, not a file".utf8))
      }
      // Names, types, sizes and mtimes (folders' sizes, modes and owners are each side's own).
      func view(_ r: [String: String]) -> [String: String] {
        r.mapValues { line in
          let f = line.split(separator: " ", omittingEmptySubsequences: false)
          return "\(f[0]) \(f[0] == "d" ? "-" : f[1]) \(f[6]) \(f[7...].joined(separator: " "))"
        }
      }
      let (want, wantDigests) = try NTFSOracle.withMount(fs, theirs, options: "ro") {
        (view(try MountOracle.records(theirs)), try MountOracle.digests(theirs))
      }
      #expect(wantDigests.count == 7 + 12 + 5, "\(wantDigests.keys.sorted())")
      let vmdk = try MountOracle.gptDisk(fs, dir, name: "d")
      try withMount(vmdk, at: "\(dir)/mnt") { mnt in
        let start = Date()
        let ours = view(try MountOracle.records(mnt).filter { !$0.key.hasPrefix("$") })
        MountOracle.expectSame(ours, want, "find -printf on NTFS")
        let digests = try MountOracle.digests(mnt).filter { !$0.key.hasPrefix("./$") && !$0.key.hasPrefix("$") }
        MountOracle.expectSame(digests, wantDigests, "md5sum -P8 on NTFS")
        print(
          "mount ntfs: \(ours.count) names, \(digests.count) md5 digests equal ntfs-3g's in \(String(format: "%.2f", Date().timeIntervalSince(start))) s"
        )
      }
    }
  }
}
