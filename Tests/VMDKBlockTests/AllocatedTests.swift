// Disk.allocatedBlocks and Disk.changedBlocks on synthetic images: chunk alignment and
// merging, chunk sizes from 128 sectors to larger than the disk, the whole chain against the
// top link only, ZERO extents and zeroed-grain entries, and the arguments refused.

import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

private let kib: UInt64 = 1024

/// A monolithicSparse image of `capacity` sectors with grains of `grainSectors`, written to
/// `name` in `folder`; `parent` makes it a child (CIDs chained) of that file.
@discardableResult
private func sparse(
  _ folder: TempFolder, _ name: String, capacity: UInt64 = 4096, grainSectors: UInt64 = 128, grains: [UInt64],
  zeroed: Set<UInt64> = [], cid: String = "fffffffe", parent: (name: String, cid: String)? = nil
) throws -> String {
  var image = SparseImage(capacitySectors: capacity, grainSectors: grainSectors)
  image.descriptor = descriptorText(
    createType: "monolithicSparse", cid: cid, parentCID: parent?.cid ?? "ffffffff", parentHint: parent?.name,
    extents: ["RW \(capacity) SPARSE \"\(name)\""])
  image.fill(grains)
  image.zeroedGrains = zeroed
  return try folder.write(name, image.build().bytes)
}

private func area(_ start: UInt64, _ length: UInt64) -> ChangedArea { ChangedArea(start: start, length: length) }

/// What allocatedBlocks must say, computed the slow way from blockStatus: every
/// `present && data` run rounded out to chunks, merged.
private func fromBlockStatus(_ disk: Disk, chunkBytes: UInt64) throws -> [ChangedArea] {
  var out: [ChangedArea] = []
  for s in try disk.blockStatus() where s.present && s.data {
    let start = s.start / chunkBytes * chunkBytes
    let end = min(disk.capacityBytes, (s.start + s.length + chunkBytes - 1) / chunkBytes * chunkBytes)
    if let last = out.last, start <= last.start + last.length {
      out[out.count - 1].length = max(last.start + last.length, end) - last.start
    } else {
      out.append(area(start, end - start))
    }
  }
  return out
}

@Suite(.timeLimit(.minutes(20))) struct AllocatedTests {
  /// 64 KiB grains: chunks of 128 sectors are grains; 2048 sectors (1 MiB) swallow
  /// neighbours; a chunk larger than the disk is the whole disk.
  @Test(arguments: [
    (UInt64(128), [area(0, 128 * kib), area(5 * 64 * kib, 64 * kib), area(20 * 64 * kib, 64 * kib)]),
    (UInt64(2048), [area(0, 2048 * kib)]),
    (UInt64(256), [area(0, 128 * kib), area(256 * kib, 128 * kib), area(1280 * kib, 128 * kib)]),
    (UInt64(1 << 20), [area(0, 2048 * kib)]),
  ])
  func chunkSizes(chunkSectors: UInt64, expected: [ChangedArea]) throws {
    let folder = try TempFolder()
    let disk = try Disk.open(try sparse(folder, "disk.vmdk", grains: [0, 1, 5, 20]))
    let ranges = try disk.allocatedBlocks(chunkSectors: chunkSectors)
    #expect(ranges == expected)
    #expect(ranges == (try fromBlockStatus(disk, chunkBytes: chunkSectors * 512)))
  }

  /// 8 KiB grains inside 64 KiB chunks: a grain anywhere makes its chunk allocated, and
  /// grains in neighbouring chunks merge into one range.
  @Test func grainsSmallerThanChunks() throws {
    let folder = try TempFolder()
    // Grain 3 (24 KiB) is in chunk 0; grains 7 and 8 straddle chunks 0 and 1; grain 40
    // (320 KiB) is alone in chunk 5.
    let disk = try Disk.open(try sparse(folder, "small.vmdk", grainSectors: 16, grains: [3, 7, 8, 40]))
    #expect(try disk.allocatedBlocks() == [area(0, 128 * kib), area(320 * kib, 64 * kib)])
    // Nothing is read, and exactness is available through blockStatus: only 4 grains.
    #expect(try disk.blockStatus().filter(\.data).reduce(0) { $0 + $1.length } == 4 * 8 * kib)
  }

  /// A capacity that is not a multiple of the chunk: the last range ends at the disk's end.
  @Test func lastPartialChunk() throws {
    let folder = try TempFolder()
    let disk = try Disk.open(try sparse(folder, "odd.vmdk", capacity: 4000, grains: [0, 31]))
    #expect(disk.capacityBytes == 4000 * 512)
    #expect(try disk.allocatedBlocks() == [area(0, 64 * kib), area(31 * 64 * kib, 4000 * 512 - 31 * 64 * kib)])
    #expect(try disk.allocatedBlocks(chunkSectors: 2048) == [area(0, 4000 * 512)])
    // Asking for the last chunk whole is allowed; its answer stops at the end of the disk.
    #expect(
      try disk.allocatedBlocks(chunkSectors: 2048, offset: 1 << 20, length: 1 << 20) == [
        area(1 << 20, 4000 * 512 - (1 << 20))
      ])
  }

  /// A window: only the chunks inside it.
  @Test func window() throws {
    let folder = try TempFolder()
    let disk = try Disk.open(try sparse(folder, "disk.vmdk", grains: [0, 1, 5, 20]))
    #expect(
      try disk.allocatedBlocks(offset: 64 * kib, length: 256 * kib) == [area(64 * kib, 64 * kib)])
    #expect(
      try disk.allocatedBlocks(offset: 64 * kib, length: 320 * kib) == [
        area(64 * kib, 64 * kib), area(320 * kib, 64 * kib),
      ])
    #expect(try disk.allocatedBlocks(offset: 6 * 64 * kib) == [area(20 * 64 * kib, 64 * kib)])
    #expect(try disk.allocatedBlocks(offset: disk.capacityBytes) == [])
  }

  /// A child over a parent: the whole chain's allocation, the top link's, and what changed
  /// since the parent. The child's zeroed grain 10 hides the parent's grain 10.
  @Test func chainTopOnlyAndChanged() throws {
    let folder = try TempFolder()
    try sparse(folder, "parent.vmdk", grains: [0, 10, 12], cid: "0000000a")
    let child = try sparse(
      folder, "child.vmdk", grains: [1, 20], zeroed: [10], cid: "0000000b", parent: ("parent.vmdk", "0000000a"))
    let disk = try Disk.open(child)
    #expect(disk.links.count == 2)
    #expect(
      try disk.allocatedBlocks() == [area(0, 128 * kib), area(12 * 64 * kib, 64 * kib), area(20 * 64 * kib, 64 * kib)])
    #expect(try disk.allocatedBlocks() == (try fromBlockStatus(disk, chunkBytes: 64 * kib)))
    #expect(try disk.allocatedBlocks(topOnly: true) == [area(64 * kib, 64 * kib), area(20 * 64 * kib, 64 * kib)])
    // Changed since the parent: the child's grains, the zeroed one included (it changed the
    // content from the parent's data to zeros).
    let changed = [area(64 * kib, 64 * kib), area(10 * 64 * kib, 64 * kib), area(20 * 64 * kib, 64 * kib)]
    #expect(try disk.changedBlocks(sinceAncestor: 1) == changed)
    #expect(try disk.changedBlocks(sinceAncestor: folder.path("parent.vmdk")) == changed)
    // A name relative to the child's folder, as parentFileNameHint says it.
    #expect(try disk.changedBlocks(sinceAncestor: "parent.vmdk") == changed)
    #expect(disk.linkIndex(of: child) == 0)

    // The parent alone, and the child as a single link.
    #expect(
      try Disk.open(folder.path("parent.vmdk")).allocatedBlocks() == [
        area(0, 64 * kib), area(640 * kib, 64 * kib), area(768 * kib, 64 * kib),
      ])
    var single = OpenOptions()
    single.singleLink = true
    let top = try Disk.open(child, options: single)
    #expect(try top.allocatedBlocks() == (try disk.allocatedBlocks(topOnly: true)))
  }

  /// Three links: changed since the bottom is the union of the two above it.
  @Test func threeLinks() throws {
    let folder = try TempFolder()
    try sparse(folder, "a.vmdk", grains: [0, 1, 2], cid: "0000000a")
    try sparse(folder, "b.vmdk", grains: [2, 6], cid: "0000000b", parent: ("a.vmdk", "0000000a"))
    let c = try sparse(folder, "c.vmdk", grains: [7, 30], cid: "0000000c", parent: ("b.vmdk", "0000000b"))
    let disk = try Disk.open(c)
    #expect(
      try disk.changedBlocks(sinceAncestor: "b.vmdk") == [area(7 * 64 * kib, 64 * kib), area(30 * 64 * kib, 64 * kib)])
    #expect(
      try disk.changedBlocks(sinceAncestor: "a.vmdk") == [
        area(2 * 64 * kib, 64 * kib), area(6 * 64 * kib, 128 * kib), area(30 * 64 * kib, 64 * kib),
      ])
    #expect(
      try disk.allocatedBlocks() == [area(0, 192 * kib), area(6 * 64 * kib, 128 * kib), area(30 * 64 * kib, 64 * kib)])
  }

  /// ZERO extents and zeroed-grain entries read as zeros without stored data: not allocated.
  /// Flat extents are allocated where they hold data.
  @Test func zeroExtentsAndZeroedGrains() throws {
    let folder = try TempFolder()
    try folder.write("a-flat.vmdk", flat(512))
    let path = try folder.write(
      "disk.vmdk",
      text: descriptorText(
        createType: "monolithicFlat",
        extents: [#"RW 256 FLAT "a-flat.vmdk" 0"#, "RW 256 ZERO", #"RW 256 FLAT "a-flat.vmdk" 256"#, "RW 1024 ZERO"]))
    let disk = try Disk.open(path)
    #expect(try disk.allocatedBlocks() == [area(0, 128 * kib), area(256 * kib, 128 * kib)])
    #expect(try disk.allocatedBlocks(chunkSectors: 1024) == [area(0, 512 * kib)])

    let zeroed = try Disk.open(try sparse(folder, "z.vmdk", grains: [2], zeroed: [0, 1, 3]))
    #expect(try zeroed.blockStatus().contains { $0.kind == .zero })
    #expect(try zeroed.allocatedBlocks() == [area(128 * kib, 64 * kib)])
  }

  /// Chunk sizes that are not a power of two of at least 128 sectors, unaligned windows, and
  /// windows past the end; links that are not ancestors.
  @Test func refusedArguments() throws {
    let folder = try TempFolder()
    try sparse(folder, "parent.vmdk", grains: [0], cid: "0000000a")
    let child = try sparse(folder, "child.vmdk", grains: [1], cid: "0000000b", parent: ("parent.vmdk", "0000000a"))
    let disk = try Disk.open(child)
    for chunk: UInt64 in [0, 1, 64, 127, 129, 192, 1000, 1 << 55, UInt64.max] {
      let e = #expect(throws: VMDKError.self) { try disk.allocatedBlocks(chunkSectors: chunk) }
      #expect(e?.code == .invalidArgument, "chunk \(chunk): \(String(describing: e))")
    }
    let unaligned = #expect(throws: VMDKError.self) { try disk.allocatedBlocks(offset: 512) }
    #expect(unaligned?.code == .invalidArgument)
    let shortLength = #expect(throws: VMDKError.self) { try disk.allocatedBlocks(length: 4096) }
    #expect(shortLength?.code == .invalidArgument)
    let past = #expect(throws: VMDKError.self) {
      try disk.allocatedBlocks(offset: 0, length: disk.capacityBytes + 65536)
    }
    #expect(past?.code == .outOfRange)
    let pastOffset = #expect(throws: VMDKError.self) { try disk.allocatedBlocks(offset: disk.capacityBytes + 65536) }
    #expect(pastOffset?.code == .outOfRange)

    for index in [0, 2, -1] {
      let e = #expect(throws: VMDKError.self) { try disk.changedBlocks(sinceAncestor: index) }
      #expect(e?.code == .invalidArgument)
    }
    let missing = #expect(throws: VMDKError.self) { try disk.changedBlocks(sinceAncestor: folder.path("other.vmdk")) }
    #expect(missing?.code == .invalidArgument)
    #expect(missing?.file == folder.path("other.vmdk"))
    #expect(missing?.message.contains("child.vmdk") == true)
    let topLink = #expect(throws: VMDKError.self) { try disk.changedBlocks(sinceAncestor: child) }
    #expect(topLink?.code == .invalidArgument)
  }
}
