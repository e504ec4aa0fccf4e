// The text descriptor: what real writers produce must parse and serialise back byte for byte
// (comments, unknown keys, order, line ends), and what a hostile one holds must be a typed
// error, not a guess.

import Foundation
import Testing
import VMDKFormat

/// Descriptors as real writers produce them, each a byte-exact round-trip case.
enum SampleDescriptors {
  /// VMware style: `encoding`, trailing spaces (on `version`, the stream `createType` and the
  /// DDB heading), an unknown header key, comments between sections, quoted names with spaces.
  static let vmware = """
    # Disk DescriptorFile
    version=1 \n\
    encoding="UTF-8"
    CID=bb17cc39 \n\
    parentCID=ffffffff
    isNativeSnapshot="no"
    createType="twoGbMaxExtentSparse" \n\
    vendorKey=kept as found

    # Extent description
    RW 4192256 SPARSE "My Disk-s001.vmdk"
    RDONLY 8192 SPARSE "My Disk-s002.vmdk"
    # a comment between extents
    RW 2048 ZERO

    # The Disk Data Base \n\
    #DDB

    ddb.adapterType = "lsilogic"
    ddb.geometry.cylinders = "261"
    ddb.geometry.heads = "255"
    ddb.geometry.sectors = "63"
    ddb.longContentID = "1c0a1f4d4fa0c1f9d4a8c8a5bb17cc39"
    ddb.uuid = "60 00 C2 9b 69 2f c9 76-74 c4 07 9e 10 87 3b 9e"
    ddb.virtualHWVersion = "14"
    ddb.zzUnknown = "kept in place"

    """

  /// qemu-img 7.2's template (notes §7.2): unpadded CID, a parent hint with no blank line.
  static let qemuChild = """
    # Disk DescriptorFile
    version=1
    CID=a57a1cf
    parentCID=216bc064
    createType="monolithicSparse"
    parentFileNameHint="base.vmdk"
    # Extent description
    RW 2097152 SPARSE "child.vmdk"

    # The Disk Data Base
    #DDB

    ddb.virtualHWVersion = "4"
    ddb.geometry.cylinders = "2080"
    ddb.geometry.heads = "16"
    ddb.geometry.sectors = "63"
    ddb.adapterType = "ide"
    ddb.toolsVersion = "2147483647"

    """

  /// open-vmdk writes no final newline.
  static let noFinalNewline = """
    # Disk DescriptorFile
    version=1
    CID=00000001
    parentCID=ffffffff
    createType="streamOptimized"

    # Extent description
    RW 128 SPARSE "disk"

    # The Disk Data Base
    #DDB

    ddb.toolsInstallType = "4"
    """

  static var crlf: String { vmware.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n") }
}

@Suite struct DescriptorRoundTripTests {
  @Test(arguments: [
    Named("VMware", SampleDescriptors.vmware), Named("qemu child", SampleDescriptors.qemuChild),
    Named("no final newline", SampleDescriptors.noFinalNewline), Named("CRLF", SampleDescriptors.crlf),
  ])
  func serializesByteForByte(_ text: Named<String>) throws {
    let d = try Descriptor(parsing: bytes(text.value))
    #expect(Array(d.serialized().utf8) == bytes(text.value))
  }

  /// CRLF must not only round-trip but parse: Swift reads "\r\n" as one Character, which once
  /// made a CRLF descriptor a single comment line.
  @Test func crlfParsesLikeLF() throws {
    let lf = try Descriptor(parsing: bytes(SampleDescriptors.vmware))
    let crlf = try Descriptor(parsing: bytes(SampleDescriptors.crlf))
    #expect(crlf.lineEnding == "\r\n")
    #expect(lf.lineEnding == "\n")
    #expect(crlf.lines.count == lf.lines.count)
    #expect(crlf.createType == "twoGbMaxExtentSparse")
    #expect(crlf.extents == lf.extents)
    #expect(crlf.diskDatabase.map(\.value) == lf.diskDatabase.map(\.value))
    #expect(Descriptor.looksLikeDescriptor(bytes(SampleDescriptors.crlf)))
  }

  /// Comments, blanks, unknown keys and DDB entries stay where they were, in order.
  @Test func keepsEveryLineInOrder() throws {
    let d = try Descriptor(parsing: bytes(SampleDescriptors.vmware))
    let kinds = d.lines.map { line -> String in
      switch line {
      case .blank: "blank"
      case .comment: "comment"
      case .header(let k, _, _): "header \(k)"
      case .extent(let e, _): "extent \(e.kind.rawValue)"
      case .ddb(let k, _, _): k
      }
    }
    #expect(
      kinds == [
        "comment", "header version", "header encoding", "header CID", "header parentCID", "header isNativeSnapshot",
        "header createType", "header vendorKey", "blank", "comment", "extent SPARSE", "extent SPARSE", "comment",
        "extent ZERO", "blank", "comment", "comment", "blank", "ddb.adapterType", "ddb.geometry.cylinders",
        "ddb.geometry.heads", "ddb.geometry.sectors", "ddb.longContentID", "ddb.uuid", "ddb.virtualHWVersion",
        "ddb.zzUnknown",
      ])
    #expect(d.header("vendorKey") == "kept as found")
    #expect(d.ddb("zzUnknown") == "kept in place")
  }

  /// Changing one value rewrites that line only.
  @Test func editingOneValueLeavesTheRest() throws {
    var d = try Descriptor(parsing: bytes(SampleDescriptors.vmware))
    d.setHeader("CID", "0000beef")
    d.setDDB("adapterType", "buslogic")
    let expected = SampleDescriptors.vmware.replacingFirst("CID=bb17cc39 ", with: "CID=0000beef")
      .replacingFirst("ddb.adapterType = \"lsilogic\"", with: "ddb.adapterType = \"buslogic\"")
    #expect(d.serialized() == expected)
    #expect(d.cid == 0xBEEF)
  }
}

@Suite struct DescriptorValueTests {
  @Test func valuesOfTheVMwareSample() throws {
    let d = try Descriptor(parsing: bytes(SampleDescriptors.vmware))
    // Trailing spaces are VMware's; they are not part of the values.
    #expect(d.version == 1)
    #expect(d.cid == 0xBB17_CC39)
    #expect(d.parentCID == Descriptor.noParentCID)
    #expect(d.createType == "twoGbMaxExtentSparse")
    #expect(d.encoding == "UTF-8")
    #expect(d.ddb("ddb.geometry.heads") == "255")
    #expect(d.ddb("ADAPTERTYPE") == "lsilogic", "keys are case-insensitive")
    #expect(d.extents.map(\.fileName) == ["My Disk-s001.vmdk", "My Disk-s002.vmdk", nil])
    #expect(d.capacitySectors == 4_192_256 + 8192 + 2048)
  }

  @Test(arguments: ["UTF-8", "windows-1252", "GBK", "Shift_JIS"])
  func encodingLine(name: String) throws {
    let d = try Descriptor(parsing: bytes("# Disk DescriptorFile\nversion=1\nencoding=\"\(name)\"\n"))
    #expect(d.encoding == name)
  }

  /// Embedded descriptors are NUL-padded, and qemu leaves stale bytes after a NUL when it
  /// rewrites a separate one: nothing after the first NUL counts.
  @Test func ignoresEverythingAfterTheFirstNUL() throws {
    let text = bytes(SampleDescriptors.qemuChild)
    let padded = text + [UInt8](repeating: 0, count: 10240 - text.count)
    let stale = text + [0] + bytes("garbage that is not a descriptor line\n") + [0, 0xFF]
    for input in [padded, stale] {
      let d = try Descriptor(parsing: input)
      #expect(Array(d.serialized().utf8) == text)
    }
  }

  /// Bytes that are not UTF-8 are kept as Latin-1 characters, so the line survives.
  @Test func latin1FileNames() throws {
    let d = try Descriptor(parsing: bytes("RW 8 FLAT \"") + [0xE9] + bytes(".vmdk\" 0\n"))
    #expect(d.extents.first?.fileName == "\u{E9}.vmdk")
  }

  /// qemu writes unpadded hex; VMware pads to 8 digits. Both are one 32-bit value.
  @Test(arguments: [
    ("CID=a57a1cf", UInt32(0x0A57_A1CF)), ("CID=00000000", 0), ("CID=fffffffe", 0xFFFF_FFFE), ("CID=FFFFFFFF", .max),
    ("CID=0x1234", 0x1234),
  ])
  func cid(line: String, value: UInt32) throws {
    #expect(try Descriptor(parsing: bytes(line + "\n")).cid == value)
  }
}

@Suite struct DescriptorRejectionTests {
  static let invalid: [(name: String, text: String)] = [
    ("a line of prose", "# Disk DescriptorFile\nthis is not a descriptor line\n"),
    ("binary garbage", "\u{01}\u{02}\u{7F}garbage\n"),
    ("a key with a space", "# Disk DescriptorFile\ncreate Type=\"x\"\n"),
    ("an empty key", "=value\n"),
    ("a key of punctuation", "#x\n!@#$=1\n"),
    ("CID not hex", "CID=xyz12345\n"),
    ("CID of nine digits", "CID=123456789\n"),
    ("CID empty", "CID=\n"),
    ("CID negative", "CID=-1\n"),
    ("CID only a prefix", "CID=0x\n"),
    ("parentCID not hex", "CID=00000001\nparentCID=ffffffffff\n"),
    ("version not a number", "version=one\n"),
    ("an access mode alone", "RW\n"),
    ("lowercase access (case-sensitive everywhere)", "rw 100 FLAT \"a.vmdk\" 0\n"),
    ("an extent without a type", "RW 100\n"),
    ("an unknown extent type", "RW 100 FOO \"a.vmdk\"\n"),
    ("a lowercase extent type", "RW 100 flat \"a.vmdk\" 0\n"),
    ("sectors not a number", "RW abc FLAT \"a.vmdk\" 0\n"),
    ("negative sectors", "RW -1 FLAT \"a.vmdk\" 0\n"),
    ("an unquoted file name", "RW 100 FLAT a.vmdk 0\n"),
    ("an unterminated file name", "RW 100 FLAT \"a.vmdk 0\n"),
    ("an empty file name", "RW 100 FLAT \"\" 0\n"),
    ("a SPARSE extent without a file", "RW 100 SPARSE\n"),
    ("a ZERO extent with a file", "RW 100 ZERO \"a.vmdk\"\n"),
    ("an offset that is not a number", "RW 100 FLAT \"a.vmdk\" x\n"),
  ]

  @Test(arguments: invalid)
  func rejects(name: String, text: String) {
    expectFormatError(.invalidDescriptor) { _ = try Descriptor(parsing: bytes(text)) }
  }

  /// The error points at the line: its byte offset in the file, for messages.
  @Test func errorOffsetIsTheLine() {
    let text = "# Disk DescriptorFile\nversion=1\nnonsense\n"
    expectFormatError(.invalidDescriptor, offset: 1000 + 32, mentioning: "line 3") {
      _ = try Descriptor(parsing: bytes(text), baseOffset: 1000)
    }
  }

  /// The cap is on the bytes given, before any decoding.
  @Test(arguments: [Int(Limits.maxDescriptorBytes) + 1, 4 << 20])
  func rejectsOverOneMiB(count: Int) {
    var text = bytes("# Disk DescriptorFile\n")
    text += [UInt8](repeating: UInt8(ascii: "#"), count: count - text.count)
    expectFormatError(.descriptorTooLarge, offset: 512) { _ = try Descriptor(parsing: text, baseOffset: 512) }
  }

  @Test func acceptsExactlyOneMiB() throws {
    var text = bytes("# Disk DescriptorFile\n")
    text += [UInt8](repeating: UInt8(ascii: "#"), count: Int(Limits.maxDescriptorBytes) - text.count)
    #expect(try Descriptor(parsing: text).lines.count == 2)
  }
}

@Suite struct ExtentLineTests {
  static func extent(_ line: String) throws -> ExtentDescription {
    try #require(try Descriptor(parsing: bytes(line + "\n")).extents.first)
  }

  static let valid: [(line: String, expected: ExtentDescription)] = [
    ("RW 2048 FLAT \"disk-flat.vmdk\" 0", .init(sectors: 2048, kind: .flat, fileName: "disk-flat.vmdk")),
    (
      "RW 2048 FLAT \"disk-flat.vmdk\" 128",
      .init(sectors: 2048, kind: .flat, fileName: "disk-flat.vmdk", offsetSectors: 128)
    ),
    // qemu requires the offset on FLAT, VBox and libvmdk do not: accepted, and not invented.
    ("RW 2048 FLAT \"d.vmdk\"", .init(sectors: 2048, kind: .flat, fileName: "d.vmdk", hasOffset: false)),
    ("RW 2048 ZERO", .init(sectors: 2048, kind: .zero, fileName: nil)),
    (
      "RW 4096 VMFS \"vmfs_thick-flat.vmdk\"",
      .init(sectors: 4096, kind: .vmfs, fileName: "vmfs_thick-flat.vmdk", hasOffset: false)
    ),
    ("RW 4096 VMFSSPARSE \"a-delta.vmdk\"", .init(sectors: 4096, kind: .vmfsSparse, fileName: "a-delta.vmdk")),
    ("RW 4096 SESPARSE \"a-sesparse.vmdk\"", .init(sectors: 4096, kind: .seSparse, fileName: "a-sesparse.vmdk")),
    ("RW 4096 VMFSRDM \"a-rdm.vmdk\"", .init(sectors: 4096, kind: .vmfsRDM, fileName: "a-rdm.vmdk")),
    (
      "RW 4096 VMFSRAW \"/vmfs/devices/disks/naa.600\"",
      .init(sectors: 4096, kind: .vmfsRaw, fileName: "/vmfs/devices/disks/naa.600")
    ),
    ("RDONLY 100 SPARSE \"a.vmdk\"", .init(access: .readOnly, sectors: 100, kind: .sparse, fileName: "a.vmdk")),
    ("NOACCESS 100 FLAT \"a.vmdk\" 0", .init(access: .noAccess, sectors: 100, kind: .flat, fileName: "a.vmdk")),
    // Quoted names may hold spaces and run to the last quote (libvmdk's rule).
    ("RW 100 SPARSE \"My Disk 1.vmdk\"", .init(sectors: 100, kind: .sparse, fileName: "My Disk 1.vmdk")),
    ("RW\t100\tFLAT\t\"tab bed.vmdk\"\t0", .init(sectors: 100, kind: .flat, fileName: "tab bed.vmdk")),
    ("RW  100   FLAT  \"a.vmdk\"  7  ", .init(sectors: 100, kind: .flat, fileName: "a.vmdk", offsetSectors: 7)),
    ("RW 100 SPARSE 'single.vmdk'", .init(sectors: 100, kind: .sparse, fileName: "single.vmdk")),
    // Windows device extents carry a partition UUID and a device identifier (libvmdk).
    (
      "RW 63 FLAT \"\\\\.\\PhysicalDrive0\" 0 partitionUUID deviceId",
      .init(
        sectors: 63, kind: .flat, fileName: "\\\\.\\PhysicalDrive0", extra: ["partitionUUID", "deviceId"])
    ),
    (
      "RW 18014398509481983 FLAT \"big\" 18014398509481983",
      .init(
        sectors: Limits.maxCapacitySectors, kind: .flat, fileName: "big", offsetSectors: Limits.maxCapacitySectors)
    ),
  ]

  @Test(arguments: valid)
  func parses(line: String, expected: ExtentDescription) throws {
    #expect(try Self.extent(line) == expected)
  }

  /// `line` writes what parses back to the same extent.
  @Test(arguments: valid)
  func canonicalLineParsesBack(line: String, expected: ExtentDescription) throws {
    #expect(try Self.extent(expected.line) == expected)
  }

  /// Sector counts and offsets whose byte size leaves a signed 64-bit file offset, including
  /// numbers that do not even fit 64 bits.
  @Test(arguments: [
    "RW 18014398509481984 FLAT \"a\" 0", "RW 18446744073709551615 FLAT \"a\" 0",
    "RW 18446744073709551616 FLAT \"a\" 0", "RW 999999999999999999999999999999 ZERO",
    "RW 100 FLAT \"a\" 18014398509481984", "RW 100 FLAT \"a\" 18446744073709551616",
  ])
  func rejectsOverflowingNumbers(line: String) {
    expectFormatError(.capacityOverflow) { _ = try Descriptor(parsing: bytes(line + "\n")) }
  }

  /// Each extent fits, but together they pass the largest disk: the sum reports nil and the
  /// block layer turns that into capacityOverflow.
  @Test func capacityOfExtentsThatOverflowTogether() throws {
    let line = "RW \(Limits.maxCapacitySectors) ZERO\n"
    let d = try Descriptor(parsing: bytes(line + line))
    #expect(d.extents.count == 2)
    #expect(d.capacitySectors == nil)
  }
}

@Suite struct LooksLikeDescriptorTests {
  @Test(arguments: [
    "# Disk DescriptorFile\nversion=1\n", "version=1\n", "\n   \n# any comment\nversion = 1\n",
    "#Disk Descriptor File\n", "# Disk DescriptorFile\r\nversion=1\r\n", "\r\n\r\nversion=3\r\n",
    "  # disk descriptorfile  \nCID=1\n",
  ])
  func recognises(text: String) {
    #expect(Descriptor.looksLikeDescriptor(bytes(text)))
  }

  @Test(arguments: [
    "", "KDMV\u{1}\0\0\0", "COWD", "hello world\nversion=1\n", "versionX=1\n", "# just a comment\n",
    "\0\0\0\0version=1\n", "CID=fffffffe\nversion=1\n",
  ])
  func rejects(text: String) {
    #expect(!Descriptor.looksLikeDescriptor(bytes(text)))
  }

  /// A raw disk starting with 4 KiB of zeros, or of 0xFF, is not a descriptor.
  @Test(arguments: [UInt8(0), 0xFF, 0x0A])
  func rejectsFilledSectors(byte: UInt8) {
    #expect(!Descriptor.looksLikeDescriptor([UInt8](repeating: byte, count: 8192)))
  }
}

extension String {
  /// The string with the first occurrence of `target` replaced (test-only helper).
  func replacingFirst(_ target: String, with replacement: String) -> String {
    guard let r = range(of: target) else { return self }
    return replacingCharacters(in: r, with: replacement)
  }
}

/// A descriptor may be up to 1 MiB, so parsing must be linear in it: each input is the cap's
/// worth of one pathological pattern. The fuzzer's 4 KiB inputs cannot show quadratic time;
/// these did (trailing blanks took minutes before `trim` went by scalar).
@Suite(.timeLimit(.minutes(20))) struct DescriptorCostTests {
  static let size = Int(Limits.maxDescriptorBytes) - 16

  static func filled(_ head: String, _ unit: String, _ tail: String = "") -> [UInt8] {
    let fill = size - head.utf8.count - tail.utf8.count
    return Array((head + String(repeating: unit, count: fill / unit.utf8.count) + tail).utf8)
  }

  static let inputs: [Named<[UInt8]>] = [
    Named("blanks after an access mode", filled("RW", " ")),
    Named("blanks before a key", filled("", "\t", "CID=1")),
    Named("blanks around '='", filled("CID", " ", "=1")),
    Named("a CR-only text", filled("", "\r")),
    Named("empty lines", filled("", "\n")),
    Named("CRLF lines", filled("", "\r\n")),
    Named("one combining mark cluster", filled("a", "\u{301}")),
    Named("combining marks after '='", filled("CID=", "\u{301}")),
    Named("an unterminated file name", filled("RW 1 FLAT \"", "x")),
    Named("quotes in a file name", filled("RW 1 FLAT \"", "\"")),
    Named("tokens after the offset", filled("RW 1 FLAT \"a\" 0", " x")),
    Named("a sector count of digits", filled("RW ", "9")),
    Named("extent lines", filled("", "RW 1 ZERO\n")),
    Named("DDB lines", filled("", "ddb.k = \"v\"\n")),
    Named("key lines", filled("", "a=b\n")),
    Named("Latin-1 bytes", [UInt8](repeating: 0xE9, count: size)),
  ]

  @Test(arguments: inputs)
  func parsesInLinearTime(_ input: Named<[UInt8]>) {
    let elapsed = ContinuousClock().measure {
      _ = Descriptor.looksLikeDescriptor(input.value)
      _ = try? Descriptor(parsing: input.value)
    }
    // Linear parsing of 1 MiB takes well under a second even in a debug build; the
    // quadratic trim took minutes. The bound is loose so that a loaded machine passes: this
    // guards the complexity, it does not measure speed.
    #expect(elapsed < .seconds(20), "took \(elapsed)")
  }
}
