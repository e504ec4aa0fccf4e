// vmdk-files against the reference tools: partition tables made by sfdisk and sgdisk (checked
// with mmls), FAT12/16/32 made by mkfs.fat and filled by mcopy (checked with fls and with
// mcopy's own copy-out: names, types, sizes, md5 of every file), and extraction that must not
// leave its folder when the file system is hostile.
import Foundation
import Testing
import VMDKBlock

func vmdkFiles(_ arguments: [String]) throws -> ProcessResult {
  try runProcess(try builtToolPath("vmdk-files"), arguments)
}

func shell(_ script: String) throws {
  try runChecked("/bin/bash", ["-euo", "pipefail", "-c", script])
}

/// The data partitions mmls lists, as (start, length) in sectors.
func mmlsPartitions(_ raw: String) throws -> [[UInt64]] {
  let out = try runChecked(try requireTool("mmls"), [raw]).output
  var result: [[UInt64]] = []
  for line in out.split(separator: "\n") {
    let f = line.split(separator: " ", omittingEmptySubsequences: true)
    guard f.count >= 5, f[1].contains(":") || f[1].allSatisfy(\.isNumber), let s = UInt64(f[2]), let l = UInt64(f[4])
    else { continue }
    result.append([s, l])
  }
  return result.sorted { $0[0] < $1[0] }
}

func partitionsJSON(_ image: String) throws -> [[String: Any]] {
  let r = try vmdkFiles(["partitions", "--json", image])
  guard r.status == 0 else { throw ToolFailure("partitions exited \(r.status): \(r.errorOutput)") }
  let o = try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any]
  return o?["partitions"] as? [[String: Any]] ?? []
}

@Suite(.serialized) struct FilesPartitionInteropTests {
  @Test func mbrWithLogicalPartitionsMatchesMmls() throws {
    _ = try requireTool("sfdisk")
    try withTemporaryFolder { dir in
      try shell(
        """
        cd \(dir); truncate -s 64M d.img
        printf 'label: dos\\nstart=2048, size=8192, type=83\\nstart=10240, size=100000, type=5\\nstart=12288, size=8192, type=83\\nstart=22528, size=8192, type=7\\nstart=32768, size=8192, type=c\\n' | sfdisk -q d.img
        """)
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/d.img", "\(dir)/d.vmdk")
      let ours = try partitionsJSON("\(dir)/d.vmdk").map { p -> [UInt64] in
        [((p["start"] as? NSNumber)?.uint64Value ?? 0) / 512, ((p["size"] as? NSNumber)?.uint64Value ?? 0) / 512]
      }
      let theirs = try mmlsPartitions("\(dir)/d.img")
      #expect(theirs.count == 4)
      #expect(ours.sorted { $0[0] < $1[0] } == theirs)
      let idx = try partitionsJSON("\(dir)/d.vmdk").map { ($0["index"] as? Int) ?? 0 }
      #expect(idx == [1, 5, 6, 7])
    }
  }

  @Test func gptMatchesMmlsAndTheBackupIsUsedWhenThePrimaryIsDestroyed() throws {
    _ = try requireTool("sgdisk")
    try withTemporaryFolder { dir in
      try shell(
        """
        cd \(dir); truncate -s 64M g.img
        sgdisk -o -n 1:2048:+8M -t 1:ef00 -c 1:EFI -n 2:0:+16M -t 2:8300 -c 2:root -n 3:0:+8M -t 3:0700 -n 4:0:+4M -t 4:8e00 g.img >/dev/null
        """)
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/g.img", "\(dir)/g.vmdk")
      let parts = try partitionsJSON("\(dir)/g.vmdk")
      let ours = parts.map { p -> [UInt64] in
        [((p["start"] as? NSNumber)?.uint64Value ?? 0) / 512, ((p["size"] as? NSNumber)?.uint64Value ?? 0) / 512]
      }
      #expect(ours == (try mmlsPartitions("\(dir)/g.img")))
      #expect(parts.count == 4)
      #expect(parts.first?["name"] as? String == "EFI")
      #expect(parts.first?["type"] as? String == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
      // Destroy the primary header: the backup gives the same table, with a warning.
      try shell("cd \(dir); dd if=/dev/zero of=g.img bs=512 seek=1 count=1 conv=notrunc status=none")
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/g.img", "\(dir)/g2.vmdk")
      let r = try vmdkFiles(["partitions", "--json", "\(dir)/g2.vmdk"])
      #expect(r.status == 0)
      let o = try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any]
      let again = (o?["partitions"] as? [[String: Any]] ?? []).map { ($0["start"] as? NSNumber)?.uint64Value ?? 0 }
      #expect(again == parts.map { ($0["start"] as? NSNumber)?.uint64Value ?? 0 })
      let warnings = o?["warnings"] as? [String] ?? []
      #expect(warnings.contains { $0.contains("backup") }, "\(warnings)")
    }
  }
}

/// Fills `src` with the test tree: long and unicode names, 12 folders deep, empty files,
/// files 1 byte short of, at and past cluster boundaries.
func makeSourceTree(_ src: String, cluster: Int) throws {
  let fm = FileManager.default
  try fm.createDirectory(
    atPath: "\(src)/deep/" + (1...11).map { "level\($0)" }.joined(separator: "/"), withIntermediateDirectories: true)
  try fm.createDirectory(atPath: "\(src)/Ünïcödé Földer", withIntermediateDirectories: true)
  var files: [(String, Int)] = [("empty.txt", 0), ("A long file name with spaces.text", 1234)]
  for k in [1, 2, 3] {
    for d in [-1, 0, 1] {
      files.append(("boundary \(k)x\(d < 0 ? "minus" : d == 0 ? "exact" : "plus").bin", k * cluster + d))
    }
  }
  files.append(("Ünïcödé Földer/日本語のファイル名.txt", 77))
  files.append(("deep/" + (1...11).map { "level\($0)" }.joined(separator: "/") + "/bottom.txt", 4000))
  files.append(("UPPER.TXT", 10))
  for (i, f) in files.enumerated() {
    var bytes = [UInt8](repeating: 0, count: f.1)
    for j in 0..<f.1 { bytes[j] = UInt8((j * 7 + i * 13) & 0xFF) }
    fm.createFile(atPath: "\(src)/\(f.0)", contents: Data(bytes))
  }
}

/// Every file below `root`: relative path -> (is folder, size, md5).
func treeManifest(_ root: String) throws -> [String: String] {
  var m: [String: String] = [:]
  let fm = FileManager.default
  guard let e = fm.enumerator(atPath: root) else { throw ToolFailure("cannot list \(root)") }
  while let p = e.nextObject() as? String {
    var isDir: ObjCBool = false
    _ = fm.fileExists(atPath: "\(root)/\(p)", isDirectory: &isDir)
    m[p.precomposedStringWithCanonicalMapping] =
      isDir.boolValue ? "dir" : "file " + (try fileDigest("\(root)/\(p)", .md5))
  }
  return m
}

@Suite(.serialized) struct FilesFATInteropTests {
  @Test(arguments: [(12, 4096, 2), (16, 32768, 4), (32, 40000, 1)])
  func fatMatchesMtoolsAndSleuthkit(bits: Int, kib: Int, spc: Int) throws {
    _ = try requireTool("mkfs.fat")
    _ = try requireTool("mcopy")
    let fls = try requireTool("fls")
    try withTemporaryFolder { dir in
      let cluster = 512 * spc
      try makeSourceTree("\(dir)/src", cluster: cluster)
      try shell(
        """
        cd \(dir); export MTOOLS_SKIP_CHECK=1
        mkfs.fat -C -F \(bits) -s \(spc) -n LBL\(bits) fs.img \(kib) >/dev/null
        mcopy -s -i fs.img src/* ::
        mkdir oracle; mcopy -s -n -i fs.img '::*' oracle/
        truncate -s \((kib + 4096) * 1024) d.img
        sgdisk -o -n 1:2048:+\(kib)K -t 1:0700 -c 1:data d.img >/dev/null
        dd if=fs.img of=d.img bs=512 seek=2048 conv=notrunc status=none
        """)
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/d.img", "\(dir)/d.vmdk")
      let parts = try partitionsJSON("\(dir)/d.vmdk")
      #expect(parts.first?["fileSystem"] as? String == "fat\(bits)")
      #expect(parts.first?["label"] as? String == "LBL\(bits)")

      // Names and types against fls.
      let flsOut = try runChecked(fls, ["-r", "-p", "-o", "2048", "\(dir)/d.img"]).output
      var theirs: [String] = []
      for line in flsOut.split(separator: "\n") {
        guard let tab = line.firstIndex(of: "\t") else { continue }
        let kind = line.hasPrefix("d/d") ? "d" : line.hasPrefix("r/r") ? "r" : "?"
        let name = String(line[line.index(after: tab)...])
        if name.hasPrefix("$") || line.contains("(Volume Label Entry)") || line.hasPrefix("v/v")
          || line.hasPrefix("V/V")
        {
          continue
        }
        theirs.append("\(kind) /\(name)")
      }
      let ls = try vmdkFiles(["ls", "-R", "--json", "\(dir)/d.vmdk"])
      #expect(ls.status == 0, "\(ls.errorOutput)")
      let items = try JSONSerialization.jsonObject(with: ls.stdout) as? [[String: Any]] ?? []
      let ours = items.map { i -> String in
        "\((i["type"] as? String) == "directory" ? "d" : "r") \(i["path"] as? String ?? "")"
      }
      #expect(ours.sorted() == theirs.sorted())
      #expect(ours.count > 20)

      // Contents against mcopy's copy-out, through extract.
      let x = try vmdkFiles(["extract", "\(dir)/d.vmdk", "/", "--to", "\(dir)/out"])
      #expect(x.status == 0, "\(x.errorOutput)")
      let expected = try treeManifest("\(dir)/oracle")
      let got = try treeManifest("\(dir)/out")
      #expect(got == expected)
      #expect(expected.count == ours.count)
      #expect(try treeManifest("\(dir)/src") == expected)  // the oracle copied what we put in

      // One file through cat and icat.
      let path = "/A long file name with spaces.text"
      let cat = try vmdkFiles(["cat", "\(dir)/d.vmdk", path])
      let source = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/src\(path)"))
      #expect(cat.stdout == source)
      // find by name and date.
      let find = try vmdkFiles(["find", "\(dir)/d.vmdk", "--name", "boundary 2x*"])
      #expect(find.output.split(separator: "\n").count == 3)
      let none = try vmdkFiles(["find", "\(dir)/d.vmdk", "--newer", "2999-01-01"])
      #expect(none.status == 0 && none.output.isEmpty)
    }
  }
}

@Suite(.serialized) struct FilesExtractInteropTests {
  /// A FAT16 in a monolithicSparse disk with no table, holding names patched to ".." and
  /// "../..", a normal file and a folder.
  func hostileImage(_ dir: String) throws -> String {
    _ = try requireTool("mkfs.fat")
    try shell(
      """
      cd \(dir); export MTOOLS_SKIP_CHECK=1
      mkfs.fat -C -F 16 -s 1 fs.img 16384 >/dev/null
      echo safe > safe.txt; echo bad > bad.txt
      mcopy -i fs.img safe.txt ::safe.txt
      mcopy -i fs.img bad.txt ::q.r.s
      mcopy -i fs.img bad.txt ::a.b.c
      mmd -i fs.img ::folder
      mcopy -i fs.img safe.txt ::folder/inner.txt
      """)
    // The long names' UTF-16: "q.r.s" becomes ".." (terminated), "a.b.c" becomes "../..".
    let url = URL(fileURLWithPath: "\(dir)/fs.img")
    var bytes = [UInt8](try Data(contentsOf: url))
    func utf16(_ s: String) -> [UInt8] { s.utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] } }
    func patch(_ old: [UInt8], _ new: [UInt8]) throws {
      guard let r = bytes.firstRange(of: old) else { throw ToolFailure("pattern not found") }
      bytes.replaceSubrange(r, with: new)
    }
    // Name1 holds exactly five units; the terminator that follows in Name2 stays.
    try patch(utf16("q.r.s"), utf16("..") + [0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
    try patch(utf16("a.b.c"), utf16("../.."))
    try Data(bytes).write(to: url)
    try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/fs.img", "\(dir)/h.vmdk")
    return "\(dir)/h.vmdk"
  }

  @Test func hostileNamesAreRefusedAndNothingLeavesTheFolder() throws {
    try withTemporaryFolder { dir in
      let image = try hostileImage(dir)
      let ls = try vmdkFiles(["ls", image])
      #expect(ls.output.split(separator: "\n").contains(".."), "\(ls.output)")
      try FileManager.default.createDirectory(atPath: "\(dir)/a/b/out", withIntermediateDirectories: true)
      let before = try treeManifest(dir)
      let r = try vmdkFiles(["extract", image, "/", "--to", "\(dir)/a/b/out"])
      #expect(r.status == 1)
      #expect(r.errorOutput.contains("unsafe name"), "\(r.errorOutput)")
      #expect(r.errorOutput.split(separator: "\n").count == 2)
      let out = try treeManifest("\(dir)/a/b/out")
      #expect(Set(out.keys) == ["safe.txt", "folder", "folder/inner.txt"])
      var after = try treeManifest(dir)
      for k in after.keys where k.hasPrefix("a/b/out/") { after[k] = nil }
      #expect(after == before)
    }
  }

  @Test func symlinksInTheFolderAreNotFollowedAndFilesNotOverwritten() throws {
    try withTemporaryFolder { dir in
      let image = try hostileImage(dir)
      let fm = FileManager.default
      try fm.createDirectory(atPath: "\(dir)/out", withIntermediateDirectories: true)
      try fm.createDirectory(atPath: "\(dir)/elsewhere", withIntermediateDirectories: true)
      try fm.createSymbolicLink(atPath: "\(dir)/out/folder", withDestinationPath: "\(dir)/elsewhere")
      try fm.createSymbolicLink(atPath: "\(dir)/out/safe.txt", withDestinationPath: "\(dir)/elsewhere/victim")
      let r = try vmdkFiles(["extract", image, "/folder", "/safe.txt", "--to", "\(dir)/out"])
      #expect(r.status == 1)
      #expect(try fm.contentsOfDirectory(atPath: "\(dir)/elsewhere").isEmpty)
      #expect(r.errorOutput.contains("exists"), "\(r.errorOutput)")
      // --force replaces the symbolic link to a file (not its target); a folder link stays refused.
      let f = try vmdkFiles(["extract", image, "/safe.txt", "--to", "\(dir)/out", "--force"])
      #expect(f.status == 0, "\(f.errorOutput)")
      #expect(try fm.contentsOfDirectory(atPath: "\(dir)/elsewhere").isEmpty)
      #expect(try String(contentsOfFile: "\(dir)/out/safe.txt", encoding: .utf8) == "safe\n")
      #expect((try? fm.destinationOfSymbolicLink(atPath: "\(dir)/out/safe.txt")) == nil)
      // Times are kept (FAT: 2-second steps).
      let st = try fm.attributesOfItem(atPath: "\(dir)/out/safe.txt")
      let src = try fm.attributesOfItem(atPath: "\(dir)/safe.txt")
      if let a = st[.modificationDate] as? Date, let b = src[.modificationDate] as? Date {
        #expect(abs(a.timeIntervalSince(b)) <= 2 + Double(TimeZone.current.secondsFromGMT()).magnitude)
      }
    }
  }
}
