// Snapshot chains made with `qemu-img create -b`: reads fall through to the parents exactly as
// in qemu, parents in other folders are refused unless allowed, and broken chains (CID
// mismatch, missing parent, loop, too deep) fail with their own error codes.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

/// One link of a chain to make with qemu: its size, subformat and what to write into it.
struct LinkRecipe: Sendable {
  var capacity: UInt64
  var subformat: Subformat = .monolithicSparse
  var zeroedGrain = false
  var writes: [String]
}

/// A chain made in one folder: `link0.vmdk` is the base, each next link names the previous
/// one as its parent, relative to its own folder as VMware does.
struct Chain {
  /// The paths, top first (the order of `Disk.links`).
  let paths: [String]
  var top: String { paths[0] }

  static func make(in folder: String, _ links: [LinkRecipe]) throws -> Chain {
    var paths: [String] = []
    for (n, link) in links.enumerated() {
      let path = "\(folder)/link\(n).vmdk"
      let options = ["subformat=\(link.subformat.rawValue)"] + (link.zeroedGrain ? ["zeroed_grain=on"] : [])
      let parent = n == 0 ? [] : ["-b", "link\(n - 1).vmdk", "-F", "vmdk"]
      try Qemu.img(
        ["create", "-q", "-f", "vmdk", "-o", options.joined(separator: ",")] + parent + [path, "\(link.capacity)"])
      try Qemu.io(path, link.writes)
      paths.insert(path, at: 0)
    }
    return Chain(paths: paths)
  }

  /// Three links of 4 MiB, each written at offsets that overlap its parent's data, so that
  /// every link shows through somewhere.
  static func standard(base: Subformat = .monolithicSparse, children: Subformat = .monolithicSparse) -> [LinkRecipe] {
    [
      LinkRecipe(
        capacity: 4 << 20, subformat: base, writes: ["write -P 0x11 0 1048576", "write -P 0x12 2097152 131072"]),
      LinkRecipe(
        capacity: 4 << 20, subformat: children, zeroedGrain: true,
        writes: [
          "write -P 0x21 524288 1048576",  // over the second half of base's data and past it
          "write -z 2097152 65536",  // a zeroed grain hiding base's 0x12 grain
        ]),
      LinkRecipe(
        capacity: 4 << 20, subformat: children,
        writes: [
          "write -P 0x31 18944 197632",  // inside base's data, grain-unaligned
          "write -P 0x32 1048064 1024",  // across the end of base's data, inside mid's
          "write -P 0x33 2162176 1024",  // across the end of base's second grain, which mid did not hide
        ]),
    ]
  }
}

/// Links whose sizes differ: a disk grown after a snapshot, or a chain whose middle link is
/// shorter than the others. Past a parent's end a child reads zeros, and qemu-img map
/// reports that range at the depth of the child whose parent is too short.
struct SizeCase: Sendable, CustomTestStringConvertible {
  var testDescription: String
  var links: [LinkRecipe]

  static let all = [
    SizeCase(
      testDescription: "child larger than its parent",
      links: [
        LinkRecipe(capacity: 2 << 20, writes: ["write -P 0x11 0 1048576"]),
        LinkRecipe(capacity: 5 << 20, writes: ["write -P 0x22 4194304 4096"]),
      ]),
    SizeCase(
      testDescription: "child smaller than its parent",
      links: [
        LinkRecipe(capacity: 4 << 20, writes: ["write -P 0x11 0 4194304"]),
        LinkRecipe(capacity: 2 << 20, writes: ["write -P 0x22 1048576 4096"]),
      ]),
    SizeCase(
      testDescription: "middle link shorter than base and top",
      links: [
        LinkRecipe(capacity: 4 << 20, writes: ["write -P 0x11 0 4194304"]),
        LinkRecipe(capacity: 2 << 20, writes: ["write -P 0x22 1048576 4096"]),
        LinkRecipe(capacity: 4 << 20, writes: ["write -P 0x33 3145728 4096"]),
      ]),
  ]
}

@Suite struct ChainTests {
  @Test(
    "Three-link chain: digest and block map equal qemu-img's",
    arguments: [Subformat.monolithicSparse, .monolithicFlat, .twoGbMaxExtentSparse],
    [Subformat.monolithicSparse, .twoGbMaxExtentSparse])
  func threeLinks(base: Subformat, children: Subformat) throws {
    try withTemporaryFolder { folder in
      let chain = try Chain.make(in: folder, Chain.standard(base: base, children: children))
      let disk = try Disk.open(chain.top)
      #expect(disk.links.map(\.path) == chain.paths)
      // Top (three links) and mid (two); the base alone is a plain image, which
      // QemuImageTests covers.
      for link in chain.paths.dropLast() { try expectAgreesWithQemu(link, scratch: folder) }
    }
  }

  @Test("Links of different sizes", arguments: SizeCase.all)
  func differentSizes(sizes: SizeCase) throws {
    try withTemporaryFolder { folder in
      let chain = try Chain.make(in: folder, sizes.links)
      #expect(try Disk.open(chain.top).capacityBytes == sizes.links.last!.capacity)
      try expectAgreesWithQemu(chain.top, scratch: folder)
    }
  }

  @Test("maxChainDepth caps the number of links")
  func depthCap() throws {
    try withTemporaryFolder { folder in
      let chain = try Chain.make(in: folder, Chain.standard())
      var options = OpenOptions()
      options.maxChainDepth = 2
      expectVMDKError(.chainTooDeep) { _ = try Disk.open(chain.top, options: options) }
      options.maxChainDepth = 3
      #expect(try Disk.open(chain.top, options: options).links.count == 3)
    }
  }

  /// A linked clone keeps its parent in another folder. A descriptor is untrusted, so the
  /// library refuses a parent outside the child's folder unless the caller allows it.
  @Test("Parent in another folder (linked clone)", arguments: [false, true])
  func parentInAnotherFolder(absolute: Bool) throws {
    try withTemporaryFolder { folder in
      for sub in ["A", "B"] {
        try FileManager.default.createDirectory(atPath: "\(folder)/\(sub)", withIntermediateDirectories: false)
      }
      let base = "\(folder)/A/base.vmdk"
      let child = "\(folder)/B/child.vmdk"
      try Qemu.create(base, size: 4 << 20)
      try Qemu.io(base, ["write -P 0x11 0 1048576"])
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", absolute ? base : "../A/base.vmdk", "-F", "vmdk", child)
      try Qemu.io(child, ["write -P 0x22 524288 65536"])

      expectVMDKError(.pathOutsideFolder) { _ = try Disk.open(child) }
      var options = OpenOptions()
      options.allowExternalPaths = true
      let disk = try Disk.open(child, options: options)
      #expect(disk.links.count == 2)
      try expectAgreesWithQemu(child, scratch: folder, options: options)
    }
  }

  /// qemu writes the embedded descriptor of a monolithicSparse file at byte 512; changing one
  /// digit of parentCID there (same length, nothing moves) makes the chain inconsistent.
  @Test("A parentCID that is not the parent's CID")
  func cidMismatch() throws {
    try withTemporaryFolder { folder in
      let base = "\(folder)/base.vmdk"
      let child = "\(folder)/child.vmdk"
      try Qemu.create(base, size: 4 << 20)
      try Qemu.io(base, ["write -P 0x11 0 1048576"])
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", child)
      try Qemu.io(child, ["write -P 0x22 524288 65536"])
      // qemu refuses the chain once it is broken, so take its answer first.
      let reference = try Qemu.rawSHA256(child, scratch: folder)

      let old = try #require(try descriptorValue("parentCID", inFile: child))
      let new = String(old.dropLast()) + (old.last == "0" ? "1" : "0")
      try patchFile(child, replacing: "parentCID=\(old)", with: "parentCID=\(new)")
      let baseCID = try #require(try descriptorValue("CID", inFile: base))

      let error = expectVMDKError(.cidMismatch) { _ = try Disk.open(child) }
      // The message names both files and both CIDs (the library prints CIDs as 8 hex digits;
      // qemu writes them without leading zeros).
      for fact in [child, base, eightHexDigits(new), eightHexDigits(baseCID)] {
        #expect(error?.message.contains(fact) == true, "\(fact) missing from: \(error?.message ?? "")")
      }

      var options = OpenOptions()
      options.ignoreCIDMismatch = true
      let disk = try Disk.open(child, options: options)
      #expect(disk.links.count == 2)
      #expect(try disk.digest(.sha256) == reference)
    }
  }

  @Test("Missing parent")
  func missingParent() throws {
    try withTemporaryFolder { folder in
      let chain = try Chain.make(in: folder, Chain.standard())
      try FileManager.default.removeItem(atPath: chain.paths.last!)
      let error = expectVMDKError(.partialChain) { _ = try Disk.open(chain.top) }
      #expect(error?.description.contains("link0.vmdk") == true, "\(String(describing: error))")
      // The rest of the chain still opens on its own.
      var options = OpenOptions()
      options.singleLink = true
      #expect(try Disk.open(chain.top, options: options).links.count == 1)
    }
  }

  /// Two descriptors that name each other as parent, written by hand (qemu refuses to make
  /// them). The CIDs match, so only the loop detection can stop the chain.
  @Test("Two links that name each other as parent")
  func loop() throws {
    try withTemporaryFolder { folder in
      for (name, cid, other, otherCID) in [("a", "aaaaaaaa", "b", "bbbbbbbb"), ("b", "bbbbbbbb", "a", "aaaaaaaa")] {
        let descriptor = """
          # Disk DescriptorFile
          version=1
          CID=\(cid)
          parentCID=\(otherCID)
          createType="monolithicFlat"
          parentFileNameHint="\(other).vmdk"

          # Extent description
          RW 2048 FLAT "\(name)-flat.vmdk" 0

          """
        try descriptor.write(toFile: "\(folder)/\(name).vmdk", atomically: false, encoding: .utf8)
        #expect(FileManager.default.createFile(atPath: "\(folder)/\(name)-flat.vmdk", contents: Data(count: 1 << 20)))
      }
      let error = expectVMDKError(.chainLoop) { _ = try Disk.open("\(folder)/a.vmdk") }
      #expect(error?.message.contains("a.vmdk") == true, "\(String(describing: error))")
    }
  }
}

/// A CID as the library prints it: 8 lowercase hex digits.
private func eightHexDigits(_ cid: String) -> String {
  String(repeating: "0", count: max(0, 8 - cid.count)) + cid.lowercased()
}
