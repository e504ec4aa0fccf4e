// vmdk-files on NTFS streams: `cat`/`stat` of PATH:STREAM and `extract --streams`. An
// ntfs-3g mount writes the streams (as user.* xattrs); the bytes written are the oracle.

import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

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
      let missing = try runProcess(tool, ["cat", image, "/docs/a.txt:nope"])
      #expect(missing.status != 0 && missing.errorOutput.contains("no stream"), "\(missing.errorOutput)")
      print("ntfs streams: cat of 2 streams and the unnamed one equal the bytes written")
    }
  }
}
