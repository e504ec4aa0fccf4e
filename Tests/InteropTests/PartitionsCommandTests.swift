// `vmdk-inspect partitions` and `vmdk-files partitions` are one command (FilesToolSupport):
// the same standard output, text and JSON, the same warnings and the same exit status, on a
// GPT disk with a FAT12 and an ext4 partition (its primary header intact, then destroyed), an
// MBR disk with a logical partition, and a file that is no disk at all.
import Foundation
import Testing
import VMDKBlock

@Suite(.serialized) struct PartitionsCommandTests {
  /// Both tools' answers for `arguments`, stderr with the tool's name taken out.
  func both(_ arguments: [String]) throws -> (files: ProcessResult, inspect: ProcessResult) {
    let f = try runProcess(try builtToolPath("vmdk-files"), arguments)
    let i = try runProcess(try vmdkInspectPath(), arguments)
    return (f, i)
  }

  func expectSame(_ arguments: [String], status: Int32, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let (f, i) = try both(arguments)
    #expect(f.status == status, "vmdk-files: \(f.errorOutput)", sourceLocation: sourceLocation)
    #expect(i.status == f.status, sourceLocation: sourceLocation)
    #expect(!f.stdout.isEmpty || status != 0, sourceLocation: sourceLocation)
    #expect(i.output == f.output, sourceLocation: sourceLocation)
    let fe = f.errorOutput.replacingOccurrences(of: "vmdk-files:", with: "TOOL:")
    let ie = i.errorOutput.replacingOccurrences(of: "vmdk-inspect:", with: "TOOL:")
    #expect(ie == fe, sourceLocation: sourceLocation)
  }

  @Test func gptMbrAndNoDiskGiveTheSameOutput() throws {
    _ = try requireTool("sgdisk")
    _ = try requireTool("sfdisk")
    _ = try requireTool("mkfs.fat")
    _ = try requireTool("mke2fs")
    try withTemporaryFolder { dir in
      try shell(
        """
        cd \(dir); truncate -s 48M g.img
        sgdisk -o -n 1:2048:+8M -t 1:ef00 -c 1:EFI -n 2:0:+16M -t 2:8300 -c 2:root g.img >/dev/null
        mkfs.fat -C -F 12 -n ESP f.img 8192 >/dev/null; dd if=f.img of=g.img bs=512 seek=2048 conv=notrunc status=none
        truncate -s 16M e.img; mke2fs -q -F -t ext4 -L rootfs e.img
        dd if=e.img of=g.img bs=512 seek=18432 conv=notrunc status=none
        truncate -s 64M m.img
        printf 'label: dos\\nstart=2048, size=8192, type=83\\nstart=10240, size=40000, type=5\\nstart=12288, size=8192, type=c\\n' | sfdisk -q m.img
        head -c 5000 /dev/urandom > junk.bin
        """)
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/g.img", "\(dir)/g.vmdk")
      for image in ["\(dir)/g.vmdk", "\(dir)/g.img", "\(dir)/m.img", "\(dir)/junk.bin"] {
        try expectSame(["partitions", image], status: 0)
        try expectSame(["partitions", "--json", image], status: 0)
      }
      // The text names what it found: ext4 and FAT16 with their labels.
      let text = try both(["partitions", "\(dir)/g.vmdk"]).inspect.output
      #expect(
        text.contains("ext4") && text.contains("rootfs") && text.contains("fat12") && text.contains("ESP"), "\(text)")
      // The primary header destroyed: the same warning about the backup from both.
      try shell("cd \(dir); dd if=/dev/zero of=g.img bs=512 seek=1 count=1 conv=notrunc status=none")
      try expectSame(["partitions", "\(dir)/g.img"], status: 0)
      #expect(try both(["partitions", "\(dir)/g.img"]).inspect.errorOutput.contains("backup"))
      // Not a disk the toolkit opens: the same error and status.
      try expectSame(["partitions", "\(dir)/missing.vmdk"], status: 2)
    }
  }
}
