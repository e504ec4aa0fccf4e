// Two gaps of the NTFS reader that the matrix brought up, on small mkntfs volumes filled
// through ntfs-3g:
//  - stream names are case-insensitive on NTFS (Windows opens `file:Stream` and
//    `file:STREAM` as one stream): the reader folds them through $UpCase, an exact match
//    first;
//  - when $MFT's own record 0 is torn (a bad update-sequence fixup) or its runlist is
//    unreadable, records 0-3 come from $MFTMirr (the boot sector's second LCN), the rest
//    still from $MFT, and a warning says so (vmdk-files prints it);
//  - a clean volume is listed from its indexes and $MFT's bitmap alone (no record header
//    per name), an unclean one ($LogFile with a client in use) checks each entry's record.

import Foundation
import Glibc
import Testing
import VMDKBlock
import VMDKFiles

@Suite(.serialized) struct NTFSMatrixReaderTests {
  /// A 16 MiB volume (64 MiB with 64 KiB clusters) that ntfs-3g filled by `fill`.
  static func volume(_ dir: String, cluster: Int = 4096, _ fill: (String) throws -> Void) throws -> String {
    let image = "\(dir)/ntfs.img"
    let mnt = "\(dir)/mnt"
    try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
    try runChecked("/usr/bin/truncate", ["-s", cluster >= 65536 ? "64M" : "16M", image])
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

  /// A little-endian field of `count` bytes.
  static func le(_ b: [UInt8], _ at: Int, _ count: Int) -> Int {
    (0..<count).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) }
  }

  /// Where record `n` of $MFT (or of $MFTMirr) starts in the image, from the boot sector.
  static func recordOffset(_ image: [UInt8], _ n: Int, mirror: Bool = false) -> (offset: Int, size: Int) {
    let cluster = le(image, 11, 2) * le(image, 13, 1)
    let perRecord = Int8(bitPattern: image[64])
    let size = perRecord < 0 ? 1 << Int(-perRecord) : Int(perRecord) * cluster
    let lcn = le(image, mirror ? 56 : 48, 8)
    return (lcn * cluster + n * size, size)
  }

  /// Tears record `n`: the last two bytes of its first sector no longer match the update
  /// sequence number.
  static func tearFixup(_ image: inout [UInt8], _ n: Int, mirror: Bool = false) {
    let at = recordOffset(image, n, mirror: mirror).offset
    image[at + 510] ^= 0xFF
  }

  /// Makes record 0's $DATA runlist unreadable: its first mapping pair claims 15-byte fields.
  static func breakRunlist(_ image: inout [UInt8]) throws {
    let (at, size) = recordOffset(image, 0)
    var p = at + le(image, at + 20, 2)
    while p + 16 < at + size {
      let type = le(image, p, 4)
      let length = le(image, p + 4, 4)
      guard type != 0xFFFF_FFFF, length > 0 else { break }
      if type == 0x80 {
        image[p + le(image, p + 32, 2)] = 0xFF
        return
      }
      p += length
    }
    throw ToolFailure("record 0 has no $DATA")
  }

  @Test(arguments: [(4096, "fixup"), (512, "fixup"), (65536, "fixup"), (4096, "runlist")])
  func tornRecordZeroIsReadFromMFTMirr(_ cluster: Int, _ damage: String) throws {
    _ = try requireTool("ntfs-3g")
    try withTemporaryFolder { dir in
      let image = try Self.volume(dir, cluster: cluster) { m in
        try FileManager.default.createDirectory(atPath: "\(m)/docs", withIntermediateDirectories: true)
        // 300 files: $MFT grows past what mkntfs made, so the mirror's record 0 must be current.
        for i in 0..<300 { try NTFSOracle.write("\(m)/docs/f\(i).txt", NTFSOracle.content(i * 30, seed: i)) }
        try NTFSOracle.setXattr("\(m)/docs/f1.txt", "user.note", Array("a stream".utf8))
      }
      let good = try #require(try FileSystems.open(try ExtRawVolume(image)) as? NTFSFileSystem)
      #expect(!good.usesMFTMirror && good.warnings.isEmpty, "\(good.warnings)")
      // $MFT's own content is what the damage changed: its md5 is left out.
      func seen(_ fs: NTFSFileSystem) throws -> [String: String] {
        try NTFSOracle.walk(fs).mapValues { v in
          var s = v.seen
          if v.id == 0 { s.md5 = nil }
          return "\(v.id) \(s)"
        }
      }
      let before = try seen(good)
      #expect(before.count > 300 && before["$MFT"] != nil)
      #expect(good.mftRecords > 300, "\(good.mftRecords) records")

      var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: image)))
      if damage == "fixup" { Self.tearFixup(&bytes, 0) } else { try Self.breakRunlist(&bytes) }
      // $Volume's record 3 torn too: it must come from the mirror as well.
      Self.tearFixup(&bytes, 3)
      let torn = "\(dir)/torn.img"
      try Data(bytes).write(to: URL(fileURLWithPath: torn))
      let fs = try #require(try FileSystems.open(try ExtRawVolume(torn)) as? NTFSFileSystem)
      #expect(fs.usesMFTMirror)
      #expect(
        fs.warnings.contains { $0.contains("record 0 is unreadable") && $0.contains("from $MFTMirr") }, "\(fs.warnings)"
      )
      #expect(fs.label == "GAPS")
      // Everything else, from $MFT: the same walk, names, records, sizes, times and md5s.
      let after = try seen(fs)
      let changed = before.filter { after[$0.key] != $0.value }.map {
        "\($0.key): \($0.value) -> \(after[$0.key] ?? "-")"
      }
      #expect(changed.isEmpty && after.count == before.count, "\(changed.sorted().prefix(6))")
      #expect(fs.mftRuns >= good.mftRuns)

      // vmdk-files says so.
      try Qemu.img("convert", "-f", "raw", "-O", "vmdk", torn, "\(dir)/torn.vmdk")
      let ls = try vmdkFiles(["ls", "\(dir)/torn.vmdk", "/docs"])
      #expect(ls.status == 0 && ls.output.contains("f299.txt"), "\(ls.errorOutput)")
      #expect(ls.errorOutput.contains("warning") && ls.errorOutput.contains("$MFTMirr"), "\(ls.errorOutput)")

      // The mirror torn as well: $MFT's own error, with its offset.
      Self.tearFixup(&bytes, 0, mirror: true)
      try Data(bytes).write(to: URL(fileURLWithPath: torn))
      let e = expectVMDKError(.corruptFileSystem) { _ = try NTFSFileSystem(volume: try ExtRawVolume(torn)) }
      #expect(e?.message.contains("record 0") == true || damage == "runlist", "\(String(describing: e))")
      #expect(e?.file == torn)
    }
  }
  /// Record `n`'s bytes with its update sequence applied (sector ends restored), and where
  /// it starts in the image.
  static func fixedRecord(_ image: [UInt8], _ n: Int) throws -> (offset: Int, bytes: [UInt8]) {
    let (at, size) = recordOffset(image, n)
    var r = Array(image[at..<(at + size)])
    guard r.starts(with: Array("FILE".utf8)), le(r, 44, 4) == n else {
      throw ToolFailure("record \(n) is not at byte \(at) of the image")
    }
    let usa = le(r, 4, 2)
    for i in 1..<le(r, 6, 2) {
      r[i * 512 - 2] = r[usa + 2 * i]
      r[i * 512 - 1] = r[usa + 2 * i + 1]
    }
    return (at, r)
  }

  /// Where the unnamed attribute `type` of record `n` keeps its bytes in the image: its value
  /// when resident, else its first cluster.
  static func attributeBytes(_ image: [UInt8], record n: Int, type: Int) throws -> Int {
    let (at, r) = try fixedRecord(image, n)
    var p = le(r, 20, 2)
    while p + 16 < r.count {
      let t = le(r, p, 4)
      let length = le(r, p + 4, 4)
      guard t != 0xFFFF_FFFF, length > 0 else { break }
      if t == type && r[p + 9] == 0 {
        if r[p + 8] == 0 { return at + p + le(r, p + 20, 2) }
        let q = p + le(r, p + 32, 2)
        let lengthBytes = Int(r[q] & 0xF)
        let lcn = le(r, q + 1 + lengthBytes, Int(r[q] >> 4))
        return lcn * le(image, 11, 2) * le(image, 13, 1)
      }
      p += length
    }
    throw ToolFailure("record \(n) has no attribute 0x\(String(type, radix: 16))")
  }

  @Test func cleanVolumeListsFromIndexAndBitmap() throws {
    _ = try requireTool("ntfs-3g")
    try withTemporaryFolder { dir in
      let image = try Self.volume(dir) { m in
        try FileManager.default.createDirectory(atPath: "\(m)/docs", withIntermediateDirectories: true)
        for i in 0..<12 { try NTFSOracle.write("\(m)/docs/f\(i).txt", NTFSOracle.content(100 + i, seed: i)) }
      }
      let good = try #require(try FileSystems.open(try ExtRawVolume(image)) as? NTFSFileSystem)
      #expect(good.isClean && good.warnings.isEmpty, "\(good.warnings)")
      let all = (0..<12).map { "f\($0).txt" }
      #expect(Set(try good.list(try good.lookup("/docs")).map(\.displayName)) == Set(all))
      let stale = Int(try good.lookup("/docs/f3.txt"))
      let unused = Int(try good.lookup("/docs/f5.txt"))

      var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: image)))
      // f3: free in $MFT's bitmap; its record and index entry untouched.
      let bitmap = try Self.attributeBytes(bytes, record: 0, type: 0xB0) + stale / 8
      #expect(bitmap % 512 < 510)
      bytes[bitmap] &= ~UInt8(1 << (stale % 8))
      // f5: its record's header says "not in use"; the bitmap still says in use.
      bytes[try Self.fixedRecord(bytes, unused).offset + 22] &= ~1
      let edited = "\(dir)/edited.img"
      try Data(bytes).write(to: URL(fileURLWithPath: edited))
      let clean = try #require(try FileSystems.open(try ExtRawVolume(edited)) as? NTFSFileSystem)
      #expect(clean.isClean)
      #expect(
        Set(try clean.list(try clean.lookup("/docs")).map(\.displayName)) == Set(all.filter { $0 != "f3.txt" }))

      // The same volume with a journal to replay (a client in use in the restart area): each
      // entry's record header decides instead, and a warning says why.
      let log = try Self.attributeBytes(bytes, record: 2, type: 0x80)
      for page in [0, 4096] {
        var r = [UInt8](repeating: 0, count: 4096)
        for (i, c) in "RSTR".utf8.enumerated() { r[i] = c }
        for (at, value, width) in [(4, 0x1E, 2), (6, 9, 2), (16, 4096, 4), (20, 4096, 4), (24, 0x40, 2)] {
          for k in 0..<width { r[at + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
        }
        r[0x40 + 8] = 1  // one log client
        r[0x40 + 10] = 0xFF  // no free client
        r[0x40 + 11] = 0xFF
        // client_in_use_list 0 and flags 0: the volume was not shut down cleanly.
        bytes.replaceSubrange((log + page)..<(log + page + 4096), with: r)
      }
      let unclean = "\(dir)/unclean.img"
      try Data(bytes).write(to: URL(fileURLWithPath: unclean))
      let fs = try #require(try FileSystems.open(try ExtRawVolume(unclean)) as? NTFSFileSystem)
      #expect(!fs.isClean && !fs.isDirty)
      #expect(fs.warnings.contains { $0.contains("$LogFile has changes that were not replayed") }, "\(fs.warnings)")
      #expect(Set(try fs.list(try fs.lookup("/docs")).map(\.displayName)) == Set(all.filter { $0 != "f5.txt" }))
    }
  }

  /// A listing reads each folder's $I30 index in place from its record, unless the record
  /// holds an attribute list: then the folder is loaded whole, with the extension records
  /// that hold its $INDEX_ROOT. A folder with 29 named streams (ntfs-3g moves them and the
  /// $INDEX_ROOT into extension records) lists its 60 names, and every folder lists the same
  /// entries in place as once its file is loaded (and cached) by stat.
  @Test func foldersListInPlaceOrThroughTheirAttributeList() throws {
    _ = try requireTool("ntfs-3g")
    let names = (1...60).map { "file-with-a-long-name-\($0).txt" }
    try withTemporaryFolder { dir in
      let image = try Self.volume(dir) { m in
        for d in ["listed", "plain", "plain/deeper"] {
          try FileManager.default.createDirectory(atPath: "\(m)/\(d)", withIntermediateDirectories: true)
        }
        for i in 1...29 {
          try NTFSOracle.setXattr("\(m)/listed", "user.stream-number-\(i)", [UInt8](repeating: 0x78, count: 200))
        }
        for (i, n) in names.enumerated() {
          try NTFSOracle.write("\(m)/listed/\(n)", Array("\(i)".utf8))
          if i < 20 { try NTFSOracle.write("\(m)/plain/deeper/\(n)", Array("\(i)".utf8)) }
        }
      }
      // The folder's record really holds an attribute list, and its $INDEX_ROOT lies elsewhere.
      let info = try runChecked(try requireTool("ntfsinfo"), ["-F", "/listed", image]).output
      #expect(info.contains("$ATTRIBUTE_LIST (0x20)"), "\(info)")
      // "Dumping attribute $INDEX_ROOT (0x90) from mft record 70 (0x46)": the record numbers.
      func record(of attribute: String) -> String? {
        info.split(separator: "\n").first { $0.contains("attribute \(attribute) ") }?
          .split(separator: " ").drop { $0 != "record" }.dropFirst().first.map(String.init)
      }
      let base = try #require(record(of: "$STANDARD_INFORMATION"))
      #expect(try #require(record(of: "$INDEX_ROOT")) != base, "\(info)")

      func tree(_ fs: NTFSFileSystem) throws -> [String] {
        var out: [String] = []
        try fs.walk(from: fs.root) { item in
          out.append("\(item.displayPath) \(item.id) \(item.type)")
          return true
        }
        return out
      }
      let fs = try #require(try FileSystems.open(try ExtRawVolume(image)) as? NTFSFileSystem)
      #expect(Set(try fs.list(try fs.lookup("/listed")).map(\.displayName)) == Set(names))
      let fresh = try #require(try FileSystems.open(try ExtRawVolume(image)) as? NTFSFileSystem)
      let inPlace = try tree(fresh)
      for line in inPlace where line.hasSuffix(" directory") {
        let id = FileID(line.split(separator: " ").dropLast().last ?? "") ?? 0
        _ = try fresh.stat(id)
      }
      _ = try fresh.stat(fresh.root)
      #expect(try tree(fresh) == inPlace)
      #expect(inPlace.filter { $0.hasPrefix("plain/deeper/") }.count == 20)
      #expect(inPlace.filter { $0.hasPrefix("listed/") }.count == 60)
    }
  }
}
