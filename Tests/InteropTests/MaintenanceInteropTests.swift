// vmdk-disk's maintenance commands against qemu-img: images made by qemu-img and qemu-io (and
// real vmware-vdiskmanager images from TestImages) go through resize, compact, defragment,
// repair and rename with the tool; afterwards `qemu-img check` passes and the SHA-256 of
// `qemu-img convert -O raw` is the expected content. Resize is compared with `qemu-img resize`
// of the raw content (qemu's vmdk driver cannot resize). A missing qemu-img fails these tests
// (requireTool), on CI and elsewhere.

import Foundation
import Testing
import VMDKBlock

private enum VMDKDiskTool {
  static func path() throws -> String { try builtToolPath("vmdk-disk") }

  @discardableResult
  static func run(_ arguments: String...) throws -> ProcessResult { try runChecked(try path(), arguments) }

  static func runStatus(_ arguments: String...) throws -> ProcessResult { try runProcess(try path(), arguments) }
}

/// The bytes of every file of an image (descriptor and extents).
private func imageBytes(_ path: String) throws -> UInt64 {
  var o = OpenOptions()
  o.singleLink = true
  let d = try Disk.open(path, options: o)
  var paths = Set(d.top.extents.compactMap(\.path))
  paths.insert(path)
  return try paths.reduce(0) {
    $0 + (try FileManager.default.attributesOfItem(atPath: $1)[.size] as! NSNumber).uint64Value
  }
}

/// `qemu-img check` must pass.
private func qemuCheck(_ path: String) throws {
  try Qemu.img("check", "-f", "vmdk", path)
}

/// Data qemu-io writes: pattern data, zeros written as data, and a zero-write.
private let qemuWrites = [
  "write -P 0x5a 0 1M", "write -P 0 2M 512k", "write -P 0x11 5M 64k", "write -z 8M 1M", "write -P 0x22 20M 192k",
  "write -P 0 30M 64k",
]

struct MaintenanceInteropTests {
  static let types = ["monolithicSparse", "twoGbMaxExtentSparse", "monolithicFlat"]

  private func made(_ type: String, in folder: String) throws -> String {
    let path = "\(folder)/disk.vmdk"
    try Qemu.create(path, size: 32 << 20, options: ["subformat=\(type)"])
    try Qemu.io(path, qemuWrites)
    return path
  }

  @Test(arguments: types)
  func resizeGrowMatchesQemuImgResize(type: String) throws {
    try withTemporaryFolder { folder in
      let path = try made(type, in: folder)
      let raw = "\(folder)/ref.raw"
      try Qemu.img("convert", "-O", "raw", path, raw)
      try Qemu.img("resize", "-q", "-f", "raw", raw, "100M")
      try VMDKDiskTool.run("resize", path, "100M")
      try qemuCheckIfSparse(path, type)
      #expect(try Qemu.rawSHA256(path, scratch: folder) == fileDigest(raw, .sha256))
      let info = try Qemu.img("info", "--output=json", path).output
      #expect(info.contains("\"virtual-size\": 104857600"), "\(info)")
    }
  }

  @Test func resizeGrowInPlaceMatchesQemuImgResize() throws {
    try withTemporaryFolder { folder in
      // 20 MiB: the one grain table covers 32 MiB, so growing to 30 MiB changes no table.
      let path = "\(folder)/disk.vmdk"
      try Qemu.create(path, size: 20 << 20)
      try Qemu.io(path, ["write -P 0x5a 0 64k", "write -P 0x6b 19M 1M"])
      let raw = "\(folder)/ref.raw"
      try Qemu.img("convert", "-O", "raw", path, raw)
      try Qemu.img("resize", "-q", "-f", "raw", raw, "30M")
      let sizeBefore = try imageBytes(path)
      try VMDKDiskTool.run("resize", path, "30M")
      #expect(try imageBytes(path) == sizeBefore)
      try qemuCheck(path)
      #expect(try Qemu.rawSHA256(path, scratch: folder) == fileDigest(raw, .sha256))
      // qemu writes into the grown part.
      try Qemu.io(path, ["write -P 0x7c 29M 64k"])
      try qemuCheck(path)
      try vmdkInspect("check", path)
      try expectAgreesWithQemu(path, scratch: folder)
    }
  }

  @Test(arguments: types)
  func shrinkIsRefusedOverDataAndAllowedPastIt(type: String) throws {
    try withTemporaryFolder { folder in
      let path = try made(type, in: folder)
      let before = try Qemu.rawSHA256(path, scratch: folder)
      let refused = try VMDKDiskTool.runStatus("resize", path, "16M", "--shrink")
      #expect(refused.status == 1)
      #expect(refused.errorOutput.split(separator: "\n").count == 1)
      #expect(try Qemu.rawSHA256(path, scratch: folder) == before)
      try VMDKDiskTool.run("resize", path, "31M", "--shrink")
      try qemuCheckIfSparse(path, type)
      let raw = "\(folder)/ref.raw"
      try Qemu.img("convert", "-O", "raw", path, raw)
      #expect((try FileManager.default.attributesOfItem(atPath: raw)[.size] as! NSNumber).uint64Value == 31 << 20)
    }
  }

  private func qemuCheckIfSparse(_ path: String, _ type: String) throws {
    // qemu-img check says "does not support checks" for flat images (exit 63).
    if type.contains("Sparse") { try qemuCheck(path) }
  }

  @Test(arguments: ["monolithicSparse", "twoGbMaxExtentSparse"])
  func compactAndDefragmentKeepTheContent(type: String) throws {
    try withTemporaryFolder { folder in
      let path = try made(type, in: folder)
      let digest = try Qemu.rawSHA256(path, scratch: folder)
      let before = try imageBytes(path)
      try VMDKDiskTool.run("compact", path)
      try qemuCheck(path)
      #expect(try Qemu.rawSHA256(path, scratch: folder) == digest)
      #expect(try imageBytes(path) < before)
      try VMDKDiskTool.run("defragment", path)
      try qemuCheck(path)
      #expect(try Qemu.rawSHA256(path, scratch: folder) == digest)
      let offsets = try Qemu.map(path).filter(\.data).compactMap(\.offset)
      if type == "monolithicSparse" { #expect(offsets == offsets.sorted()) }
      try expectAgreesWithQemu(path, scratch: folder)
    }
  }

  @Test func defragmentOrdersGrainsQemuIoWroteBackwards() throws {
    try withTemporaryFolder { folder in
      let path = "\(folder)/disk.vmdk"
      try Qemu.create(path, size: 16 << 20)
      try Qemu.io(path, ["write -P 0x33 12M 64k", "write -P 0x44 4M 64k", "write -P 0x55 0 64k"])
      let offsets = { try Qemu.map(path).filter(\.data).compactMap(\.offset) }
      #expect(try offsets() != offsets().sorted())
      let digest = try Qemu.rawSHA256(path, scratch: folder)
      try VMDKDiskTool.run("defragment", path)
      try qemuCheck(path)
      #expect(try offsets() == offsets().sorted())
      #expect(try Qemu.rawSHA256(path, scratch: folder) == digest)
    }
  }

  @Test func repairRebuildsADamagedDirectory() throws {
    try withTemporaryFolder { folder in
      let path = try made("monolithicSparse", in: folder)
      let digest = try Qemu.rawSHA256(path, scratch: folder)
      // Clear the grain directory's first entry (header offset 56: gdOffset, in sectors).
      let h = try FileHandle(forUpdating: URL(fileURLWithPath: path))
      try h.seek(toOffset: 56)
      let rgd = try h.read(upToCount: 8)!.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
      try h.seek(toOffset: rgd * 512)
      try h.write(contentsOf: Data([0, 0, 0, 0]))
      // And a leaked tail.
      try h.seekToEnd()
      try h.write(contentsOf: Data(repeating: 0x77, count: 70_000))
      try h.close()
      #expect(try runProcess(try vmdkInspectPath(), ["check", path]).status == 1)
      try VMDKDiskTool.run("repair", path)
      try vmdkInspect("check", path)
      try qemuCheck(path)
      #expect(try Qemu.rawSHA256(path, scratch: folder) == digest)
    }
  }

  @Test(arguments: types)
  func renameKeepsTheContent(type: String) throws {
    try withTemporaryFolder { folder in
      let path = try made(type, in: folder)
      let digest = try Qemu.rawSHA256(path, scratch: folder)
      try VMDKDiskTool.run("rename", path, "\(folder)/other.vmdk")
      #expect(!FileManager.default.fileExists(atPath: path))
      #expect(try Qemu.rawSHA256("\(folder)/other.vmdk", scratch: folder) == digest)
      let left = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("disk") }
      #expect(left.isEmpty, "\(left)")
      try VMDKDiskTool.run("delete", "\(folder)/other.vmdk")
      #expect(try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".vmdk") }.isEmpty)
    }
  }

  @Test func renamedParentStillServesItsQemuChild() throws {
    try withTemporaryFolder { folder in
      let base = try made("monolithicSparse", in: folder)
      let child = "\(folder)/child.vmdk"
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", "disk.vmdk", "-F", "vmdk", child)
      try Qemu.io(child, ["write -P 0x99 1M 64k"])
      let digest = try Qemu.rawSHA256(child, scratch: folder)
      #expect(try VMDKDiskTool.runStatus("delete", base).status == 1)
      try VMDKDiskTool.run("rename", base, "\(folder)/base2.vmdk")
      #expect(try descriptorValue("parentFileNameHint", inFile: child) == "base2.vmdk")
      #expect(try Qemu.rawSHA256(child, scratch: folder) == digest)
      try VMDKDiskTool.run("compact", child)
      try qemuCheck(child)
      #expect(try Qemu.rawSHA256(child, scratch: folder) == digest)
    }
  }

  // MARK: Real vmware-vdiskmanager images

  /// Damaged copies of the real vmware-vdiskmanager monolithicSparse, one fault each plus a
  /// leaked tail: the primary directory entry cleared, a redundant table entry that holds a
  /// grain cleared, the same primary table entry cleared. repair rebuilds from the sane copy
  /// and cuts the tail: check is clean, qemu-img check passes, the content is the documented one.
  @Test(arguments: ["primary directory entry", "redundant table entry", "primary table entry"])
  func repairOnADamagedRealImage(fault: String) throws {
    try withTemporaryFolder { folder in
      let path = "\(folder)/monolithicSparse.vmdk"
      try FileManager.default.copyItem(
        atPath: "\(testImagesFolder)/vdiskmanager/monolithicSparse.vmdk", toPath: path)
      let expected = "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727"
      let h = try FileHandle(forUpdating: URL(fileURLWithPath: path))
      func u64(_ at: UInt64) throws -> UInt64 {
        try h.seek(toOffset: at)
        return try h.read(upToCount: 8)!.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
      }
      func u32(_ at: UInt64) throws -> UInt32 {
        try h.seek(toOffset: at)
        return try h.read(upToCount: 4)!.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
      }
      func clear(_ at: UInt64) throws {
        try h.seek(toOffset: at)
        try h.write(contentsOf: Data([0, 0, 0, 0]))
      }
      // Header: rgdOffset at byte 48, gdOffset at 56 (sectors).
      let rgd = try u64(48)
      let gd = try u64(56)
      let rgt = UInt64(try u32(rgd * 512))
      let gt = UInt64(try u32(gd * 512))
      // The first entry of table 0 that holds a grain.
      let used = try (0..<512).first { try u32(gt * 512 + UInt64($0) * 4) != 0 }
      let entry = UInt64(try #require(used, "the image has data in its first grain table"))
      switch fault {
      case "primary directory entry": try clear(gd * 512)
      case "redundant table entry": try clear(rgt * 512 + entry * 4)
      default: try clear(gt * 512 + entry * 4)
      }
      try h.seekToEnd()
      try h.write(contentsOf: Data(repeating: 0x55, count: 100_000))
      try h.close()
      #expect(try runProcess(try vmdkInspectPath(), ["check", path]).status == 1)
      try VMDKDiskTool.run("repair", path)
      try vmdkInspect("check", path)
      try qemuCheck(path)
      #expect(try Qemu.rawSHA256(path, scratch: folder) == expected)
    }
  }

  static let vdiskmanager: [(String, [String])] = [
    ("monolithicSparse.vmdk", ["monolithicSparse.vmdk"]),
    ("twoGbMaxExtentSparse.vmdk", ["twoGbMaxExtentSparse.vmdk", "twoGbMaxExtentSparse-s001.vmdk"]),
  ]

  @Test(arguments: [0, 1])
  func vdiskmanagerImagesSurviveEveryOperation(index: Int) throws {
    let (name, files) = Self.vdiskmanager[index]
    try withTemporaryFolder { folder in
      for f in files {
        try FileManager.default.copyItem(atPath: "\(testImagesFolder)/vdiskmanager/\(f)", toPath: "\(folder)/\(f)")
      }
      let path = "\(folder)/\(name)"
      let expected = "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727"
      #expect(try Qemu.rawSHA256(path, scratch: folder) == expected)
      for op in ["defragment", "compact"] {
        try VMDKDiskTool.run(op, path)
        try qemuCheck(path)
        #expect(try Qemu.rawSHA256(path, scratch: folder) == expected, "\(op)")
      }
      try VMDKDiskTool.run("repair", path)
      try vmdkInspect("check", path)
      let raw = "\(folder)/ref.raw"
      try Qemu.img("convert", "-O", "raw", path, raw)
      try Qemu.img("resize", "-q", "-f", "raw", raw, "64M")
      try VMDKDiskTool.run("resize", path, "64M")
      try qemuCheck(path)
      #expect(try Qemu.rawSHA256(path, scratch: folder) == fileDigest(raw, .sha256))
    }
  }

  @Test func vdiskmanagerFlatImageGrows() throws {
    try withTemporaryFolder { folder in
      try FileManager.default.copyItem(
        atPath: "\(testImagesFolder)/vdiskmanager/monolithicFlat.vmdk", toPath: "\(folder)/monolithicFlat.vmdk")
      try runChecked(
        "/bin/sh",
        [
          "-c",
          "gunzip -c '\(testImagesFolder)/vdiskmanager/monolithicFlat-flat.vmdk.gz' > '\(folder)/monolithicFlat-flat.vmdk'",
        ])
      let path = "\(folder)/monolithicFlat.vmdk"
      let raw = "\(folder)/ref.raw"
      try Qemu.img("convert", "-O", "raw", path, raw)
      try Qemu.img("resize", "-q", "-f", "raw", raw, "64M")
      try VMDKDiskTool.run("resize", path, "64M")
      #expect(try Qemu.rawSHA256(path, scratch: folder) == fileDigest(raw, .sha256))
      #expect(try descriptorValue("ddb.geometry.cylinders", inFile: path) != nil)
    }
  }
}
