// Two gaps of the NTFS reader that the matrix brought up, on small mkntfs volumes filled
// through ntfs-3g:
//  - stream names are case-insensitive on NTFS (Windows opens `file:Stream` and
//    `file:STREAM` as one stream): the reader folds them through $UpCase, an exact match
//    first.

import Foundation
import Glibc
import Testing
import VMDKBlock
import VMDKFiles

@Suite(.serialized) struct NTFSMatrixReaderTests {
  /// A 16 MiB volume (4 KiB clusters) that ntfs-3g filled by `fill`.
  static func volume(_ dir: String, cluster: Int = 4096, _ fill: (String) throws -> Void) throws -> String {
    let image = "\(dir)/ntfs.img"
    let mnt = "\(dir)/mnt"
    try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
    try runChecked("/usr/bin/truncate", ["-s", "16M", image])
    try runChecked(try requireTool("mkntfs"), ["-F", "-f", "-q", "-c", String(cluster), "-L", "GAPS", image])
    try NTFSOracle.withMount(image, mnt, options: "rw") { try fill(mnt) }
    return image
  }

  static func readAll(_ fs: NTFSFileSystem, _ id: FileID, stream: String) throws -> [UInt8] {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      let n = try buffer.withUnsafeMutableBytes {
        try fs.readStream(id, named: stream, at: UInt64(out.count), into: $0)
      }
      if n == 0 { return out }
      out += buffer[0..<n]
    }
  }

  @Test func streamNamesFoldCaseThroughUpCase() throws {
    _ = try requireTool("ntfs-3g")
    let big = NTFSOracle.content(60_000, seed: 31)
    try withTemporaryFolder { dir in
      let image = try Self.volume(dir) { m in
        try NTFSOracle.write("\(m)/file.txt", Array("main".utf8))
        try NTFSOracle.setXattr("\(m)/file.txt", "user.Zone.Identifier", Array("[ZoneTransfer]\n".utf8))
        try NTFSOracle.setXattr("\(m)/file.txt", "user.Ünïcödé-Strom", big)
        // Two streams that differ only in case (ntfs-3g keeps both): each is found exactly.
        try NTFSOracle.setXattr("\(m)/file.txt", "user.twin", Array("lower".utf8))
        try NTFSOracle.setXattr("\(m)/file.txt", "user.TWIN", Array("upper".utf8))
      }
      let fs = try #require(try FileSystems.open(try ExtRawVolume(image)) as? NTFSFileSystem)
      let id = try fs.lookup("/file.txt")
      #expect(Set(try fs.streams(id).map(\.displayName)) == ["Zone.Identifier", "Ünïcödé-Strom", "twin", "TWIN"])
      for name in ["Zone.Identifier", "ZONE.IDENTIFIER", "zone.identifier", "zOnE.iDeNtIfIeR"] {
        #expect(try Self.readAll(fs, id, stream: name) == Array("[ZoneTransfer]\n".utf8), "\(name)")
        #expect(try fs.stream(named: name, of: id) == NamedStream(name: Array("Zone.Identifier".utf8), size: 15))
      }
      // Beyond ASCII: $UpCase maps ü to Ü, ï to Ï, ö to Ö, é to É.
      for name in ["ÜNÏCÖDÉ-STROM", "ünïcödé-strom"] {
        #expect(try Self.readAll(fs, id, stream: name) == big, "\(name)")
        #expect(try fs.stream(named: name, of: id)?.displayName == "Ünïcödé-Strom")
      }
      #expect(try Self.readAll(fs, id, stream: "twin") == Array("lower".utf8))
      #expect(try Self.readAll(fs, id, stream: "TWIN") == Array("upper".utf8))
      // Not a prefix, not another name.
      for name in ["Zone.Identifie", "Zone.Identifier2", "UNICODE-STROM", ""] {
        #expect(try fs.stream(named: name, of: id) == nil, "\(name)")
        expectVMDKError(.fileNotFound) {
          var b = [UInt8](repeating: 0, count: 16)
          _ = try b.withUnsafeMutableBytes { try fs.readStream(id, named: name, at: 0, into: $0) }
        }
      }
    }
  }
}
