// vmdk-mount's direct io (FOPEN_DIRECT_IO) against shared mmap: the shim asks the kernel for
// FUSE_DIRECT_IO_ALLOW_MMAP in the INIT reply (libfuse 3.14 cannot), so `mmap(MAP_SHARED,
// PROT_READ)` of a file read without the page cache gives the bytes `vmdk-files cat` gives;
// before, it failed with ENODEV. Kernels older than 6.6 do not know the flag: there the
// mapping of a direct-io file still fails with ENODEV, and the test says so.
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
  @Test func sharedMmapOfADirectIOFileEqualsVmdkFilesCat() throws {
    _ = try requireFuse()
    try withTemporaryFolder { dir in
      let src = "\(dir)/src"
      try shell(
        """
        set -e; mkdir -p '\(src)'; cd '\(src)'
        head -c 9000000 /dev/urandom > big.bin
        truncate -s 3M sparse.bin
        head -c 40000 /dev/urandom | dd of=sparse.bin bs=1 seek=2000000 conv=notrunc status=none
        """)
      let fs = "\(dir)/fs.img"
      try runChecked(try requireTool("mke2fs"), ["-q", "-F", "-t", "ext4", "-b", "4096", "-d", src, fs, "64M"])
      let image = try MountOracle.gptDisk(fs, dir, name: "d")
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
}
