// vmdk-files on a 2-link snapshot chain whose child changed files (written with vmdk-disk
// from a FAT16 changed by mtools), and on streamOptimized: the child shows the new files, the
// parent the old ones, and every variant lists the same tree.
import Foundation
import Testing
import VMDKBlock

@Suite(.serialized) struct FilesChainInteropTests {
  @Test func childShowsChangedFilesParentTheOldOnes() throws {
    _ = try requireTool("mkfs.fat")
    _ = try requireTool("mcopy")
    let disk = try builtToolPath("vmdk-disk")
    try withTemporaryFolder { dir in
      try shell(
        """
        cd \(dir); export MTOOLS_SKIP_CHECK=1
        mkfs.fat -C -F 16 -s 1 -n CHAIN p.img 16384 >/dev/null
        echo keep > keep.txt; echo old > change.txt
        mcopy -i p.img keep.txt change.txt ::
        cp p.img c.img
        head -c 5000 /dev/urandom > change.txt; echo new > new.txt
        mcopy -o -i c.img change.txt new.txt ::
        mdel -i c.img ::keep.txt
        """)
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/p.img", "\(dir)/p.vmdk")
      try runChecked(disk, ["snapshot", "\(dir)/p.vmdk", "\(dir)/c.vmdk"])
      let parent = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/p.img"))
      let child = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/c.img"))
      let chunk = 64 << 10
      var written = 0
      for start in stride(from: 0, to: child.count, by: chunk) {
        let r = start..<min(start + chunk, child.count)
        guard parent[r] != child[r] else { continue }
        try child[r].write(to: URL(fileURLWithPath: "\(dir)/chunk"))
        try runChecked(disk, ["write", "\(dir)/c.vmdk", "--offset", String(start), "--input", "\(dir)/chunk"])
        written += 1
      }
      #expect(written > 0 && written < child.count / chunk / 2)

      func names(_ image: String) throws -> [String] {
        let r = try vmdkFiles(["ls", image])
        #expect(r.status == 0, "\(r.errorOutput)")
        return r.output.split(separator: "\n").map(String.init).sorted()
      }
      #expect(try names("\(dir)/c.vmdk") == ["change.txt", "new.txt"])
      #expect(try names("\(dir)/p.vmdk") == ["change.txt", "keep.txt"])
      let newer = try vmdkFiles(["cat", "\(dir)/c.vmdk", "/change.txt"])
      #expect(newer.stdout == (try Data(contentsOf: URL(fileURLWithPath: "\(dir)/change.txt"))))
      #expect(try vmdkFiles(["cat", "\(dir)/p.vmdk", "/change.txt"]).output == "old\n")
      #expect(try vmdkFiles(["cat", "\(dir)/c.vmdk", "/keep.txt"]).status == 2)

      // streamOptimized of the child's content lists and reads the same.
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "\(dir)/c.img", "\(dir)/s.vmdk")
      let a = try vmdkFiles(["ls", "-R", "--json", "\(dir)/s.vmdk"])
      let b = try vmdkFiles(["ls", "-R", "--json", "\(dir)/c.vmdk"])
      #expect(a.status == 0 && a.stdout == b.stdout)
      #expect(try vmdkFiles(["cat", "\(dir)/s.vmdk", "/change.txt"]).stdout == newer.stdout)
    }
  }
}
