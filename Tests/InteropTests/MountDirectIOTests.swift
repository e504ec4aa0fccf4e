// vmdk-mount's direct io (FOPEN_DIRECT_IO) against shared mmap: the shim asks the kernel for
// FUSE_DIRECT_IO_ALLOW_MMAP in the INIT reply (libfuse 3.14 cannot), so `mmap(MAP_SHARED,
// PROT_READ)` of a file read without the page cache gives the bytes `vmdk-files cat` gives;
// before, it failed with ENODEV. Kernels older than 6.6 do not know the flag: there the
// mapping of a direct-io file still fails with ENODEV, and the test says so. By default only
// files of at least 16 MiB are read direct (st_blksize 1 MiB shows which), and only when the
// kernel took the flag; --no-direct-io and --direct-io-from move the line.
import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Whether the running kernel is at least `major.minor` (uname's release).
func kernelAtLeast(_ major: Int, _ minor: Int) -> Bool {
  var u = utsname()
  guard uname(&u) == 0 else { return false }
  let release = withUnsafeBytes(of: &u.release) { raw in
    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
  }
  let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
  guard parts.count == 2 else { return false }
  return (parts[0], parts[1]) >= (major, minor)
}

/// The bytes of a shared, read-only mapping of `path`, or the mmap's errno.
func sharedMapping(_ path: String) throws -> Result<[UInt8], MountMapError> {
  let fd = Glibc.open(path, O_RDONLY)
  guard fd >= 0 else { throw ToolFailure("open \(path): \(String(cString: strerror(errno)))") }
  defer { close(fd) }
  var st = stat()
  guard fstat(fd, &st) == 0, st.st_size > 0 else { throw ToolFailure("fstat \(path) failed or empty") }
  let size = Int(st.st_size)
  guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
    return .failure(MountMapError(code: errno))
  }
  defer { munmap(p, size) }
  return .success(Array(UnsafeRawBufferPointer(start: p, count: size)))
}

struct MountMapError: Error, Equatable {
  var code: Int32
}

@Suite(.serialized) struct MountDirectIOTests {
  /// A GPT disk holding a 64 MiB ext4 made by `mke2fs -d` of the files `script` makes (run by
  /// bash in an empty folder).
  static func ext4Disk(_ dir: String, _ script: String) throws -> String {
    let src = "\(dir)/src"
    try shell("set -e; mkdir -p '\(src)'; cd '\(src)'\n" + script)
    let fs = "\(dir)/fs.img"
    try runChecked(try requireTool("mke2fs"), ["-q", "-F", "-t", "ext4", "-b", "4096", "-d", src, fs, "64M"])
    return try MountOracle.gptDisk(fs, dir, name: "d")
  }

  @Test func sharedMmapOfADirectIOFileEqualsVmdkFilesCat() throws {
    _ = try requireFuse()
    try withTemporaryFolder { dir in
      let image = try Self.ext4Disk(
        dir,
        """
        head -c 9000000 /dev/urandom > big.bin
        truncate -s 3M sparse.bin
        head -c 40000 /dev/urandom | dd of=sparse.bin bs=1 seek=2000000 conv=notrunc status=none
        """)
      let cat = try builtToolPath("vmdk-files")
      let allowed = kernelAtLeast(6, 6)
      try withMount(image, at: "\(dir)/mnt", ["--direct-io"]) { mnt in
        for f in ["/big.bin", "/sparse.bin"] {
          try runChecked("/bin/bash", ["-c", "'\(cat)' cat '\(image)' '\(f)' > '\(dir)/want'"])
          let want = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(dir)/want")))
          var st = stat()
          #expect(stat(mnt + f, &st) == 0)
          #expect(st.st_blksize == 1 << 20, "\(f): direct io's st_blksize")
          let got = try sharedMapping(mnt + f)
          switch got {
          case .success(let bytes):
            // Not #expect(bytes == want): a failure would print 9 MB.
            let same = bytes == want
            let first =
              (0..<min(bytes.count, want.count)).first { bytes[$0] != want[$0] } ?? min(bytes.count, want.count)
            #expect(allowed && same, "\(f): mapped \(bytes.count) bytes of \(want.count), first difference at \(first)")
          case .failure(let e):
            #expect(!allowed && e.code == ENODEV, "\(f): mmap failed: \(String(cString: strerror(e.code)))")
          }
        }
      }
    }
  }

  @Test func largeFilesAreReadDirectByDefaultSmallOnesThroughThePageCache() throws {
    _ = try requireFuse()
    try withTemporaryFolder { dir in
      let image = try Self.ext4Disk(
        dir,
        """
        head -c 17000000 /dev/urandom > large.bin
        head -c 300000 /dev/urandom > small.bin
        """)
      let cat = try builtToolPath("vmdk-files")
      var want: [String: String] = [:]
      for f in ["/large.bin", "/small.bin"] {
        want[f] = String(
          try runChecked("/bin/bash", ["-c", "'\(cat)' cat '\(image)' '\(f)' | md5sum"]).output.prefix(32))
      }
      // Without FUSE_DIRECT_IO_ALLOW_MMAP (before 6.6) the default reads nothing direct.
      let allowed = kernelAtLeast(6, 6)
      let cases: [(flags: [String], largeDirect: Bool, smallDirect: Bool)] = [
        ([], allowed, false),
        (["--no-direct-io"], false, false),
        (["--direct-io-from", "256K"], allowed, allowed),
        (["--direct-io"], true, true),
      ]
      for c in cases {
        try withMount(image, at: "\(dir)/mnt", c.flags) { mnt in
          for (f, direct) in [("/large.bin", c.largeDirect), ("/small.bin", c.smallDirect)] {
            var st = stat()
            #expect(stat(mnt + f, &st) == 0)
            #expect(st.st_blksize == (direct ? 1 << 20 : 4096), "\(c.flags) \(f): st_blksize \(st.st_blksize)")
            // Small reads (one request each when direct) and a shared mapping give the same bytes.
            let small = try runChecked("/bin/bash", ["-c", "dd if='\(mnt)\(f)' bs=4k status=none | md5sum"]).output
            #expect(String(small.prefix(32)) == want[f], "\(c.flags) \(f): dd bs=4k through the mount")
            if !direct || allowed {
              guard case .success(let bytes) = try sharedMapping(mnt + f) else {
                Issue.record("\(c.flags) \(f): shared mmap failed")
                continue
              }
              try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/mapped"))
              let mapped = try runChecked("/bin/bash", ["-c", "md5sum < '\(dir)/mapped'"]).output
              #expect(String(mapped.prefix(32)) == want[f], "\(c.flags) \(f): the shared mapping")
            }
          }
        }
      }
    }
  }
}
