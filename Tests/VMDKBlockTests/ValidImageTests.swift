// The builders' valid images read back as the content they were built from. Every hostile
// test starts from one of these, so they must be right first; the COWD and seSparse ones are
// also checked against qemu-img, which reads both formats.

import Testing
import VMDKBlock
import VMDKFormat

@Suite(.timeLimit(.minutes(20))) struct ValidImageTests {
  /// Capacities: whole grains, a partial last grain, and three grain tables.
  @Test(arguments: [4096, 4000, 2 * 65536 + 1000] as [UInt64])
  func monolithicSparse(capacity: UInt64) throws {
    var image = SparseImage(capacitySectors: capacity)
    image.descriptor = descriptorText(createType: "monolithicSparse", extents: ["RW \(capacity) SPARSE \"disk.vmdk\""])
    let last = (capacity + 127) / 128 - 1
    image.fill([0, 1, 5, last])
    let folder = try TempFolder()
    let built = image.build()
    let path = try folder.write("disk.vmdk", built.bytes)
    try expectReads(path, as: built.expected)
    let link = try Disk.open(path).top
    #expect(link.createType == "monolithicSparse")
    #expect(link.descriptorLocation == .embedded)
    #expect(link.sparseHeader == built.header)
  }

  /// Version 2 zeroed-grain entries read as zeros; without a descriptor the file is a bare
  /// extent and still opens.
  @Test func zeroedGrainsAndNoDescriptor() throws {
    var image = SparseImage()
    image.descriptor = nil
    image.fill([2, 3])
    image.zeroedGrains = [4, 6]
    let folder = try TempFolder()
    let built = image.build()
    let path = try folder.write("bare.vmdk", built.bytes)
    try expectReads(path, as: built.expected)
    let disk = try Disk.open(path)
    #expect(disk.top.descriptorLocation == .none)
    #expect(try disk.blockStatus().contains { $0.kind == .zero && $0.start == 4 * 65536 })
  }

  /// Whole grains, a partial last grain (2000 sectors), and two grain tables with the first
  /// region empty (its directory entry is 0, as VMware writes it).
  @Test(arguments: [(2048, [0, 3, 15]), (2000, [0, 15]), (66000, [515])] as [(UInt64, [UInt64])])
  func streamOptimized(capacity: UInt64, grains: [UInt64]) throws {
    var image = StreamImage(capacitySectors: capacity)
    image.descriptor = descriptorText(createType: "streamOptimized", extents: ["RDONLY \(capacity) SPARSE \"s.vmdk\""])
    image.fill(grains)
    let folder = try TempFolder()
    let built = image.build()
    let path = try folder.write("s.vmdk", built.bytes)
    try expectReads(path, as: built.expected)
    #expect(try Disk.open(path).top.extents.first?.format.rawValue == "stream")
  }

  /// The seSparse image read directly, through its descriptor, and by qemu-img.
  @Test(.enabled(if: QemuImg.shouldRun, "qemu-img is not installed"))
  func seSparseMatchesQemu() throws {
    var image = SESparseImage()
    // Grains in both tables; slots 4094.. cross 4096, so the entry's high index bits count.
    image.fill([0, 1, 7, 4095, 4096, 4124])
    image.zeroGrains = [2]
    image.unmappedGrains = [3]
    image.firstGrainSlot = 4094
    let folder = try TempFolder()
    let built = image.build()
    try folder.write("snap-sesparse.vmdk", built.bytes)
    let descriptor = try folder.write(
      "snap.vmdk",
      text: descriptorText(
        createType: "seSparse", extents: ["RW \(image.capacitySectors) SESPARSE \"snap-sesparse.vmdk\""]))
    try expectReads(descriptor, as: built.expected)
    try expectReads(folder.path("snap-sesparse.vmdk"), as: built.expected)
    #expect(try QemuImg.raw(descriptor, in: folder) == built.expected.bytes)
  }

  /// COWD at the default 1-sector grain and at 16 sectors, bare and through a descriptor,
  /// against qemu-img (through the descriptor only: qemu looks for a CID at byte 512 of a
  /// bare COWD file and refuses it).
  @Test(.enabled(if: QemuImg.shouldRun, "qemu-img is not installed"), arguments: [UInt32(1), 16])
  func cowdMatchesQemu(grainSectors: UInt32) throws {
    var image = COWDImage(grainSectors: grainSectors)
    let grains = UInt64(image.capacitySectors) / UInt64(grainSectors)
    image.fill([0, 1, 9, grains / 2, grains - 1])
    let folder = try TempFolder()
    let built = image.build()
    let extent = try folder.write("snap-delta.vmdk", built.bytes)
    let descriptor = try folder.write(
      "snap.vmdk",
      text: descriptorText(
        createType: "vmfsSparse", extents: ["RW \(image.capacitySectors) VMFSSPARSE \"snap-delta.vmdk\""]))
    try expectReads(descriptor, as: built.expected)
    try expectReads(extent, as: built.expected)
    #expect(try QemuImg.raw(descriptor, in: folder) == built.expected.bytes)
  }
}
