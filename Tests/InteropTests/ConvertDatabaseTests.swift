// vmdk-convert and snapshots keep the source's disk database (CreateOptions(inheriting:)):
// every ddb key, unknown ones included and in the source's order, with only longContentID
// new. The sources here differ from our defaults in every key, so a writer that falls back
// to its defaults fails. Also: values that cannot be written are typed errors, never traps.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

/// A monolithicFlat source of 1 MiB written by hand, whose disk database differs from
/// CreateOptions' defaults in every key and holds keys we do not know.
func makeForeignSource(
  _ folder: String, adapter: String = "buslogic", hardwareVersion: String = "11", extraEntries: [String] = []
) throws -> String {
  let path = "\(folder)/foreign.vmdk"
  var flat = [UInt8](repeating: 0, count: 1 << 20)
  for i in stride(from: 0, to: flat.count, by: 4096) { flat[i] = UInt8(truncatingIfNeeded: i >> 12) | 1 }
  try Data(flat).write(to: URL(fileURLWithPath: "\(folder)/foreign-flat.vmdk"))
  var text = """
    # Disk DescriptorFile
    version=1
    encoding="UTF-8"
    CID=1234abcd
    parentCID=ffffffff
    createType="monolithicFlat"

    # Extent description
    RW 2048 FLAT "foreign-flat.vmdk" 0

    # The Disk Data Base
    #DDB

    ddb.custom.x = "kept as it is"
    ddb.virtualHWVersion = "\(hardwareVersion)"
    ddb.adapterType = "\(adapter)"
    ddb.uuid = "60 00 C2 91 22 33 44 55-66 77 88 99 aa bb cc dd"
    ddb.geometry.cylinders = "2"
    ddb.geometry.heads = "64"
    ddb.geometry.sectors = "32"
    ddb.longContentID = "0123456789abcdef0123456789abcdef"
    ddb.toolsVersion = "10346"
    ddb.toolsInstallType = "1"
    ddb.thinProvisioned = "1"
    ddb.deletable = "true"

    """
  for line in extraEntries { text += line + "\n" }
  try Data(text.utf8).write(to: URL(fileURLWithPath: path))
  return path
}

/// The keys a reader needs, added to a kept database only when the source lacks them.
private let requiredKeys: Set<String> = [
  "ddb.adaptertype", "ddb.geometry.cylinders", "ddb.geometry.heads", "ddb.geometry.sectors",
  "ddb.virtualhwversion", "ddb.longcontentid",
]

/// `output` keeps `source`: the same keys in the same order, the same values, except a new
/// longContentID; keys the source lacks only among the required ones, at the end.
func expectKept(
  _ source: [(key: String, value: String)], _ output: [(key: String, value: String)], _ what: String,
  sourceLocation: SourceLocation = #_sourceLocation
) {
  let sourceKeys = Set(source.map { $0.key.lowercased() })
  let added = output.filter { !sourceKeys.contains($0.key.lowercased()) }
  #expect(
    added.allSatisfy { requiredKeys.contains($0.key.lowercased()) }, "\(what): keys added: \(added.map(\.key))",
    sourceLocation: sourceLocation)
  let kept = output.filter { sourceKeys.contains($0.key.lowercased()) }
  #expect(
    kept.map(\.key) == source.map(\.key), "\(what): keys \(kept.map(\.key)) != source's \(source.map(\.key))",
    sourceLocation: sourceLocation)
  for (s, o) in zip(source, kept) {
    if s.key.lowercased() == "ddb.longcontentid" {
      #expect(s.value != o.value, "\(what): longContentID must be new", sourceLocation: sourceLocation)
    } else {
      #expect(
        s.value == o.value, "\(what): \(s.key) = \(o.value), the source's \(s.value)", sourceLocation: sourceLocation)
    }
  }
  if !sourceKeys.isEmpty {
    #expect(
      output.contains { $0.key.lowercased() == "ddb.longcontentid" }, "\(what): a longContentID",
      sourceLocation: sourceLocation)
  }
}

/// The disk database of the image at `path` as its own descriptor says (embedded or not).
func descriptorDatabase(_ path: String) throws -> [(key: String, value: String)] {
  try Disk.open(path).top.descriptor.diskDatabase
}

/// qemu-img info and vmdkinfo both open the output.
func expectOthersOpen(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
  let info = try runProcess(try requireTool("qemu-img"), ["info", path])
  #expect(info.status == 0, "qemu-img info \(path): \(info.errorOutput)", sourceLocation: sourceLocation)
  let vmdkinfo = try runProcess(try requireTool("vmdkinfo"), [path])
  #expect(vmdkinfo.status == 0, "vmdkinfo \(path): \(vmdkinfo.output)", sourceLocation: sourceLocation)
}

@Suite struct ConvertDatabaseTests {
  static let outputTypes: [DiskType] = [
    .monolithicSparse, .twoGbMaxExtentSparse, .streamOptimized, .monolithicFlat, .twoGbMaxExtentFlat,
  ]

  /// A source whose every key differs from the defaults (buslogic / HW 11, and ide / HW 7):
  /// each output type's database is the source's, key for key, but for longContentID.
  @Test(arguments: outputTypes, [("buslogic", "11"), ("ide", "7")])
  func foreignDatabaseIsKept(type: DiskType, source: (adapter: String, hw: String)) throws {
    try withTemporaryFolder { folder in
      let src = try makeForeignSource(
        folder, adapter: source.adapter, hardwareVersion: source.hw)
      let dst = "\(folder)/out.vmdk"
      try Convert.checked([src, dst, "--type", type.rawValue, "-q"])
      let want = try descriptorDatabase(src)
      let got = try descriptorDatabase(dst)
      expectKept(want, got, "\(type)")
      #expect(got.count == want.count, "no key added: \(got.map(\.key))")
      // An independent reading of the written text: the adapter qemu and VMware see.
      let descriptorFile = dst
      #expect(try descriptorValue("ddb.adapterType", inFile: descriptorFile) == source.adapter)
      #expect(try descriptorValue("ddb.virtualHWVersion", inFile: descriptorFile) == source.hw)
      #expect(try descriptorValue("adapterType", inFile: descriptorFile) == nil, "no stray un-prefixed line")
      try expectOthersOpen(dst)
    }
  }

  /// The options override what they name, and only that; a new adapter without a geometry
  /// of its own gets VMware's geometry for it.
  @Test func optionsOverrideOnlyWhatTheyName() throws {
    try withTemporaryFolder { folder in
      let src = try makeForeignSource(folder)
      let dst = "\(folder)/out.vmdk"
      let uuid = "60 00 c2 9a 01 02 03 04-05 06 07 08 09 0a 0b 0c"
      try Convert.checked([src, dst, "-q", "--adapter-type", "ide", "--hardware-version", "13", "--uuid", uuid])
      let got = try descriptorDatabase(dst)
      func value(_ k: String) -> String? { got.first { $0.key == k }?.value }
      #expect(value("ddb.adapterType") == "ide")
      #expect(value("ddb.virtualHWVersion") == "13")
      #expect(value("ddb.uuid") == uuid)
      #expect(value("ddb.geometry.heads") == "16" && value("ddb.geometry.sectors") == "63", "IDE geometry")
      #expect(value("ddb.custom.x") == "kept as it is")
      #expect(value("ddb.toolsVersion") == "10346")
      #expect(got.map(\.key) == (try descriptorDatabase(src)).map(\.key), "same keys, same order")
    }
  }

  /// Every image of TestImages that opens: the output keeps its database.
  @Test(arguments: try CorpusEntry.load().filter { $0.expectError == nil })
  func testImagesKeepTheirDatabase(entry: CorpusEntry) throws {
    try withTemporaryFolder { folder in
      let image = try CorpusTests.prepare(entry, in: folder)
      let dst = "\(folder)/converted.vmdk"
      try Convert.checked([image, dst, "-q"])
      let source = try Disk.open(image)
      // A chain is read as VMware reads it (each key from the lowest link that has it); a
      // single descriptor as its own text says. A copy has no parent: ddb.uuid.parent* goes.
      let want: [(key: String, value: String)] =
        source.links.count > 1 || !source.top.hasDescriptor
        ? source.diskDatabase.map { (key: "ddb." + $0.key, value: $0.value) }
        : source.top.descriptor.diskDatabase
      let expected = want.filter { !$0.key.lowercased().hasPrefix("ddb.uuid.parent") }
      // No database (a bare COWD file): the output gets a new one, VMware's defaults.
      if !expected.isEmpty { expectKept(expected, try descriptorDatabase(dst), entry.image) }
      try expectOthersOpen(dst)
    }
  }

  /// qemu-made sources of each adapter type: the adapter (and the rest) survive.
  @Test(arguments: ["ide", "buslogic", "lsilogic", "legacyESX"], [DiskType.monolithicSparse, .monolithicFlat])
  func qemuAdapterTypesAreKept(adapter: String, type: DiskType) throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: 8 << 20, options: ["adapter_type=\(adapter)", "hwversion=6"])
      try Qemu.io(src, ["write -P 0x5a 1M 64k"])
      let dst = "\(folder)/out.vmdk"
      try Convert.checked([src, dst, "--type", type.rawValue, "-q"])
      expectKept(try descriptorDatabase(src), try descriptorDatabase(dst), "\(adapter) \(type)")
      #expect(try descriptorValue("ddb.adapterType", inFile: dst) == adapter)
      #expect(try descriptorValue("ddb.virtualHWVersion", inFile: dst) == "6")
      #expect(try Qemu.rawSHA256(dst, scratch: folder) == Qemu.rawSHA256(src, scratch: folder))
      try expectOthersOpen(dst)
    }
  }

  /// A snapshot keeps the parent's database but for its identity: a new uuid, no
  /// deletable, a new longContentID; adapter type, hardware version, unknown keys kept.
  @Test func snapshotKeepsTheParentsDatabase() throws {
    try withTemporaryFolder { folder in
      let src = try makeForeignSource(folder)
      let child = "\(folder)/child.vmdk"
      try Disk.createSnapshot(of: src, at: child)
      let parentDB = try descriptorDatabase(src)
      let got = try Disk.open(child).top.descriptor.diskDatabase
      func value(_ k: String) -> String? { got.first { $0.key == k }?.value }
      #expect(value("ddb.adapterType") == "buslogic")
      #expect(value("ddb.virtualHWVersion") == "11")
      #expect(value("ddb.geometry.heads") == "64")
      #expect(value("ddb.custom.x") == "kept as it is")
      #expect(value("ddb.toolsVersion") == "10346")
      #expect(value("ddb.deletable") == nil)
      #expect(value("ddb.uuid") != nil && value("ddb.uuid") != parentDB.first { $0.key == "ddb.uuid" }?.value)
      #expect(value("ddb.longContentID") != "0123456789abcdef0123456789abcdef")
      try expectOthersOpen(child)
    }
  }
}

/// Values that cannot be written end in exit 1 and one line, never in a trap (issue 10.2).
@Suite struct NoTrapToolTests {
  /// A monolithicFlat source whose descriptor is just under the 1 MiB cap: the new
  /// descriptor would pass it. vmdk-convert says so and leaves nothing.
  @Test(arguments: [DiskType.monolithicSparse, .monolithicFlat, .streamOptimized])
  func descriptorJustUnderTheCap(type: DiskType) throws {
    try withTemporaryFolder { folder in
      // Compact lines (`key="value"`): ours have spaces round the `=`, so the new text is
      // about 2 KiB longer than the source's.
      let base = try Data(contentsOf: URL(fileURLWithPath: try makeForeignSource(folder))).count
      let length = ((1 << 20) - 200 - base) / 1000 - 20
      let value = String(repeating: "v", count: length)
      let src = try makeForeignSource(
        folder, extraEntries: (0..<1000).map { "ddb.custom.f\(1000 + $0)=\"\(value)\"" })
      let size = try FileManager.default.attributesOfItem(atPath: src)[.size] as? Int ?? 0
      #expect(size < 1 << 20 && size > (1 << 20) - 8192, "the source's descriptor is \(size) bytes")
      _ = try Disk.open(src)
      let r = try Convert.run([src, "\(folder)/out.vmdk", "--type", type.rawValue, "-q"])
      #expect(r.status == 1, "status \(r.status): \(r.errorOutput)")
      #expect(r.errorOutput.hasPrefix("vmdk-convert: ") && r.errorOutput.contains("descriptor"), "\(r.errorOutput)")
      #expect(try leftovers(folder, keeping: ["foreign.vmdk", "foreign-flat.vmdk"]).isEmpty)
    }
  }

  /// Values with a line end or a quote, and hardware versions that are not numbers: exit 1
  /// naming the value, nothing created.
  @Test(arguments: ["4\nbogus", "4\"", "seven", "", "4\u{7}"])
  func badHardwareVersion(value: String) throws {
    try withTemporaryFolder { folder in
      let disk = try builtToolPath("vmdk-disk")
      let r = try runProcess(disk, ["create", "\(folder)/new.vmdk", "--capacity", "1M", "--hardware-version", value])
      #expect(r.status == 1, "status \(r.status): \(r.errorOutput)")
      #expect(r.errorOutput.contains("hardware version"), "\(r.errorOutput)")
      #expect(try leftovers(folder, keeping: []).isEmpty)
      let src = try makeForeignSource(folder)
      let c = try Convert.run([src, "\(folder)/out.vmdk", "-q", "--hardware-version", value])
      #expect(c.status == 1, "status \(c.status): \(c.errorOutput)")
      #expect(c.errorOutput.contains("hardware version"), "\(c.errorOutput)")
      #expect(try leftovers(folder, keeping: ["foreign.vmdk", "foreign-flat.vmdk"]).isEmpty)
    }
  }
}

/// File names a descriptor cannot hold (a quote, a line end): refused before anything is
/// made or renamed.
@Suite struct DescriptorNameTests {
  @Test(arguments: ["b\n.vmdk", "b\".vmdk", "b\u{1}.vmdk"])
  func refusedNames(name: String) throws {
    try withTemporaryFolder { folder in
      let disk = try builtToolPath("vmdk-disk")
      let create = try runProcess(
        disk, ["create", "\(folder)/\(name)", "--capacity", "1M", "--type", "twoGbMaxExtentSparse"])
      #expect(create.status == 1 && create.errorOutput.contains("file name"), "\(create.errorOutput)")
      #expect(try leftovers(folder, keeping: []).isEmpty)
      _ = try runChecked(disk, ["create", "\(folder)/a.vmdk", "--capacity", "1M", "--type", "twoGbMaxExtentSparse"])
      let before = try leftovers(folder, keeping: [])
      let rename = try runProcess(disk, ["rename", "\(folder)/a.vmdk", "\(folder)/\(name)"])
      #expect(rename.status == 1 && rename.errorOutput.contains("file name"), "\(rename.errorOutput)")
      #expect(try leftovers(folder, keeping: []) == before)
      let snapshot = try runProcess(disk, ["snapshot", "\(folder)/a.vmdk", "\(folder)/\(name)"])
      #expect(snapshot.status == 1 && snapshot.errorOutput.contains("file name"), "\(snapshot.errorOutput)")
      #expect(try leftovers(folder, keeping: []) == before)
      let convert = try Convert.run(["\(folder)/a.vmdk", "\(folder)/\(name)", "-q"])
      #expect(convert.status == 1 && convert.errorOutput.contains("file name"), "\(convert.errorOutput)")
      #expect(try leftovers(folder, keeping: []) == before)
    }
  }
}
