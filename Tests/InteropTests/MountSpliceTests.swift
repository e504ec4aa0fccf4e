// vmdk-mount's spliced reads (Disk.hostPieces through the file system's FileMapping) on files
// whose bytes are not one run of one host file: a sparse file (holes in ext4 and unallocated
// grains), a fragmented file (debugfs writes it into the gaps left by deleted files) and a
// file of a 2-link chain whose one written block is in the child and the rest in the parent.
// Each read through the mount (page cache, and --direct-io) equals `vmdk-files cat`; the
// pieces themselves are checked in process (zeros, several volume runs, two host files).
import Foundation
import Testing
import VMDKBlock
import VMDKFiles

@Suite(.serialized) struct MountSpliceTests {
  @Test func splicedReadsOfSparseFragmentedAndChainFilesEqualVmdkFilesCat() throws {
    _ = try requireFuse()
    let debugfs = try requireTool("debugfs")
    try withTemporaryFolder { dir in
      let src = "\(dir)/src"
      try shell(
        """
        set -e; mkdir -p '\(src)'; cd '\(src)'
        truncate -s 6M sparse.bin
        head -c 100000 /dev/urandom | dd of=sparse.bin conv=notrunc status=none
        head -c 70000 /dev/urandom | dd of=sparse.bin bs=1 seek=3000000 conv=notrunc status=none
        head -c 5000 /dev/urandom | dd of=sparse.bin bs=1 seek=6286000 conv=notrunc status=none
        head -c 2097152 /dev/urandom > big.bin
        for i in $(seq 1 48); do head -c 49152 /dev/urandom > f$i.bin; done
        head -c 1234567 /dev/urandom > '\(dir)/frag.src'
        """)
      let fs = "\(dir)/fs.img"
      try runChecked(try requireTool("mke2fs"), ["-q", "-F", "-t", "ext4", "-b", "4096", "-d", src, fs, "64M"])
      // Every other filler goes; debugfs then writes frag.bin into the gaps.
      let script = (1...48).filter { $0 % 2 == 0 }.map { "rm /f\($0).bin" } + ["write \(dir)/frag.src frag.bin"]
      try script.joined(separator: "\n").write(toFile: "\(dir)/cmds", atomically: true, encoding: .utf8)
      try runChecked(debugfs, ["-w", "-f", "\(dir)/cmds", fs])
      let parent = try MountOracle.gptDisk(fs, dir, name: "d")

      // The child: one 4 KiB block of big.bin written through qemu-io (its grain is copied
      // from the parent on write), the rest of the file read from the parent.
      let bmap = try runChecked(debugfs, ["-R", "bmap /big.bin 100", fs]).output
      let block = try #require(UInt64(bmap.trimmingCharacters(in: .whitespacesAndNewlines)), "bmap: \(bmap)")
      try Qemu.img("create", "-f", "vmdk", "-b", parent, "-F", "vmdk", "\(dir)/child.vmdk")
      try Qemu.io("\(dir)/child.vmdk", ["write -P 0x5a \((256 + block) * 4096) 4096"])
      let child = "\(dir)/child.vmdk"
      let files = ["/sparse.bin", "/frag.bin", "/big.bin", "/f1.bin"]

      // The pieces, in process.
      let disk = try Disk.open(child)
      defer { try? disk.close() }
      let (_, system) = try DiskLayout(disk: disk, name: child).fileSystem(partition: nil)
      let mapping = try #require(system.mapping)
      func pieces(_ path: String) throws -> [HostPiece] {
        let id = try system.lookup(path)
        let size = try system.stat(id).size
        let p = try #require(try mapping.hostPieces(id, at: 0, length: Int(size), maxPieces: 4096))
        #expect(p.reduce(0) { $0 + $1.length } == Int(size), "\(path): pieces sum to the size")
        return p
      }
      func descriptors(_ p: [HostPiece]) -> Set<Int32> {
        Set(p.compactMap { if case .file(let fd, _, _) = $0 { fd } else { nil } })
      }
      let sparse = try pieces("/sparse.bin")
      #expect(sparse.contains { if case .zero = $0 { true } else { false } }, "sparse.bin: \(sparse)")
      let fragID = try system.lookup("/frag.bin")
      let runs = try #require(try mapping.volumePieces(fragID, at: 0, length: 1_234_567, maxPieces: 4096))
      #expect(runs.count >= 3, "frag.bin is in \(runs.count) runs of the volume: \(runs)")
      let big = try pieces("/big.bin")
      #expect(descriptors(big).count == 2, "big.bin: pieces of the child and of the parent: \(big), block \(block)")

      let cat = try builtToolPath("vmdk-files")
      var want: [String: String] = [:]
      for f in files {
        let r = try runChecked("/bin/bash", ["-c", "'\(cat)' cat '\(child)' '\(f)' | md5sum"])
        want[f] = String(r.output.prefix(32))
      }
      for extra in [[], ["--direct-io"]] {
        try withMount(child, at: "\(dir)/mnt", extra) { mnt in
          for f in files {
            // Whole files, and reads that start and end inside pieces.
            let whole = try runChecked("/bin/bash", ["-c", "md5sum < '\(mnt)\(f)'"]).output.prefix(32)
            #expect(String(whole) == want[f], "\(extra) \(f): md5 through the mount")
            let ours = try runChecked(
              "/bin/bash", ["-c", "dd if='\(mnt)\(f)' bs=12345 skip=7 count=50 status=none | md5sum"]
            ).output
            let theirs = try runChecked(
              "/bin/bash",
              [
                "-c",
                "'\(cat)' cat '\(child)' '\(f)' | dd bs=12345 skip=7 count=50 iflag=fullblock status=none | md5sum",
              ]
            ).output
            #expect(ours == theirs, "\(extra) \(f): 50 reads of 12345 bytes from byte 86415")
          }
        }
      }
    }
  }
}
