// The rest of issue 11's C checks, through Tests/VixDiskLibTests/C/vixcheck.c: every GetInfo
// field against vmdk-inspect (and the descriptor qemu wrote) for each adapter type,
// QueryAllocatedBlocks against `vmdk-inspect allocated`, Create/Clone/CreateChild outputs that
// qemu-img checks and reads back, the CID mismatch code, and log callbacks that keep stderr
// empty.

import Foundation
import Testing

@Suite(.timeLimit(.minutes(20))) struct VixChecksTests {
  static func json(_ arguments: String...) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: try runChecked(try vmdkInspectPath(), arguments).stdout) as? [String: Any]
      ?? [:]
  }

  /// VixDiskLibAdapterType's number for a ddb.adapterType value: VixDiskLib has numbers for
  /// IDE, BusLogic and LSI Logic only; legacyESX, lsisas1068, pvscsi are UNKNOWN (256).
  static func adapterNumber(_ name: String?) -> String {
    switch name?.lowercased() {
    case "ide": "1"
    case "buslogic": "2"
    case "lsilogic": "3"
    default: "256"
    }
  }

  /// A two-link chain by qemu-img and qemu-io: data in both links, zeroed grains in the child
  /// over the base's data, ranges neither has.
  static func makeChain(in folder: String) throws -> (base: String, child: String) {
    let base = "\(folder)/base.vmdk"
    let child = "\(folder)/child.vmdk"
    try Qemu.create(base, size: 16 << 20, options: ["adapter_type=buslogic"])
    try Qemu.io(base, ["write -P 0x41 0 3M", "write -P 0x42 7M 64K", "write -P 0x43 12M 1M"])
    try Qemu.create(child, size: 16 << 20, options: ["zeroed_grain=on", "backing_file=\(base)", "backing_fmt=vmdk"])
    try Qemu.io(child, ["write -P 0x51 1M 128K", "write -z 2M 512K", "write -P 0x52 9M 4K", "write -P 0x53 15M 1M"])
    return (base, child)
  }

  @Test func getInfoFieldsMatchVmdkInspect() throws {
    try withTemporaryFolder { folder in
      let check = try VixCTests.compile("vixcheck", into: folder)
      var cases = VixCTests.images.map { "\(testImagesFolder)/\($0)" }
      for adapter in ["ide", "buslogic", "lsilogic", "legacyESX"] {
        let disk = "\(folder)/\(adapter).vmdk"
        try Qemu.create(disk, size: 300 << 20, options: ["adapter_type=\(adapter)"])
        cases.append(disk)
      }
      let chain = try Self.makeChain(in: folder)
      cases.append(chain.child)
      var adapters: Set<String> = []
      for image in cases {
        let info = VixCTests.lines(try runChecked(check, ["info", image]))
        let json = try Self.json("info", "--json", image)
        let chainLinks = json["chain"] as? [[String: Any]] ?? []
        #expect(info["capacity"] == "\(json["capacitySectors"] as? Int ?? -1)", "\(image)")
        let geometry = json["geometry"] as? [String: Any] ?? [:]
        for key in ["cylinders", "heads", "sectors"] {
          #expect(info[key] == "\(geometry[key] as? Int ?? 0)", "\(image): physGeo.\(key)")
          // BIOS geometry: the descriptor's ddb.geometry.bios* when it has them (read here from
          // the file, not by the library), else the physical geometry, as VDDK reports it.
          let bios = try descriptorValue(
            "ddb.geometry.bios\(key.prefix(1).uppercased() + key.dropFirst())", inFile: image)
          let biosKey = "bios\(key.prefix(1).uppercased() + key.dropFirst())"
          #expect(info[biosKey] == (bios ?? "\(geometry[key] as? Int ?? 0)"), "\(image): biosGeo.\(key)")
        }
        #expect(info["adapterType"] == Self.adapterNumber(json["adapterType"] as? String), "\(image)")
        adapters.insert(info["adapterType"] ?? "")
        #expect(info["numLinks"] == "\(chainLinks.count)", "\(image)")
        #expect(info["parentFileNameHint"] == (json["parentFileNameHint"] as? String ?? "(null)"), "\(image)")
        #expect(info["uuid"] == (json["uuid"] as? String ?? "(null)"), "\(image)")
        #expect(info["logicalSectorSize"] == "512" && info["physicalSectorSize"] == "512", "\(image)")
      }
      // The inputs did cover every adapter number, and the chain's fields.
      #expect(adapters == ["1", "2", "3", "256"], "\(adapters)")
      let top = VixCTests.lines(try runChecked(check, ["info", chain.child]))
      #expect(top["numLinks"] == "2" && top["parentFileNameHint"] == chain.base, "\(top)")
      // The geometry qemu wrote for IDE differs from the SCSI one: the field is really read.
      let ide = VixCTests.lines(try runChecked(check, ["info", "\(folder)/ide.vmdk"]))
      #expect(ide["heads"] == (try descriptorValue("ddb.geometry.heads", inFile: "\(folder)/ide.vmdk")))
      #expect(ide["heads"] != VixCTests.lines(try runChecked(check, ["info", "\(folder)/lsilogic.vmdk"]))["heads"])
    }
  }

  /// vixcheck's "START LENGTH" lines (bytes, adjacent blocks merged) as vmdk-inspect's pairs.
  static func ranges(_ r: ProcessResult) -> [[Int]] {
    r.output.split(separator: "\n").map { $0.split(separator: " ").compactMap { Int($0) } }
  }

  static func inspectRanges(_ image: String, chunk: Int, top: Bool) throws -> [[Int]] {
    var arguments = ["allocated", "--json", "--chunk-sectors", "\(chunk)", image]
    if top { arguments.append("--top") }
    let json =
      try JSONSerialization.jsonObject(with: try runChecked(try vmdkInspectPath(), arguments).stdout) as? [String: Any]
      ?? [:]
    #expect(json["chunkSectors"] as? Int == chunk)
    return (json["ranges"] as? [[String: Any]] ?? []).map { [$0["start"] as? Int ?? -1, $0["length"] as? Int ?? -1] }
  }

  @Test func queryAllocatedBlocksMatchesVmdkInspect() throws {
    try withTemporaryFolder { folder in
      let check = try VixCTests.compile("vixcheck", into: folder)
      let chain = try Self.makeChain(in: folder)
      var cases = VixCTests.images.map { "\(testImagesFolder)/\($0)" }
      cases += [chain.base, chain.child]
      var total = 0
      for image in cases {
        for chunk in [128, 2048] {
          let ours = Self.ranges(try runChecked(check, ["allocated", image, "\(chunk)"]))
          let theirs = try Self.inspectRanges(image, chunk: chunk, top: false)
          #expect(ours == theirs, "\(image), chunk \(chunk)")
          total += ours.count
        }
      }
      // The chain: the whole chain by default, the top link alone with SINGLE_LINK (2).
      let whole = Self.ranges(try runChecked(check, ["allocated", chain.child, "128"]))
      let single = Self.ranges(try runChecked(check, ["allocated", chain.child, "128", "2"]))
      #expect(single == (try Self.inspectRanges(chain.child, chunk: 128, top: true)))
      #expect(whole != single && !single.isEmpty)
      // The child's zeroed grains over the base's data are not allocated: 2 MiB..2.5 MiB lies
      // inside the base's first 3 MiB of data but outside every range.
      #expect(!whole.contains { $0[0] < (2 << 20) + (512 << 10) && $0[0] + $0[1] > 2 << 20 }, "\(whole)")
      #expect(total > 10)
    }
  }

  /// Bytes of `disk` as qemu-img decodes them.
  static func qemuBytes(_ disk: String, scratch: String) throws -> [UInt8] {
    let raw = "\(scratch)/qemu-\(UUID().uuidString).raw"
    defer { try? FileManager.default.removeItem(atPath: raw) }
    try Qemu.img("convert", "-O", "raw", disk, raw)
    return [UInt8](try Data(contentsOf: URL(fileURLWithPath: raw)))
  }

  /// The disk qemu-img can open: a vmfsThin disk (which qemu does not know) through a copy of
  /// its descriptor that says vmfs, the same flat extent with holes.
  static func qemuReadable(_ disk: String) throws -> String {
    guard try descriptorValue("createType", inFile: disk) == "vmfsThin" else { return disk }
    let text = try String(contentsOfFile: disk, encoding: .utf8)
    let copy = disk.replacingOccurrences(of: ".vmdk", with: "-as-vmfs.vmdk")
    try text.replacingOccurrences(of: "createType=\"vmfsThin\"", with: "createType=\"vmfs\"")
      .write(toFile: copy, atomically: true, encoding: .utf8)
    return copy
  }

  static let createTypes: [(number: Int, name: String)] = [
    (1, "monolithicSparse"), (2, "monolithicFlat"), (3, "twoGbMaxExtentSparse"), (4, "twoGbMaxExtentFlat"),
    (5, "vmfs"), (6, "streamOptimized"), (7, "vmfsThin"),
  ]

  @Test func createCloneAndCreateChildPassQemuImgCheck() throws {
    try withTemporaryFolder { folder in
      let check = try VixCTests.compile("vixcheck", into: folder)
      let adapterNames = ["1": "ide", "2": "buslogic", "3": "lsilogic"]
      // Create: every type this library writes, then 8 KiB of 0xab at 1 MiB through Write.
      for (i, type) in Self.createTypes.enumerated() {
        let disk = "\(folder)/create-\(type.number).vmdk"
        let adapter = "\(i % 3 + 1)"
        let r = try runChecked(check, ["create", disk, "\(type.number)", "20480", adapter])
        #expect(r.output.contains("last=100 bad=0"), "\(type.name): \(r.output)")
        #expect(try descriptorValue("createType", inFile: disk) == type.name)
        #expect(try descriptorValue("ddb.adapterType", inFile: disk) == adapterNames[adapter])
        try runChecked(check, ["write", disk, "2048", "16", "171"])
        let readable = try Self.qemuReadable(disk)
        try Qemu.img("check", readable)
        let bytes = try Self.qemuBytes(readable, scratch: folder)
        #expect(bytes.count == 20480 * 512, "\(type.name)")
        #expect(bytes[(1 << 20)..<((1 << 20) + 8192)].allSatisfy { $0 == 0xab }, "\(type.name)")
        #expect(bytes[0..<(1 << 20)].allSatisfy { $0 == 0 }, "\(type.name)")
        #expect(bytes[((1 << 20) + 8192)...].allSatisfy { $0 == 0 }, "\(type.name)")
      }
      // vmfsSparse is read-only here: Create says VIX_E_NOT_SUPPORTED (6).
      let sparse = try runProcess(check, ["create", "\(folder)/create-8.vmdk", "8", "20480", "3"])
      #expect(sparse.status == 1 && sparse.errorOutput.contains("failed: 6:"), "\(sparse.errorOutput)")

      // Clone of a qemu-made chain into every type: progress reaches 100, same bytes as qemu
      // reads from the source, and a second Clone without overwrite is refused (12).
      let chain = try Self.makeChain(in: folder)
      let want = try Self.qemuBytes(chain.child, scratch: folder)
      for type in Self.createTypes {
        let clone = "\(folder)/clone-\(type.number).vmdk"
        let r = VixCTests.lines(try runChecked(check, ["clone", chain.child, clone, "\(type.number)"]))
        let progress = r["progress"]?.split(separator: " ") ?? []
        #expect((Int(progress.first ?? "") ?? 0) >= 2, "\(type.name): \(r)")
        #expect(progress.contains("last=100") && progress.contains("bad=0"), "\(type.name): \(r)")
        #expect(r["again"] == "12", "\(type.name): \(r)")
        #expect(try descriptorValue("createType", inFile: clone) == type.name)
        let readable = try Self.qemuReadable(clone)
        try Qemu.img("check", readable)
        #expect(try Self.qemuBytes(readable, scratch: folder) == want, "\(type.name): the clone differs")
      }

      // CreateChild of a qemu-made parent: a 2-link chain qemu checks and reads, the parent's
      // bytes under the child's write.
      let parent = "\(folder)/parent.vmdk"
      try Qemu.create(parent, size: 4 << 20)
      try Qemu.io(parent, ["write -P 0x66 0 2M"])
      let child = "\(folder)/made-child.vmdk"
      try runChecked(check, ["child", parent, child])
      try runChecked(check, ["write", child, "1024", "8", "119"])  // 4 KiB of 0x77 at 512 KiB
      try Qemu.img("check", child)
      let info = try Qemu.img("info", child).output
      #expect(info.contains("backing file: "), "\(info)")
      let bytes = try Self.qemuBytes(child, scratch: folder)
      #expect(bytes.count == 4 << 20)
      #expect(bytes[0..<(512 << 10)].allSatisfy { $0 == 0x66 })
      #expect(bytes[(512 << 10)..<((512 << 10) + 4096)].allSatisfy { $0 == 0x77 })
      #expect(bytes[((512 << 10) + 4096)..<(2 << 20)].allSatisfy { $0 == 0x66 })
      #expect(bytes[(2 << 20)...].allSatisfy { $0 == 0 })
      // The parent is untouched.
      let parentBytes = try Self.qemuBytes(parent, scratch: folder)
      #expect(parentBytes[0..<(2 << 20)].allSatisfy { $0 == 0x66 } && parentBytes[(2 << 20)...].allSatisfy { $0 == 0 })
    }
  }

  @Test func cidMismatchIs16008() throws {
    try withTemporaryFolder { folder in
      let check = try VixCTests.compile("vixcheck", into: folder)
      let base = "\(folder)/base.vmdk"
      let child = "\(folder)/child.vmdk"
      try Qemu.create(base, size: 1 << 20)
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", child)
      // Before: the chain opens.
      #expect(VixCTests.lines(try runChecked(check, ["open", child, "4"]))["code"] == "0")
      guard let cid = try descriptorValue("CID", inFile: base),
        try descriptorValue("parentCID", inFile: child) == cid
      else { throw ToolFailure("qemu's child does not name its base's CID") }
      // Another CID of the same length (the patch is in place): the last digit changed.
      let other = String(cid.dropLast()) + (cid.hasSuffix("0") ? "1" : "0")
      try patchFile(child, replacing: "parentCID=\(cid)", with: "parentCID=\(other)")
      for flags in ["4", "0"] {
        let r = VixCTests.lines(try runChecked(check, ["open", child, flags]))
        #expect(r["code"] == "16008", "flags \(flags): \(r)")
        #expect(r["text"]?.contains("child.vmdk") == true, "\(r)")
      }
    }
  }

  @Test func logCallbacksKeepStderrEmpty() throws {
    try withTemporaryFolder { folder in
      let check = try VixCTests.compile("vixcheck", into: folder)
      let disk = "\(folder)/d.vmdk"
      try Qemu.create(disk, size: 1 << 20)
      let config = "\(folder)/vddk.conf"
      try "tmpDirectory = \(folder)\nvixDiskLib.transport.LogLevel = 4\nvixDiskLib.no.such.Key = 1\n".write(
        toFile: config, atomically: true, encoding: .utf8)
      let r = try runChecked(check, ["log", config, disk])
      #expect(r.stderr.isEmpty, "with callbacks, stderr got: \(r.errorOutput)")
      let out = VixCTests.lines(r)
      #expect(out["open"] == "0")
      #expect((Int(out["logLines"] ?? "") ?? 0) >= 2, "\(r.output)")
      #expect(out["warnLines"] == "1", "\(r.output)")
      #expect(r.output.contains("log: VixDiskLib: opened \(disk)"), "\(r.output)")
      #expect(r.output.contains("warn: VixDiskLib: ") && r.output.contains("vixDiskLib.no.such.Key"), "\(r.output)")
      // Without callbacks the lines go to vixDiskLib.log in tmpDirectory, never to the terminal:
      // VixConfigTests.withoutCallbacksLinesGoToTmpDirectoryNotTheTerminal shows that.
    }
  }
}
