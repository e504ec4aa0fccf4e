// Images qemu-img makes at test time, in every subformat it writes, read back by the library
// and by vmdk-inspect: the decoded bytes and the block map must be qemu's.

import Foundation
import Testing
import VMDKBlock

/// The subformats `qemu-img create -f vmdk -o subformat=...` knows.
enum Subformat: String, CaseIterable, Sendable {
  case monolithicSparse, monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized

  /// Whether the extents have grain tables that can hold zeroed-grain entries (qemu's
  /// zeroed_grain option). Stream images are converted, so the option means nothing there.
  var hasGrainTables: Bool { self == .monolithicSparse || self == .twoGbMaxExtentSparse }
}

/// How to make one test image with qemu: create it, then fill it with qemu-io.
struct ImageRecipe: Sendable, CustomTestStringConvertible {
  var subformat: Subformat
  var capacity: UInt64
  var zeroedGrain = false
  var adapter: String? = nil
  /// More `-o` options (compat6, preallocation).
  var options: [String] = []
  var writes: [String]

  var testDescription: String {
    "\(subformat.rawValue), \(capacity) bytes"
      + (subformat.hasGrainTables ? ", zeroed_grain=\(zeroedGrain ? "on" : "off")" : "")
      + (adapter.map { ", \($0)" } ?? "") + options.map { ", \($0)" }.joined()
  }

  /// Makes the image in `folder`; returns the path to open.
  func make(in folder: String) throws -> String {
    let path = "\(folder)/\(subformat.rawValue).vmdk"
    var options = (adapter.map { ["adapter_type=\($0)"] } ?? []) + self.options
    if zeroedGrain { options.append("zeroed_grain=on") }
    guard subformat == .streamOptimized else {
      try Qemu.create(path, size: capacity, options: ["subformat=\(subformat.rawValue)"] + options)
      try Qemu.io(path, writes)
      return path
    }
    // qemu cannot write a stream image in place: fill a sparse image, then convert it.
    let source = "\(folder)/stream-source.vmdk"
    try Qemu.create(source, size: capacity, options: options)
    try Qemu.io(source, writes)
    try Qemu.img("convert", "-f", "vmdk", "-O", "vmdk", "-o", "subformat=streamOptimized", source, path)
    return path
  }

  /// Writes that exercise the grain arithmetic in an image of `capacity` bytes (at least 3 MiB).
  /// qemu-io needs sector-aligned offsets, so "odd" means sector- but not grain-aligned.
  static func patternWrites(capacity: UInt64) -> [String] {
    [
      "write -P 0x5a 0 4096",  // part of the first grain
      "write -P 0xa5 18944 197632",  // 512*37, 65536*3+1024 bytes: starts and ends inside grains
      "write -z 20480 1024",  // zeros inside a data grain: stays data
      "write -z 65536 65536",  // a whole grain of zeros over data: a zeroed-grain entry when on
      "write -z 1048576 131072",  // two whole grains of zeros where nothing was
      "write -P 0x3c 1180160 1536",  // right after them, three sectors
      "write -P 0x11 \(capacity - 512) 512",  // the last sector, in the partial last grain
    ]
  }

  /// The small images: every subformat, zeroed_grain on and off where it applies, and
  /// capacities that are and are not a multiple of the 64 KiB grain.
  static let small: [ImageRecipe] =
    Subformat.allCases.flatMap { subformat in
      [4 << 20, 10 << 20 + 512, 3 << 20 + 1536].flatMap { (capacity: UInt64) in
        (subformat.hasGrainTables ? [false, true] : [false]).map { zeroed in
          ImageRecipe(
            subformat: subformat, capacity: capacity, zeroedGrain: zeroed, writes: patternWrites(capacity: capacity))
        }
      }
    } + variants

  /// Other things qemu can be asked for: a version-2 sparse header (compat6) and preallocated
  /// files (every grain allocated up front; flat files written or fallocated, so no holes).
  static let variants: [ImageRecipe] = [
    (Subformat.monolithicSparse, "compat6=on", true),
    (.monolithicSparse, "preallocation=full", false),
    (.twoGbMaxExtentSparse, "preallocation=falloc", false),
    (.monolithicFlat, "preallocation=full", false),
    (.twoGbMaxExtentFlat, "preallocation=falloc", false),
  ].map { subformat, option, zeroed in
    let capacity: UInt64 = 3 << 20 + 1536
    return ImageRecipe(
      subformat: subformat, capacity: capacity, zeroedGrain: zeroed, options: [option],
      writes: patternWrites(capacity: capacity))
  }

  /// One image per subformat (odd capacity; zeroed grains where they exist), for the CLI.
  static func representative(_ subformat: Subformat) -> ImageRecipe {
    small.first {
      $0.subformat == subformat && $0.capacity % 65536 != 0 && $0.zeroedGrain == subformat.hasGrainTables
        && $0.options.isEmpty
    }!
  }
}

@Suite struct QemuImageTests {
  @Test("Digest and block map equal qemu-img's", arguments: ImageRecipe.small)
  func agreesWithQemu(recipe: ImageRecipe) throws {
    try withTemporaryFolder { folder in
      let image = try recipe.make(in: folder)
      let disk = try Disk.open(image)
      #expect(disk.capacityBytes == recipe.capacity)
      #expect(disk.top.descriptor.createType == recipe.subformat.rawValue)
      let qemuMap = try expectAgreesWithQemu(image, scratch: folder)
      // The fixture must really hold zeroed-grain entries (present, zero, no data) when asked
      // to, or the comparison above proves nothing about them.
      let zeroedGrains = qemuMap.contains { $0.present && $0.zero && !$0.data }
      #expect(zeroedGrains == (recipe.zeroedGrain && recipe.subformat.hasGrainTables))
    }
  }

  @Test("vmdk-inspect digest and map --json equal qemu-img's", arguments: Subformat.allCases)
  func cliAgreesWithQemu(subformat: Subformat) throws {
    try withTemporaryFolder { folder in
      let image = try ImageRecipe.representative(subformat).make(in: folder)
      let digestLine = try vmdkInspect("digest", image).output
      let hex = digestLine.split(separator: " ", maxSplits: 1).first.map(String.init)
      #expect(try hex == Qemu.rawSHA256(image, scratch: folder))
      let map = try MapRecord.parse(try vmdkInspect("map", image, "--json").stdout)
      expectSameMap(map, try Qemu.map(image), "vmdk-inspect map \(image)")
    }
  }

  /// qemu writes the adapter type and a geometry whose head count depends on it (16 for IDE,
  /// 255 for the SCSI adapters) into the disk database; the library must read back the same.
  @Test(
    "Adapter type and geometry as qemu wrote them",
    arguments: ["ide", "lsilogic", "buslogic", "legacyESX"], [Subformat.monolithicSparse, .monolithicFlat])
  func adapterType(adapter: String, subformat: Subformat) throws {
    try withTemporaryFolder { folder in
      let recipe = ImageRecipe(subformat: subformat, capacity: 10 << 20, adapter: adapter, writes: [])
      let image = try recipe.make(in: folder)
      let disk = try Disk.open(image)
      #expect(disk.metadata("adapterType") == adapter)
      #expect(try disk.metadata("adapterType") == descriptorValue("ddb.adapterType", inFile: image))
      let geometry = try #require(disk.geometry)
      #expect(geometry.heads == (adapter == "ide" ? 16 : 255))
      #expect(try "\(geometry.heads)" == descriptorValue("ddb.geometry.heads", inFile: image))
      #expect(try "\(geometry.cylinders)" == descriptorValue("ddb.geometry.cylinders", inFile: image))
      #expect(try "\(geometry.sectors)" == descriptorValue("ddb.geometry.sectors", inFile: image))
    }
  }

  /// Split images over 2 GiB: three extents (2 GiB, 2 GiB, 1 GiB and three sectors), written
  /// across both extent boundaries. Sparse on the host, so cheap in disk space; the time goes
  /// into hashing 5 GiB.
  @Test(
    "5 GiB split images, written across the extent boundaries",
    arguments: [Subformat.twoGbMaxExtentSparse, .twoGbMaxExtentFlat])
  func splitOverTwoGiB(subformat: Subformat) throws {
    let capacity: UInt64 = 5 << 30 + 1536
    let recipe = ImageRecipe(
      subformat: subformat, capacity: capacity, zeroedGrain: subformat.hasGrainTables,
      writes: [
        "write -z 2147352576 131072",  // the last two grains of the first extent: zeros
        "write -P 0x5a 2147483136 4096",  // from the last sector of the first extent into the second
        "write -P 0x6b 4294966784 8192",  // the same at 4 GiB, between the second and third
        "write -z 4294901760 65536",  // then a whole grain of zeros below 4 GiB, over its first sector
        "write -P 0xa5 18944 197632",
        "write -P 0x77 3221291008 196096",  // 3 GiB + 64 KiB, 383 sectors
        "write -P 0x11 \(capacity - 512) 512",
      ])
    try withTemporaryFolder { folder in
      let image = try recipe.make(in: folder)
      let disk = try Disk.open(image)
      #expect(disk.capacityBytes == capacity)
      #expect(disk.top.extents.map(\.line.sectors) == [4_194_304, 4_194_304, 2_097_155])
      try expectAgreesWithQemu(image, scratch: folder)
      // An unaligned read across the 2 GiB boundary: 100 zeros, the 0x5a sectors, 100 zeros.
      let around = try disk.read(at: 2_147_483_136 - 100, count: 4096 + 200)
      #expect(
        around == [UInt8](repeating: 0, count: 100) + [UInt8](repeating: 0x5a, count: 4096)
          + [UInt8](repeating: 0, count: 100))
    }
  }

  /// vmdkinfo (libvmdk) is an independent reader: if it accepts our fixtures and reports the
  /// same size, the images are valid VMDK and not just something qemu and we agree on.
  @Test("vmdkinfo accepts the qemu-made images", arguments: ImageRecipe.small)
  func vmdkinfoAccepts(recipe: ImageRecipe) throws {
    let vmdkinfo = try requireTool("vmdkinfo")
    try withTemporaryFolder { folder in
      let image = try recipe.make(in: folder)
      let info = try runChecked(vmdkinfo, [image]).output
      #expect(info.contains("(\(recipe.capacity) bytes)"), "vmdkinfo's media size: \(info)")
    }
  }
}
