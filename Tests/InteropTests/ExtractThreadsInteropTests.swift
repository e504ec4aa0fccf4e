// `vmdk-files extract` with writer threads on a real ext4 (mke2fs -d) inside a VMDK: the
// tree comes back as the source was (md5, mode, size and mtime of every file and folder, hard
// links across folders as links), whatever the number of threads; and a file that cannot be
// restored (it exists already, no --force) is named, the rest restored, exit status 1.
import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

/// Every name below `root`: type, mode, size, mtime (seconds) and md5 of files; symbolic links
/// with their targets.
func statManifest(_ root: String) throws -> [String: String] {
  var m: [String: String] = [:]
  guard let e = FileManager.default.enumerator(atPath: root) else { throw ToolFailure("cannot list \(root)") }
  while let p = e.nextObject() as? String {
    if p == "lost+found" || p.hasPrefix("lost+found/") { continue }
    var st = Glibc.stat()
    guard lstat("\(root)/\(p)", &st) == 0 else { throw ToolFailure("cannot stat \(root)/\(p)") }
    let mode = String(st.st_mode & 0o7777, radix: 8)
    switch st.st_mode & S_IFMT {
    case S_IFDIR: m[p] = "dir \(mode) \(st.st_mtim.tv_sec)"
    case S_IFLNK: m[p] = "link " + ((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(root)/\(p)")) ?? "?")
    default: m[p] = "file \(mode) \(st.st_size) \(st.st_mtim.tv_sec) " + (try fileDigest("\(root)/\(p)", .md5))
    }
  }
  return m
}

func inodeNumber(_ path: String) -> UInt {
  var st = Glibc.stat()
  return lstat(path, &st) == 0 ? UInt(st.st_ino) : 0
}

@Suite(.serialized) struct ExtractThreadsInteropTests {
  /// 20 folders (half of them nested) of 25 files each, modes and times varied, hard links
  /// across folders and symbolic links; folder times set last.
  static func makeImage(_ dir: String) throws -> String {
    _ = try requireTool("mke2fs")
    try shell(
      """
      cd \(dir); mkdir src
      for d in $(seq 0 19); do
        if [ $((d % 2)) = 1 ]; then p=src/d$((d - 1))/d$d; else p=src/d$d; fi
        mkdir -p $p
        for f in $(seq 0 24); do
          head -c $(( (d * 977 + f * 331) % 9000 )) /dev/urandom > $p/f$f
          chmod $(( f % 3 == 0 ? 600 : f % 3 == 1 ? 644 : 755 )) $p/f$f
          touch -d @$(( 1500000000 + d * 1000 + f )) $p/f$f
        done
        ln -s f1 $p/link
      done
      ln src/d0/f3 src/d4/hard-d0-f3
      ln src/d2/d3/f7 src/d8/hard-d3-f7
      ln src/d2/d3/f7 src/hard-top
      for d in $(seq 0 19); do
        if [ $((d % 2)) = 1 ]; then p=src/d$((d - 1))/d$d; else p=src/d$d; fi
        chmod $(( d % 2 == 0 ? 755 : 750 )) $p
      done
      for d in $(seq 19 -1 0); do
        if [ $((d % 2)) = 1 ]; then p=src/d$((d - 1))/d$d; else p=src/d$d; fi
        touch -h -d @$(( 1400000000 + d * 86400 )) $p
      done
      mke2fs -q -F -t ext4 -d src fs.img 32M
      """)
    try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/fs.img", "\(dir)/fs.vmdk")
    return "\(dir)/fs.vmdk"
  }

  @Test func theTreeComesBackTheSameWithAnyNumberOfThreads() throws {
    try withTemporaryFolder { dir in
      let image = try Self.makeImage(dir)
      let source = try statManifest("\(dir)/src")
      #expect(source.count == 20 * 27 + 3)
      for threads in ["0", "2", "4"] {
        let out = "\(dir)/out\(threads)"
        let r = try vmdkFiles(["extract", "--quiet", "--threads", threads, image, "/", "--to", out])
        #expect(r.status == 0, "--threads \(threads): \(r.errorOutput)")
        let got = try statManifest(out)
        #expect(got == source, "--threads \(threads): \(got.filter { source[$0.key] != $0.value }.keys.sorted())")
        #expect(inodeNumber("\(out)/d0/f3") == inodeNumber("\(out)/d4/hard-d0-f3"))
        #expect(inodeNumber("\(out)/d2/d3/f7") == inodeNumber("\(out)/d8/hard-d3-f7"))
        #expect(inodeNumber("\(out)/d2/d3/f7") == inodeNumber("\(out)/hard-top"))
      }
    }
  }

  @Test func aFileThatCannotBeRestoredIsNamedTheRestRestoredExitStatusOne() throws {
    try withTemporaryFolder { dir in
      let image = try Self.makeImage(dir)
      let source = try statManifest("\(dir)/src")
      let out = "\(dir)/out"
      try FileManager.default.createDirectory(atPath: "\(out)/d6", withIntermediateDirectories: true)
      #expect(FileManager.default.createFile(atPath: "\(out)/d6/f12", contents: Data("mine".utf8)))
      let r = try vmdkFiles(["extract", "--quiet", "--threads", "2", image, "/", "--to", out])
      #expect(r.status == 1)
      let lines = r.errorOutput.split(separator: "\n")
      #expect(lines.count == 1 && lines.first?.contains("/d6/f12") == true, "\(r.errorOutput)")
      #expect(r.errorOutput.contains("exists"), "\(r.errorOutput)")
      #expect(FileManager.default.contents(atPath: "\(out)/d6/f12") == Data("mine".utf8))
      var got = try statManifest(out)
      var expected = source
      got["d6/f12"] = nil
      expected["d6/f12"] = nil
      #expect(got == expected, "\(got.filter { expected[$0.key] != $0.value }.keys.sorted())")
    }
  }
}
