// Hostile descriptors and chains: paths that leave the descriptor's folder, missing or wrong
// extent files, oversized or broken descriptor text, chains that loop. Also the extent kinds
// that open but read differently (RDM, NOACCESS, RDONLY, ZERO) and raw files.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

/// A folder laid out by `setUp` (which returns the path to open), and the error that opening
/// and reading it must give.
struct FolderCase: Sendable, CustomTestStringConvertible {
  let name: String
  let code: VMDKError.Code
  /// Last path component of the file the error must name.
  let file: String
  var options = OpenOptions()
  let setUp: @Sendable (TempFolder) throws -> String
  var testDescription: String { name }
}

/// Content for flat extents: `sectors` of the pattern.
func flat(_ sectors: UInt64, seed: UInt8 = 9) -> [UInt8] {
  Pattern.bytes(startingAt: 0, count: Int(sectors * 512), seed: seed)
}

/// A flat descriptor named `name` whose one extent line is `extent`.
@discardableResult
func flatDescriptor(_ folder: TempFolder, _ name: String, extent: String, sectors: UInt64 = 8) throws -> String {
  try folder.write(
    name, text: descriptorText(createType: "monolithicFlat", extents: ["RW \(sectors) FLAT \"\(extent)\" 0"]))
}

/// Descriptors whose extent (or parent) leaves the descriptor's folder, each with the content
/// it reads when external paths are allowed. The descriptor is in `inner/`, the target
/// outside it.
enum Escapes {
  static let content = flat(8)

  static let cases: [Named<@Sendable (TempFolder) throws -> String>] = [
    Named("an extent in ../") { folder in
      try folder.write("outside-flat.vmdk", content)
      return try flatDescriptor(folder, "inner/disk.vmdk", extent: "../outside-flat.vmdk")
    },
    Named("an absolute extent path") { folder in
      let target = try folder.write("elsewhere/flat.bin", content)
      return try flatDescriptor(folder, "inner/disk.vmdk", extent: target)
    },
    Named("a symlink in the folder pointing out of it") { folder in
      let target = try folder.write("elsewhere/flat.bin", content)
      try folder.write("inner/placeholder", [])
      try folder.symlink("inner/disk-flat.vmdk", to: target)
      return try flatDescriptor(folder, "inner/disk.vmdk", extent: "disk-flat.vmdk")
    },
    Named("a parent in ../") { folder in
      try folder.write("parent-flat.vmdk", content)
      try folder.write(
        "parent.vmdk",
        text: descriptorText(
          createType: "monolithicFlat", cid: "0000000a", extents: [#"RW 8 FLAT "parent-flat.vmdk" 0"#]))
      // The child is a sparse image with nothing allocated, so every read goes to the parent.
      var child = SparseImage(capacitySectors: 8, grainSectors: 8)
      child.descriptor = descriptorText(
        createType: "monolithicSparse", parentCID: "0000000a", parentHint: "../parent.vmdk",
        extents: [#"RW 8 SPARSE "child.vmdk""#])
      return try folder.write("inner/child.vmdk", child.build().bytes)
    },
  ]
}

@Suite(.timeLimit(.minutes(20))) struct PathTests {
  /// Refused by default: the error names the descriptor that holds the name.
  @Test(arguments: Escapes.cases)
  func refusedByDefault(_ escape: Named<@Sendable (TempFolder) throws -> String>) throws {
    let folder = try TempFolder()
    let path = try escape.value(folder)
    let e = expectVMDKError(.pathOutsideFolder, opening: path)
    #expect(e?.file == path)
  }

  /// `allowExternalPaths` is the caller saying the descriptor is trusted: the same files open
  /// and read the outside content.
  @Test(arguments: Escapes.cases)
  func allowedWhenAsked(_ escape: Named<@Sendable (TempFolder) throws -> String>) throws {
    let folder = try TempFolder()
    let path = try escape.value(folder)
    var options = OpenOptions()
    options.allowExternalPaths = true
    var expected = ExpectedDisk(sectors: 8)
    expected.place(Escapes.content, at: 0)
    try expectReads(path, as: expected, options: options)
  }

  /// A name that stays inside through `..` (`sub/../x`) is not an escape.
  @Test func dotDotThatStaysInside() throws {
    let folder = try TempFolder()
    try folder.write("inner/sub/placeholder", [])
    try folder.write("inner/disk-flat.vmdk", flat(8))
    let path = try flatDescriptor(folder, "inner/disk.vmdk", extent: "sub/../disk-flat.vmdk")
    var expected = ExpectedDisk(sectors: 8)
    expected.place(flat(8), at: 0)
    try expectReads(path, as: expected)
  }
}

@Suite(.timeLimit(.minutes(20))) struct HostileDescriptorTests {
  static let cases: [FolderCase] = [
    FolderCase(name: "a missing extent", code: .fileNotFound, file: "missing-flat.vmdk") { folder in
      try flatDescriptor(folder, "disk.vmdk", extent: "missing-flat.vmdk")
    },
    FolderCase(name: "an extent that is a folder", code: .fileAccess, file: "sub") { folder in
      try folder.write("sub/placeholder", [])
      return try flatDescriptor(folder, "disk.vmdk", extent: "sub")
    },
    FolderCase(name: "a SPARSE extent that is the descriptor itself", code: .badMagic, file: "disk.vmdk") { folder in
      try folder.write(
        "disk.vmdk", text: descriptorText(createType: "twoGbMaxExtentSparse", extents: [#"RW 8 SPARSE "disk.vmdk""#]))
    },
    FolderCase(name: "a VMFSSPARSE extent of zeros", code: .badMagic, file: "zeros-delta.vmdk") { folder in
      try folder.write("zeros-delta.vmdk", [UInt8](repeating: 0, count: 4096))
      return try folder.write(
        "disk.vmdk", text: descriptorText(createType: "vmfsSparse", extents: [#"RW 8 VMFSSPARSE "zeros-delta.vmdk""#]))
    },
    FolderCase(name: "a descriptor file over 1 MiB", code: .descriptorTooLarge, file: "disk.vmdk") { folder in
      let text = descriptorText(createType: "monolithicFlat", extents: [#"RW 8 FLAT "f.bin" 0"#])
      let comment = "# " + String(repeating: "x", count: 1000) + "\n"
      return try folder.write("disk.vmdk", text: text + String(repeating: comment, count: 1100))
    },
    FolderCase(name: "a descriptor of garbage", code: .invalidDescriptor, file: "disk.vmdk") { folder in
      try folder.write("disk.vmdk", Array("# Disk DescriptorFile\nversion=1\n".utf8) + [0x01, 0xFE, 0x80, 0x0A, 0x7F])
    },
    FolderCase(name: "a descriptor without createType", code: .invalidDescriptor, file: "disk.vmdk") { folder in
      try folder.write("disk.vmdk", text: "# Disk DescriptorFile\nversion=1\nCID=1\n\nRW 8 ZERO\n")
    },
    FolderCase(name: "a descriptor without extents", code: .invalidDescriptor, file: "disk.vmdk") { folder in
      try folder.write("disk.vmdk", text: descriptorText(createType: "monolithicFlat", extents: []))
    },
    FolderCase(name: "extent sectors over the cap", code: .capacityOverflow, file: "disk.vmdk") { folder in
      try folder.write("disk.vmdk", text: descriptorText(createType: "custom", extents: ["RW 18014398509481984 ZERO"]))
    },
    FolderCase(name: "extent sectors over 64 bits", code: .capacityOverflow, file: "disk.vmdk") { folder in
      try folder.write(
        "disk.vmdk", text: descriptorText(createType: "custom", extents: ["RW 99999999999999999999 ZERO"]))
    },
    FolderCase(name: "extents adding up past the cap", code: .capacityOverflow, file: "disk.vmdk") { folder in
      let line = "RW \(Limits.maxCapacitySectors) ZERO"
      return try folder.write("disk.vmdk", text: descriptorText(createType: "custom", extents: [line, line]))
    },
    FolderCase(name: "a chain loop A -> B -> A", code: .chainLoop, file: "b.vmdk") { folder in
      try ChainFiles.link(folder, "b.vmdk", cid: "0000000b", parentCID: "0000000a", parent: "a.vmdk")
      return try ChainFiles.link(folder, "a.vmdk", cid: "0000000a", parentCID: "0000000b", parent: "b.vmdk")
    },
    FolderCase(name: "a link that is its own parent", code: .chainLoop, file: "a.vmdk") { folder in
      try ChainFiles.link(folder, "a.vmdk", cid: "0000000a", parentCID: "0000000a", parent: "a.vmdk")
    },
    FolderCase(name: "a loop through a symlink", code: .chainLoop, file: "b.vmdk") { folder in
      try ChainFiles.link(folder, "b.vmdk", cid: "0000000b", parentCID: "0000000a", parent: "alias.vmdk")
      try folder.symlink("alias.vmdk", to: folder.path("a.vmdk"))
      return try ChainFiles.link(folder, "a.vmdk", cid: "0000000a", parentCID: "0000000b", parent: "b.vmdk")
    },
    FolderCase(name: "a missing parent", code: .partialChain, file: "gone.vmdk") { folder in
      try ChainFiles.link(folder, "a.vmdk", cid: "0000000a", parentCID: "0000000b", parent: "gone.vmdk")
    },
    FolderCase(name: "a parent whose CID changed", code: .cidMismatch, file: "a.vmdk") { folder in
      try ChainFiles.link(folder, "b.vmdk", cid: "0000000c", parentCID: "ffffffff", parent: nil)
      return try ChainFiles.link(folder, "a.vmdk", cid: "0000000a", parentCID: "0000000b", parent: "b.vmdk")
    },
    FolderCase(name: "a snapshot that names no parent", code: .partialChain, file: "a.vmdk") { folder in
      try folder.write("a-delta.vmdk", COWDImage(capacitySectors: 8).build().bytes)
      return try folder.write(
        "a.vmdk",
        text: descriptorText(
          createType: "vmfsSparse", parentCID: "0000000b", extents: [#"RW 8 VMFSSPARSE "a-delta.vmdk""#]))
    },
    FolderCase(
      name: "a chain deeper than the cap", code: .chainTooDeep, file: "a.vmdk", options: .maxChainDepth(2)
    ) { folder in
      try ChainFiles.link(folder, "c.vmdk", cid: "0000000c", parentCID: "ffffffff", parent: nil)
      try ChainFiles.link(folder, "b.vmdk", cid: "0000000b", parentCID: "0000000c", parent: "c.vmdk")
      return try ChainFiles.link(folder, "a.vmdk", cid: "0000000a", parentCID: "0000000b", parent: "b.vmdk")
    },
  ]

  @Test(arguments: cases)
  func rejects(_ c: FolderCase) throws {
    let folder = try TempFolder()
    let path = try c.setUp(folder)
    expectVMDKError(c.code, opening: path, options: c.options, file: c.file)
  }

  /// The descriptor cap holds for the file as a whole, before anything is parsed.
  @Test func oversizedDescriptorFailsAtOffsetZero() throws {
    let folder = try TempFolder()
    let path = try folder.write(
      "disk.vmdk", Array("# Disk DescriptorFile\n".utf8) + [UInt8](repeating: 0x23, count: 2 << 20))
    expectVMDKError(.descriptorTooLarge, opening: path, file: "disk.vmdk", offset: 0)
  }
}

extension OpenOptions {
  static func maxChainDepth(_ n: Int) -> OpenOptions {
    var o = OpenOptions()
    o.maxChainDepth = n
    return o
  }
}

/// Descriptor links for chain tests: a flat extent each, with the given identity and parent.
enum ChainFiles {
  @discardableResult
  static func link(_ folder: TempFolder, _ name: String, cid: String, parentCID: String, parent: String?) throws
    -> String
  {
    let extent = name.replacingOccurrences(of: ".vmdk", with: "-flat.vmdk")
    try folder.write(extent, flat(8))
    return try folder.write(
      name,
      text: descriptorText(
        createType: "monolithicFlat", cid: cid, parentCID: parentCID, parentHint: parent,
        extents: ["RW 8 FLAT \"\(extent)\" 0"]))
  }
}

@Suite(.timeLimit(.minutes(20))) struct SpecialExtentTests {
  /// A virtual RDM opens (its descriptor is all there is to copy) and says what it is;
  /// reading it needs the device, which a backup does not have.
  @Test func rawDeviceMapping() throws {
    let folder = try TempFolder()
    let path = try folder.write(
      "rdm.vmdk", text: descriptorText(createType: "vmfsRawDeviceMap", extents: [#"RW 2048 VMFSRDM "rdm-rdm.vmdk""#]))
    let disk = try Disk.open(path)
    #expect(disk.top.createType == "vmfsRawDeviceMap")
    #expect(disk.top.extents.map(\.format.rawValue) == ["device"])
    #expect(disk.capacityBytes == 2048 * 512)
    let e = expectVMDKError(.needsDevice, opening: path, file: "rdm.vmdk")
    #expect(e?.message.contains("rdm-rdm.vmdk") == true)
  }

  @Test func noAccessExtentOpensButDoesNotRead() throws {
    let folder = try TempFolder()
    try folder.write("a-flat.vmdk", flat(8))
    let path = try folder.write(
      "disk.vmdk",
      text: descriptorText(
        createType: "monolithicFlat", extents: [#"RW 8 FLAT "a-flat.vmdk" 0"#, #"NOACCESS 8 FLAT "b-flat.vmdk" 0"#]))
    let disk = try Disk.open(path)
    #expect(disk.top.extents.map(\.format.rawValue) == ["flat", "noaccess"])
    // The readable extent still reads; the NOACCESS one refuses.
    #expect(try disk.read(at: 0, count: 4096) == flat(8))
    expectVMDKError(.extentNoAccess, opening: path, file: "disk.vmdk")
  }

  /// RDONLY (VMware's stream exports say it) reads like RW, and ZERO extents read zeros
  /// between the others, with an offset into the flat file honoured.
  @Test func readOnlyAndZeroExtents() throws {
    let folder = try TempFolder()
    let data = flat(24)
    try folder.write("a-flat.vmdk", data)
    let path = try folder.write(
      "disk.vmdk",
      text: descriptorText(
        createType: "custom",
        extents: [#"RDONLY 8 FLAT "a-flat.vmdk" 0"#, "RW 16 ZERO", #"RW 8 FLAT "a-flat.vmdk" 16"#, "NOACCESS 0 ZERO"]))
    var expected = ExpectedDisk(sectors: 32)
    expected.place(Array(data[0..<4096]), at: 0)
    expected.place(Array(data[(16 * 512)...]), at: 24 * 512)
    try expectReads(path, as: expected)
    #expect(try Disk.open(path).blockStatus().contains { $0.kind == .zero && $0.start == 4096 && $0.length == 8192 })
  }

  /// A file with no VMDK signature and no descriptor text is a raw image, byte for byte.
  @Test(arguments: [UInt8(0), 0x4B, 0xFF])
  func rawFile(firstByte: UInt8) throws {
    let folder = try TempFolder()
    var data = flat(16)
    data[0] = firstByte
    let path = try folder.write("disk.img", data)
    let disk = try Disk.open(path)
    #expect(disk.top.kind == .raw)
    var expected = ExpectedDisk(sectors: 16)
    expected.place(data, at: 0)
    try expectReads(path, as: expected)
  }

  /// A CRLF descriptor is a descriptor: Swift's "\r\n" Character once hid every line of it.
  @Test func crlfDescriptor() throws {
    let folder = try TempFolder()
    try folder.write("a-flat.vmdk", flat(8))
    let text = descriptorText(createType: "monolithicFlat", extents: [#"RW 8 FLAT "a-flat.vmdk" 0"#])
    let path = try folder.write("disk.vmdk", text: text.replacingOccurrences(of: "\n", with: "\r\n"))
    let disk = try Disk.open(path)
    #expect(disk.top.kind == .vmdk)
    #expect(disk.top.createType == "monolithicFlat")
    #expect(try disk.read(at: 0, count: 4096) == flat(8))
  }
}
