// vmdk-files on NTFS streams: `cat`/`stat` of PATH:STREAM and `extract --streams`. An
// ntfs-3g mount writes the streams (as user.* xattrs); the bytes written are the oracle.

import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

// <sys/xattr.h> is not in Glibc's Swift module.
@_silgen_name("lgetxattr")
private func restore_lgetxattr(
  _ path: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>, _ value: UnsafeMutableRawPointer?, _ size: Int
) -> Int

/// The value of extended attribute `name` of `path`, or nil when it has none.
func readXattr(_ path: String, _ name: String) -> [UInt8]? {
  var value = [UInt8](repeating: 0, count: 65536)
  let n = value.withUnsafeMutableBytes { restore_lgetxattr(path, name, $0.baseAddress, $0.count) }
  return n < 0 ? nil : Array(value[0..<n])
}

@Suite struct NTFSRestoreTests {
  static let small = Array("[ZoneTransfer]\nZoneId=3\n".utf8)
  static let big = NTFSOracle.content(40_000, seed: 21)
  static let body = NTFSOracle.text(90_000, seed: 8)

  /// A 16 MiB NTFS volume: /docs/a.txt with a small and a 40 KB stream, /docs/plain.bin.
  static func makeVolume(_ dir: String) throws -> String {
    let image = "\(dir)/ntfs.img"
    let mnt = "\(dir)/mnt"
    try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
    try runChecked("/usr/bin/truncate", ["-s", "16M", image])
    try runChecked(try requireTool("mkntfs"), ["-F", "-f", "-q", "-c", "4096", "-L", "RESTORE", image])
    try NTFSOracle.withMount(image, mnt, options: "rw") {
      try FileManager.default.createDirectory(atPath: "\(mnt)/docs", withIntermediateDirectories: true)
      try NTFSOracle.write("\(mnt)/docs/a.txt", body)
      try NTFSOracle.setXattr("\(mnt)/docs/a.txt", "user.Zone.Identifier", small)
      try NTFSOracle.setXattr("\(mnt)/docs/a.txt", "user.big", big)
      try NTFSOracle.write("\(mnt)/docs/plain.bin", Array("plain".utf8))
      // A stream whose sidecar name would leave the folder.
      try NTFSOracle.setXattr("\(mnt)/docs/plain.bin", "user.up/../../escape", Array("EVIL".utf8))
    }
    return image
  }

  @Test func catAndStatOfANamedStream() throws {
    _ = try requireTool("ntfs-3g")
    try withTemporaryFolder { dir in
      let image = try Self.makeVolume(dir)
      let tool = try builtToolPath("vmdk-files")
      let s = try runChecked(tool, ["cat", image, "/docs/a.txt:Zone.Identifier"]).stdout
      #expect(Array(s) == Self.small)
      let b = try runChecked(tool, ["cat", image, "/DOCS/a.txt:big"]).stdout
      #expect(NTFSOracle.md5(Array(b)) == NTFSOracle.md5(Self.big))
      let u = try runChecked(tool, ["cat", image, "/docs/a.txt"]).stdout
      #expect(NTFSOracle.md5(Array(u)) == NTFSOracle.md5(Self.body))
      let st = try runChecked(tool, ["stat", "--json", image, "/docs/a.txt:big"]).output
      #expect(st.contains("\"size\": 40000") && st.contains("\"stream\": \"big\""), "\(st)")
      // Stream names ignore case, as on Windows; stat names the stream as it is on disk.
      let folded = try runChecked(tool, ["cat", image, "/docs/A.TXT:zone.IDENTIFIER"]).stdout
      #expect(Array(folded) == Self.small)
      let st2 = try runChecked(tool, ["stat", "--json", image, "/docs/a.txt:BIG"]).output
      #expect(st2.contains("\"size\": 40000") && st2.contains("\"stream\": \"big\""), "\(st2)")
      let missing = try runProcess(tool, ["cat", image, "/docs/a.txt:nope"])
      #expect(missing.status != 0 && missing.errorOutput.contains("no stream"), "\(missing.errorOutput)")
      print("ntfs streams: cat of 2 streams and the unnamed one equal the bytes written")
    }
  }

  @Test func extractStreamsNoneXattrAndSidecar() throws {
    _ = try requireTool("ntfs-3g")
    try withTemporaryFolder { dir in
      let image = try Self.makeVolume(dir)
      let tool = try builtToolPath("vmdk-files")
      let help = try runChecked(tool, ["extract", "--help"]).output
      #expect(help.contains("--streams") && help.contains("none (default)"), "\(help)")

      // none (the default): the file only.
      try runChecked(tool, ["extract", image, "/docs", "--to", "\(dir)/none"])
      let noneList = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/none/docs").sorted()
      #expect(noneList == ["a.txt", "plain.bin"], "\(noneList)")
      #expect(readXattr("\(dir)/none/docs/a.txt", "user.Zone.Identifier") == nil)
      #expect(readXattr("\(dir)/none/docs/a.txt", "user.ntfs.attrib") == nil)

      // xattr: the small stream and the attributes; the 40 KB one where the host takes it,
      // else a warning (ext4 holds about 4 KiB of attributes per file).
      let x = try runProcess(tool, ["extract", image, "/docs", "--to", "\(dir)/x", "--streams", "xattr"])
      #expect(x.status == 0, "\(x.errorOutput)")
      let xa = "\(dir)/x/docs/a.txt"
      #expect(readXattr(xa, "user.Zone.Identifier") == Self.small)
      #expect(readXattr(xa, "user.ntfs.attrib").map { String(decoding: $0, as: UTF8.self) } == "0x00000020")
      #expect(readXattr("\(dir)/x/docs/plain.bin", "user.up/../../escape") == Array("EVIL".utf8))
      if let big = readXattr(xa, "user.big") {
        #expect(big == Self.big)
      } else {
        #expect(x.errorOutput.contains("warning: docs/a.txt:big"), "\(x.errorOutput)")
      }
      #expect(NTFSOracle.md5(Array(try Data(contentsOf: URL(fileURLWithPath: xa)))) == NTFSOracle.md5(Self.body))

      // sidecar: NAME:STREAM files with the file's times; the unsafe name refused and named.
      let sc = try runProcess(tool, ["extract", image, "/docs", "--to", "\(dir)/sc", "--streams", "sidecar"])
      #expect(sc.status == 1, "\(sc.errorOutput)")
      #expect(sc.errorOutput.contains("docs/plain.bin:up/../../escape: not restored"), "\(sc.errorOutput)")
      let scList = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/sc/docs").sorted()
      #expect(scList == ["a.txt", "a.txt:Zone.Identifier", "a.txt:big", "plain.bin"], "\(scList)")
      #expect(!FileManager.default.fileExists(atPath: "\(dir)/escape"))
      let zone = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/sc/docs/a.txt:Zone.Identifier"))
      #expect(Array(zone) == Self.small)
      let big = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/sc/docs/a.txt:big"))
      #expect(NTFSOracle.md5(Array(big)) == NTFSOracle.md5(Self.big))
      let fileTime =
        try FileManager.default.attributesOfItem(atPath: "\(dir)/sc/docs/a.txt")[.modificationDate] as? Date
      let sideTime =
        try FileManager.default.attributesOfItem(atPath: "\(dir)/sc/docs/a.txt:big")[.modificationDate] as? Date
      #expect(fileTime != nil && fileTime == sideTime)
      #expect(readXattr("\(dir)/sc/docs/a.txt", "user.ntfs.attrib") == nil)

      let bad = try runProcess(tool, ["extract", image, "/docs", "--to", "\(dir)/bad", "--streams", "all"])
      #expect(bad.status != 0 && bad.errorOutput.contains("none, xattr or sidecar"), "\(bad.errorOutput)")
      print(
        "ntfs extract: none 2 files; xattr \(x.errorOutput.contains("warning") ? "2 streams + 1 warned" : "3 streams"); sidecar 2 streams, 1 unsafe name refused"
      )
    }
  }
}
