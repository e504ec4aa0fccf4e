// The NTFS reader on volumes that ntfs-3g made and the test then damaged or stretched: a
// dirty flag, a torn MFT record, an initialized size below the data size, a hostile runlist,
// index sub-node pointers that loop or leave the index; and a fragmented $MFT with a file
// whose runlist needs an $ATTRIBUTE_LIST, against ntfs-3g and icat.

import Foundation
import Glibc
import Testing
import VMDKBlock
import VMDKFiles

enum NTFSPatch {
  static func readAll(_ path: String) throws -> [UInt8] {
    guard let d = FileManager.default.contents(atPath: path) else { throw ToolFailure("cannot read \(path)") }
    return [UInt8](d)
  }

  static func u16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
  static func u32(_ b: [UInt8], _ o: Int) -> Int { u16(b, o) | u16(b, o + 2) << 16 }

  /// The byte offset of MFT record `n` in a fresh volume (whose $MFT is one run).
  static func recordOffset(_ image: [UInt8], _ n: UInt64) throws -> Int {
    let boot = try NTFSBootSector(parsing: Array(image[0..<512]), volumeSize: UInt64(image.count))
    return Int(boot.mftLCN) * boot.clusterSize + Int(n) * boot.mftRecordSize
  }

  /// The offset of the first attribute of `type` in the record at `r`.
  static func attribute(_ image: [UInt8], record r: Int, type: Int) throws -> Int {
    var p = r + u16(image, r + 20)
    while u32(image, p) != 0xFFFF_FFFF {
      if u32(image, p) == type { return p }
      let length = u32(image, p + 4)
      guard length > 0 else { break }
      p += length
    }
    throw ToolFailure("no attribute 0x\(String(type, radix: 16)) in the record at \(r)")
  }

  /// Patched bytes must not be a sector's last u16, which the fixups own.
  static func checkNotSectorEnd(_ o: Int, _ count: Int) {
    for i in o..<(o + count) { #expect(i % 512 < 510, "byte \(i) is a fixup position") }
  }

  static func write(_ bytes: [UInt8], _ path: String) throws {
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
      throw ToolFailure("cannot write \(path)")
    }
  }

  static func open(_ path: String) throws -> NTFSFileSystem {
    let fs = try FileSystems.open(try ExtRawVolume(path))
    guard let n = fs as? NTFSFileSystem else { throw ToolFailure("\(path) is not NTFS to us") }
    return n
  }
}

@Suite(.serialized) struct NTFSHostileImageTests {
  @Test func damagedVolumesFailWithTypedErrors() throws {
    let mkntfs = try requireTool("mkntfs")
    try withTemporaryFolder { dir in
      let image = "\(dir)/base.img"
      let mnt = "\(dir)/mnt"
      try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
      try runChecked("/usr/bin/truncate", ["-s", "32M", image])
      try runChecked(mkntfs, ["-F", "-f", "-q", "-c", "4096", image])
      try NTFSOracle.withMount(image, mnt, options: "rw") {
        try NTFSOracle.write("\(mnt)/a.txt", Array("small".utf8))
        try NTFSOracle.write("\(mnt)/big64k", NTFSOracle.content(65536, seed: 21))
        try FileManager.default.createDirectory(atPath: "\(mnt)/many", withIntermediateDirectories: true)
        for i in 0..<300 {
          try NTFSOracle.write("\(mnt)/many/entry-\(i)-\(String(repeating: "n", count: 40))", [UInt8(i & 0xFF)])
        }
      }
      let base = try NTFSPatch.readAll(image)
      let fs = try NTFSPatch.open(image)
      #expect(!fs.isDirty && fs.warnings.isEmpty)
      let a = try fs.lookup("/a.txt")
      let big = try fs.lookup("/big64k")
      let many = try fs.lookup("/many")
      #expect(try fs.list(many).count == 300)

      // Dirty: $VOLUME_INFORMATION's flags in record 3.
      do {
        var b = base
        let r = try NTFSPatch.recordOffset(b, 3)
        let attr = try NTFSPatch.attribute(b, record: r, type: 0x70)
        let flags = attr + NTFSPatch.u16(b, attr + 20) + 10
        NTFSPatch.checkNotSectorEnd(flags, 1)
        b[flags] |= 1
        // $MFTMirr holds the same record; ntfsinfo compares them.
        let boot = try NTFSBootSector(parsing: Array(b[0..<512]), volumeSize: UInt64(b.count))
        let mirror = Int(boot.mftMirrorLCN) * boot.clusterSize + 3 * boot.mftRecordSize + (flags - r)
        b[mirror] |= 1
        try NTFSPatch.write(b, "\(dir)/dirty.img")
        let d = try NTFSPatch.open("\(dir)/dirty.img")
        #expect(d.isDirty)
        #expect(d.warnings.contains { $0.contains("dirty") }, "\(d.warnings)")
        let info = try runChecked(try requireTool("ntfsinfo"), ["-f", "-m", "\(dir)/dirty.img"]).output
        #expect(info.contains("Volume Flags: 0x0001"), "ntfsinfo does not see the flag: \(info.prefix(600))")
      }

      // A torn record: one sector of a.txt's record ends with the wrong value.
      do {
        var b = base
        let r = try NTFSPatch.recordOffset(b, a)
        b[r + 510] ^= 0xFF
        try NTFSPatch.write(b, "\(dir)/torn.img")
        let t = try NTFSPatch.open("\(dir)/torn.img")
        let e = expectVMDKError(.corruptFileSystem) { _ = try t.stat(a) }
        #expect(e?.offset == UInt64(r + 510), "\(String(describing: e))")
        #expect(e?.file == "\(dir)/torn.img")
        // The folder still lists (its index does not depend on the record).
        #expect(try t.list(t.root).contains { $0.id == a })
      }

      // Initialized size below the data size: the rest reads as zeros (as ntfscat says).
      do {
        var b = base
        let r = try NTFSPatch.recordOffset(b, big)
        let attr = try NTFSPatch.attribute(b, record: r, type: 0x80)
        #expect(b[attr + 8] == 1, "big64k should be non-resident")
        NTFSPatch.checkNotSectorEnd(attr + 56, 8)
        b[attr + 56] = 0x10  // 10000 = 0x2710
        b[attr + 57] = 0x27
        for i in 58..<64 { b[attr + i] = 0 }
        try NTFSPatch.write(b, "\(dir)/init.img")
        let f = try NTFSPatch.open("\(dir)/init.img")
        var out = [UInt8](repeating: 0xEE, count: 65536)
        let n = try out.withUnsafeMutableBytes { try f.read(big, at: 0, into: $0) }
        #expect(n == 65536)
        var expected = NTFSOracle.content(65536, seed: 21)
        for i in 10000..<65536 { expected[i] = 0 }
        #expect(out == expected)
        let theirs = try runChecked(try requireTool("ntfscat"), ["\(dir)/init.img", "/big64k"]).stdout
        #expect([UInt8](theirs) == expected, "ntfscat disagrees")
      }

      // A runlist header with a 9-byte length field.
      do {
        var b = base
        let r = try NTFSPatch.recordOffset(b, big)
        let attr = try NTFSPatch.attribute(b, record: r, type: 0x80)
        let pairs = attr + NTFSPatch.u16(b, attr + 32)
        NTFSPatch.checkNotSectorEnd(pairs, 1)
        b[pairs] = 0x09
        try NTFSPatch.write(b, "\(dir)/runs.img")
        let f = try NTFSPatch.open("\(dir)/runs.img")
        expectVMDKError(.corruptFileSystem) { _ = try f.stat(big) }
      }

      // Index sub-nodes: two root entries pointing at one block (a loop), and a VCN outside.
      do {
        let r = try NTFSPatch.recordOffset(base, many)
        let attr = try NTFSPatch.attribute(base, record: r, type: 0x90)
        let value = attr + NTFSPatch.u16(base, attr + 20)
        let header = value + 16
        var p = header + NTFSPatch.u32(base, header)
        var vcnFields: [Int] = []
        while true {
          let length = NTFSPatch.u16(base, p + 8)
          let flags = NTFSPatch.u16(base, p + 12)
          if flags & 1 != 0 { vcnFields.append(p + length - 8) }
          if flags & 2 != 0 || length == 0 { break }
          p += length
        }
        try #require(vcnFields.count >= 2, "the root of /many has \(vcnFields.count) sub-nodes")
        var loop = base
        NTFSPatch.checkNotSectorEnd(vcnFields[1], 8)
        for i in 0..<8 { loop[vcnFields[1] + i] = base[vcnFields[0] + i] }
        try NTFSPatch.write(loop, "\(dir)/loop.img")
        let l = try NTFSPatch.open("\(dir)/loop.img")
        let e = expectVMDKError(.corruptFileSystem) { _ = try l.list(many) }
        #expect(e?.message.contains("twice") == true, "\(String(describing: e))")
        var outside = base
        outside[vcnFields[0] + 4] = 1  // VCN + 2^32
        try NTFSPatch.write(outside, "\(dir)/outside.img")
        let o = try NTFSPatch.open("\(dir)/outside.img")
        expectVMDKError(.corruptFileSystem) { _ = try o.list(many) }
      }

      // A torn INDX block: every index block of the volume (only /many has any) loses one
      // sector's update sequence value; the error names the block's place in the volume.
      do {
        var b = base
        var torn: Set<UInt64> = []
        for o in stride(from: 0, to: b.count - 4096, by: 4096) where Array(b[o..<(o + 4)]) == Array("INDX".utf8) {
          b[o + 1022] ^= 0xFF
          torn.insert(UInt64(o + 1022))
        }
        #expect(!torn.isEmpty)
        try NTFSPatch.write(b, "\(dir)/indx.img")
        let t = try NTFSPatch.open("\(dir)/indx.img")
        let e = expectVMDKError(.corruptFileSystem) { _ = try t.list(many) }
        #expect(e.flatMap { $0.offset }.map { torn.contains($0) } == true, "\(String(describing: e))")
      }

      // Not NTFS at all: "not mine"; NTFS with a broken boot sector: "mine but broken".
      var notMine = base
      for i in 3..<11 { notMine[i] = 0x41 }
      try NTFSPatch.write(notMine, "\(dir)/notmine.img")
      #expect(try NTFSFileSystem.probe(try ExtRawVolume("\(dir)/notmine.img")) == nil)
      var broken = base
      broken[13] = 3
      try NTFSPatch.write(broken, "\(dir)/broken.img")
      expectVMDKError(.corruptFileSystem) { _ = try NTFSFileSystem.probe(try ExtRawVolume("\(dir)/broken.img")) }
    }
  }

  @Test func fragmentedMFTAndAnAttributeList() throws {
    let mkntfs = try requireTool("mkntfs")
    try withTemporaryFolder { dir in
      let image = "\(dir)/frag.img"
      let mnt = "\(dir)/mnt"
      try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
      try runChecked("/usr/bin/truncate", ["-s", "64M", image])
      try runChecked(mkntfs, ["-F", "-f", "-q", "-c", "4096", image])
      let start = Date()
      try NTFSOracle.withMount(image, mnt, options: "rw") {
        // Checkerboard the free space: 64 KiB files, every other one deleted.
        try FileManager.default.createDirectory(atPath: "\(mnt)/fill", withIntermediateDirectories: true)
        // Until the volume is full (the MFT zone included), then every other one deleted.
        let chunk = NTFSOracle.content(65536, seed: 5)
        var count = 0
        while count < 2000, FileManager.default.createFile(atPath: "\(mnt)/fill/f\(count)", contents: Data(chunk)) {
          count += 1
        }
        #expect(count > 500 && count < 2000, "\(count) files of 64 KiB")
        for i in stride(from: 0, to: count, by: 2) { try FileManager.default.removeItem(atPath: "\(mnt)/fill/f\(i)") }
        // Many small files: $MFT grows into the holes.
        try FileManager.default.createDirectory(atPath: "\(mnt)/small", withIntermediateDirectories: true)
        for i in 0..<2500 { try NTFSOracle.write("\(mnt)/small/s\(i)", []) }
        // A file over hundreds of holes: its runlist no longer fits one record.
        try NTFSOracle.write("\(mnt)/frag.bin", NTFSOracle.content(16 << 20, seed: 77))
      }
      print("ntfs fragmented: filled in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
      let fs = try NTFSPatch.open(image)
      #expect(fs.mftRuns > 1, "$MFT is in \(fs.mftRuns) runs")
      let frag = try fs.lookup("/frag.bin")
      let istat = try runChecked(try requireTool("istat"), [image, String(frag)]).output
      #expect(istat.contains("$ATTRIBUTE_LIST"), "frag.bin has no attribute list: \(istat.prefix(800))")
      let ours = try NTFSOracle.walk(fs)
      let mounted = try NTFSOracle.withMount(image, mnt, options: "ro") { try NTFSOracle.mountSide(mnt, skip: []) }
      var mismatches: [String] = []
      for (path, theirs) in mounted {
        guard var mine = ours[path]?.seen else {
          mismatches.append("\(path): only in the mount")
          continue
        }
        if theirs.links == nil { mine.links = nil }
        if theirs.type == "directory" { mine.size = theirs.size }
        if mine != theirs { mismatches.append("\(path): ours \(mine), ntfs-3g \(theirs)") }
      }
      #expect(mismatches.isEmpty, "\(mismatches.count) differ: \(mismatches.prefix(5))")
      #expect(ours["frag.bin"]?.seen.md5 == NTFSOracle.md5(NTFSOracle.content(16 << 20, seed: 77)))
      let icat = try runChecked(try requireTool("icat"), [image, String(frag)]).stdout
      #expect(NTFSOracle.md5([UInt8](icat)) == ours["frag.bin"]?.seen.md5)
      print(
        "ntfs fragmented: $MFT in \(fs.mftRuns) runs, \(ours.count) names, \(mounted.count) compared with ntfs-3g")
    }
  }
}
