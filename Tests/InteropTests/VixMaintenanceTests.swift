// The VixDiskLib calls the other C tests leave out, driven through Tests/VixDiskLibTests/C/maint.c
// (compiled with cc against the built library): Init, WriteAsync, Grow, Shrink, Defragment,
// Rename, Unlink, SpaceNeededForClone, CheckRepair, IsAttachPossible and Attach. Each result is
// read back with qemu-img: `qemu-img check` clean, the bytes qemu decodes, the chain it sees.
import Foundation
import Testing

@Suite(.serialized) struct VixMaintenanceTests {
  private func maint(_ folder: String) throws -> String { try VixCTests.compile("maint", into: folder) }

  private func fileSize(_ path: String) throws -> UInt64 {
    ((try FileManager.default.attributesOfItem(atPath: path))[.size] as? NSNumber)?.uint64Value ?? 0
  }

  @Test func writeAsyncRequestsLandWhereQemuReadsThem() throws {
    try withTemporaryFolder { folder in
      let tool = try maint(folder)
      let disk = "\(folder)/d.vmdk"
      try Qemu.create(disk, size: 16 << 20)
      let r = VixCTests.lines(try runChecked(tool, ["writeasync", disk, "48"]))
      #expect(r["async"] == "48" && r["completed"] == "48" && r["completedOK"] == "48", "\(r)")
      #expect(r["badRequests"] == "0")
      try Qemu.img("check", "-f", "vmdk", disk)
      // Request i is 64 KiB of 0x41 + i at 128 KiB * i; the 64 KiB after it stays zero.
      for i in [0, 1, 17, 47] {
        try Qemu.io(
          disk,
          ["read -P 0x\(String(0x41 + i, radix: 16)) \(i * 131_072) 65536", "read -P 0 \(i * 131_072 + 65536) 65536"])
      }
      let bad = try runProcess(
        try requireTool("qemu-io"), ["-f", "vmdk", "-c", "read -P 0x41 131072 65536", disk])
      #expect(String(decoding: bad.stdout, as: UTF8.self).contains("Pattern verification failed"), "the check can fail")
    }
  }

  @Test func growAddsCapacityAndNeverShrinks() throws {
    try withTemporaryFolder { folder in
      let tool = try maint(folder)
      let disk = "\(folder)/d.vmdk"
      try Qemu.create(disk, size: 8 << 20)
      try Qemu.io(disk, ["write -P 0x5a 0 1M", "write -P 0x6b 7M 1M"])
      let r = VixCTests.lines(try runChecked(tool, ["grow", disk, "\((24 << 20) / 512)"]))
      #expect(r["capacity"] == "\((24 << 20) / 512)" && r["progressLast"] == "100", "\(r)")
      try Qemu.img("check", "-f", "vmdk", disk)
      let info = String(decoding: try Qemu.img("info", "--output=json", disk).stdout, as: UTF8.self)
      #expect(info.contains("\"virtual-size\": \(24 << 20)"), "\(info)")
      try Qemu.io(disk, ["read -P 0x5a 0 1M", "read -P 0x6b 7M 1M", "read -P 0 8M 16M"])
      // Fewer sectors is refused, and the disk is untouched.
      let grown = try Qemu.rawSHA256(disk, scratch: folder)
      let smaller = VixCTests.lines(try runChecked(tool, ["grow-smaller", disk, "2048"]))
      #expect(smaller["code"] != "0")
      #expect(try Qemu.rawSHA256(disk, scratch: folder) == grown)
    }
  }

  @Test(arguments: ["shrink", "defragment"])
  func shrinkAndDefragmentKeepTheBytes(call: String) throws {
    try withTemporaryFolder { folder in
      let tool = try maint(folder)
      let disk = "\(folder)/d.vmdk"
      try Qemu.create(disk, size: 32 << 20)
      // Grains written out of order (qemu allocates in write order), then some zeroed as data:
      // Shrink drops the zero grains, Defragment puts the grains in virtual order.
      try Qemu.io(
        disk,
        [
          "write -P 0x11 20M 1M", "write -P 0x22 1M 1M", "write -P 0x33 10M 2M", "write -P 0 10M 1M",
          "write -P 0x44 0 64k",
        ])
      let digest = try Qemu.rawSHA256(disk, scratch: folder)
      let sizeBefore = try fileSize(disk)
      let r = VixCTests.lines(try runChecked(tool, [call, disk]))
      #expect(r["progressLast"] == "100" && r["firstByte"] == "\(0x44)", "\(r)")
      try Qemu.img("check", "-f", "vmdk", disk)
      #expect(try Qemu.rawSHA256(disk, scratch: folder) == digest)
      if call == "shrink" { #expect(try fileSize(disk) < sizeBefore, "1 MiB of zero grains dropped") }
      if call == "defragment" {
        // qemu-img map lists the data ranges; their file offsets now rise with the guest offset.
        let offsets = try Qemu.map(disk).filter { $0.data }.compactMap { $0.offset }
        #expect(offsets == offsets.sorted(), "\(offsets)")
      }
    }
  }

  @Test func renameMovesEveryFileAndUnlinkDeletesThem() throws {
    try withTemporaryFolder { folder in
      let tool = try maint(folder)
      let disk = "\(folder)/split.vmdk"
      // Two extent files: Rename and Unlink must take both, and the descriptor must follow.
      try Qemu.create(disk, size: 3 << 30, options: ["subformat=twoGbMaxExtentSparse"])
      try Qemu.io(disk, ["write -P 0x5a 0 64k", "write -P 0x6b 2100M 64k"])
      let digest = try Qemu.rawSHA256(disk, scratch: folder)
      try runChecked(tool, ["rename", disk, "\(folder)/moved.vmdk"])
      let left = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("split") }
      #expect(left.isEmpty, "\(left)")
      try Qemu.img("check", "-f", "vmdk", "\(folder)/moved.vmdk")
      #expect(try Qemu.rawSHA256("\(folder)/moved.vmdk", scratch: folder) == digest)
      let moved = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("moved") }
      #expect(moved.count == 3, "descriptor + 2 extents: \(moved)")
      try runChecked(tool, ["unlink", "\(folder)/moved.vmdk"])
      let after = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("moved") }
      #expect(after.isEmpty, "\(after)")
    }
  }

  @Test func spaceNeededForCloneCoversWhatCloneWrites() throws {
    try withTemporaryFolder { folder in
      let tool = try maint(folder)
      let disk = "\(folder)/d.vmdk"
      try Qemu.create(disk, size: 64 << 20)
      try Qemu.io(disk, ["write -P 0x5a 0 3M", "write -P 0x6b 40M 1M"])
      let sparse = UInt64(VixCTests.lines(try runChecked(tool, ["space", disk, "1"]))["spaceNeeded"] ?? "") ?? 0
      let flat = UInt64(VixCTests.lines(try runChecked(tool, ["space", disk, "2"]))["spaceNeeded"] ?? "") ?? 0
      #expect(flat == 64 << 20)
      // At least the 4 MiB of data, and no more than the data plus 1 MiB of tables and header.
      #expect(sparse >= 4 << 20 && sparse <= 5 << 20, "\(sparse)")
      // What qemu-img writes for the same sparse clone fits in it.
      try Qemu.img("convert", "-O", "vmdk", disk, "\(folder)/clone.vmdk")
      #expect(try fileSize("\(folder)/clone.vmdk") <= sparse)
    }
  }

  @Test func checkRepairFindsAndFixesADamagedDirectory() throws {
    try withTemporaryFolder { folder in
      let tool = try maint(folder)
      let disk = "\(folder)/d.vmdk"
      try Qemu.create(disk, size: 16 << 20)
      try Qemu.io(disk, ["write -P 0x5a 0 1M", "write -P 0x6b 9M 64k"])
      let digest = try Qemu.rawSHA256(disk, scratch: folder)
      #expect(VixCTests.lines(try runChecked(tool, ["checkrepair", disk, "0"]))["code"] == "0")
      // Clear the redundant grain directory's first entry (header offset 56) and leak a tail.
      let h = try FileHandle(forUpdating: URL(fileURLWithPath: disk))
      try h.seek(toOffset: 56)
      let rgd = try h.read(upToCount: 8)!.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
      try h.seek(toOffset: rgd * 512)
      try h.write(contentsOf: Data([0, 0, 0, 0]))
      try h.seekToEnd()
      try h.write(contentsOf: Data(repeating: 0x77, count: 70_000))
      try h.close()
      let found = VixCTests.lines(try runChecked(tool, ["checkrepair", disk, "0"]))
      #expect(found["code"] != "0" && found["text"]?.contains("d.vmdk") == true, "\(found)")
      let fixed = VixCTests.lines(try runChecked(tool, ["checkrepair", disk, "1"]))
      #expect(fixed["code"] == "0", "\(fixed)")
      #expect(VixCTests.lines(try runChecked(tool, ["checkrepair", disk, "0"]))["code"] == "0")
      try Qemu.img("check", "-f", "vmdk", disk)
      #expect(try Qemu.rawSHA256(disk, scratch: folder) == digest)
    }
  }

  @Test func attachMakesTheChildReadThroughItsNewParent() throws {
    try withTemporaryFolder { folder in
      let tool = try maint(folder)
      let parent = "\(folder)/parent.vmdk"
      let child = "\(folder)/child.vmdk"
      let small = "\(folder)/small.vmdk"
      try Qemu.create(parent, size: 8 << 20)
      try Qemu.io(parent, ["write -P 0x61 0 1M"])
      try Qemu.create(child, size: 8 << 20)
      try Qemu.io(child, ["write -P 0x62 4M 64k"])
      try Qemu.create(small, size: 4 << 20)
      let mismatch = VixCTests.lines(try runChecked(tool, ["attach", parent, small]))
      #expect(mismatch["possible"] != "0" && mismatch["firstByte"] == nil, "\(mismatch)")
      let r = VixCTests.lines(try runChecked(tool, ["attach", parent, child]))
      #expect(r["possible"] == "0" && r["firstByte"] == "\(0x61)" && r["numLinks"] == "2", "\(r)")
      try Qemu.img("check", "-f", "vmdk", child)
      let chain = String(decoding: try Qemu.img("info", "--backing-chain", child).stdout, as: UTF8.self)
      #expect(chain.contains("parent.vmdk"), "\(chain)")
      try Qemu.io(child, ["read -P 0x61 0 1M", "read -P 0x62 4M 64k", "read -P 0 5M 3M"])
    }
  }
}
