// One NTFS volume (files, an ADS, a sparse file, a compressed folder) inside an MBR disk
// (type 7) as streamOptimized, and inside a GPT disk as a 2-link chain whose child changes a
// file and adds one. `vmdk-files extract --streams sidecar` of each must give the names and
// md5s of a read-only ntfs-3g mount of the same volume (streams as NAME:STREAM against the
// mount's user.* xattrs); the child shows the new contents, the parent the old (and icat
// of the child's raw conversion agrees).

import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

@Suite(.serialized) struct NTFSRestoreDiskTests {
  static let old = NTFSOracle.text(150_000, seed: 31)
  static let new = NTFSOracle.text(150_000, seed: 32)

  /// Fills a 24 MiB NTFS volume at `image`.
  static func volume(_ image: String, mnt: String) throws {
    try runChecked("/usr/bin/truncate", ["-s", "24M", image])
    try runChecked(try requireTool("mkntfs"), ["-F", "-f", "-q", "-c", "4096", "-L", "DISKNTFS", image])
    try NTFSOracle.withMount(image, mnt, options: "rw") {
      let fm = FileManager.default
      try fm.createDirectory(atPath: "\(mnt)/Users/alice", withIntermediateDirectories: true)
      try NTFSOracle.write("\(mnt)/Users/alice/notes.txt", old)
      try NTFSOracle.write("\(mnt)/Users/alice/photo.bin", NTFSOracle.content(300_000, seed: 33))
      try NTFSOracle.write("\(mnt)/readme.txt", Array("hello\n".utf8))
      try NTFSOracle.setXattr("\(mnt)/Users/alice/photo.bin", "user.Zone.Identifier", Array("[ZoneTransfer]\n".utf8))
      try NTFSOracle.pwriteFile("\(mnt)/sparse.bin", NTFSOracle.content(5000, seed: 34), at: 6 << 20)
      try fm.createDirectory(atPath: "\(mnt)/comp", withIntermediateDirectories: true)
      try NTFSOracle.setXattr("\(mnt)/comp", "system.ntfs_attrib_be", [0, 0, 0x08, 0])
      try NTFSOracle.write("\(mnt)/comp/log.txt", NTFSOracle.text(400_000, seed: 35))
    }
  }

  /// The change the child carries: notes.txt rewritten, added.txt new.
  static func change(_ image: String, mnt: String) throws {
    try NTFSOracle.withMount(image, mnt, options: "rw") {
      try NTFSOracle.write("\(mnt)/Users/alice/notes.txt", new)
      try NTFSOracle.write("\(mnt)/added.txt", Array("added in the child\n".utf8))
    }
  }

  /// "path md5" of every file and "path:stream md5" of every stream that ntfs-3g shows.
  static func oracle(_ image: String, mnt: String) throws -> [String: String] {
    try NTFSOracle.withMount(image, mnt, options: "ro") {
      var out: [String: String] = [:]
      for (p, s) in try NTFSOracle.mountSide(mnt, skip: []) where s.type == "regular" || s.type == "stream" {
        out[p] = "\(s.size) \(s.md5 ?? "-")"
      }
      return out
    }
  }

  /// The same through `vmdk-files extract --streams sidecar` of the whole volume (system files,
  /// which ntfs-3g hides, left out).
  static func ours(_ vmdk: String, to folder: String) throws -> [String: String] {
    let tool = try builtToolPath("vmdk-files")
    try runChecked(tool, ["extract", vmdk, "/", "--to", folder, "--streams", "sidecar", "--quiet"])
    var out: [String: String] = [:]
    let fm = FileManager.default
    guard let e = fm.enumerator(atPath: folder) else { throw ToolFailure("cannot list \(folder)") }
    while let rel = e.nextObject() as? String {
      if rel.hasPrefix("$") { continue }
      var st = stat()
      guard lstat("\(folder)/\(rel)", &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
      out[rel] = "\(st.st_size) \(try fileDigest("\(folder)/\(rel)", .md5))"
    }
    return out
  }

  @Test func mbrStreamOptimizedAndGPTChain() throws {
    for tool in ["ntfs-3g", "mkntfs", "sfdisk", "sgdisk", "qemu-img", "qemu-io", "ifind", "icat"] {
      _ = try requireTool(tool)
    }
    let start = Date()
    try withTemporaryFolder { dir in
      let mnt = "\(dir)/mnt"
      try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
      let v1 = "\(dir)/v1.img"
      try Self.volume(v1, mnt: mnt)
      let v2 = "\(dir)/v2.img"
      try runChecked("/bin/cp", ["--sparse=always", v1, v2])
      try Self.change(v2, mnt: mnt)
      let want1 = try Self.oracle(v1, mnt: mnt)
      let want2 = try Self.oracle(v2, mnt: mnt)
      #expect(want1["Users/alice/photo.bin:Zone.Identifier"] != nil, "\(want1.keys.sorted())")
      #expect(want1.count >= 6 && want2.count == want1.count + 1, "\(want1.count) \(want2.count)")

      // MBR, type 7, streamOptimized.
      try shell(
        """
        cd '\(dir)'
        truncate -s 26M mbr.raw
        printf 'label: dos\\nstart=2048, size=49152, type=7\\n' | sfdisk -q mbr.raw >/dev/null
        dd if=v1.img of=mbr.raw bs=1M seek=1 conv=notrunc,sparse status=none
        """)
      try Qemu.img(
        "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", "\(dir)/mbr.raw", "\(dir)/mbr.vmdk")
      let mbr = try Self.ours("\(dir)/mbr.vmdk", to: "\(dir)/out-mbr")
      #expect(
        mbr == want1, "MBR streamOptimized: \(mbr.sorted { $0.key < $1.key }) vs \(want1.sorted { $0.key < $1.key })")

      // $BadClus:$Bad, a stream as long as the volume with no cluster: a sidecar left a hole.
      var bad = stat()
      #expect(lstat("\(dir)/out-mbr/$BadClus:$Bad", &bad) == 0 && bad.st_size >= 24 << 20 - 4096)
      #expect(bad.st_blocks == 0, "$BadClus:$Bad sidecar holds \(bad.st_blocks) blocks")

      // The compressed and the sparse file really are (else those paths went untested).
      let tool = try builtToolPath("vmdk-files")
      try runChecked(
        tool,
        ["extract", "\(dir)/mbr.vmdk", "/comp/log.txt", "/sparse.bin", "--to", "\(dir)/attr", "--streams", "xattr"])
      func attrib(_ p: String) -> UInt32 {
        readXattr(p, "user.ntfs.attrib").flatMap { UInt32(String(decoding: $0.dropFirst(2), as: UTF8.self), radix: 16) }
          ?? 0
      }
      #expect(attrib("\(dir)/attr/log.txt") & 0x800 != 0, "log.txt is not compressed")
      #expect(attrib("\(dir)/attr/sparse.bin") & 0x200 != 0, "sparse.bin is not sparse")

      // GPT, a 2-link chain: the parent holds v1, the child the chunks where v2 differs.
      func gpt(_ volume: String, _ raw: String) throws {
        try shell(
          """
          cd '\(dir)'
          truncate -s 27M \(raw)
          sgdisk -o -n 1:2048:+24M -t 1:0700 -c 1:data \(raw) >/dev/null
          dd if=\(volume) of=\(raw) bs=1M seek=1 conv=notrunc,sparse status=none
          """)
      }
      try gpt("v1.img", "gpt1.raw")
      try gpt("v2.img", "gpt2.raw")
      let chunks = try MatrixImages.chain(
        v1: "\(dir)/gpt1.raw", v2: "\(dir)/gpt2.raw", parent: "\(dir)/parent.vmdk", child: "\(dir)/child.vmdk",
        scratch: dir)
      #expect(chunks > 0)
      let parent = try Self.ours("\(dir)/parent.vmdk", to: "\(dir)/out-parent")
      let child = try Self.ours("\(dir)/child.vmdk", to: "\(dir)/out-child")
      #expect(parent == want1, "GPT parent: \(parent.sorted { $0.key < $1.key })")
      #expect(child == want2, "GPT child: \(child.sorted { $0.key < $1.key })")
      #expect(child["added.txt"] != nil && parent["added.txt"] == nil)
      #expect(child["Users/alice/notes.txt"]?.hasSuffix(NTFSOracle.md5(Self.new)) == true)
      #expect(parent["Users/alice/notes.txt"]?.hasSuffix(NTFSOracle.md5(Self.old)) == true)
      // sleuthkit on the child's raw conversion: ifind + icat give the new contents too.
      try Qemu.img("convert", "-O", "raw", "\(dir)/child.vmdk", "\(dir)/child.raw")
      let record = try runChecked(
        try requireTool("ifind"), ["-o", "2048", "-n", "/Users/alice/notes.txt", "\(dir)/child.raw"]
      ).output.trimmingCharacters(in: .whitespacesAndNewlines)
      let icat = try runChecked(try requireTool("icat"), ["-o", "2048", "\(dir)/child.raw", record]).stdout
      #expect(NTFSOracle.md5(Array(icat)) == NTFSOracle.md5(Self.new))
      print(
        "ntfs disks: \(want1.count) files and streams (MBR streamOptimized, GPT parent), \(want2.count) (GPT child, \(chunks) chunks) equal ntfs-3g in \(String(format: "%.1f", Date().timeIntervalSince(start))) s"
      )
    }
  }
}
