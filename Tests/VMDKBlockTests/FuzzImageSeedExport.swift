// Whole small images of every variant, and chains of two, as seeds of the images fuzz target
// (Fuzz/FuzzImages.swift), in its input format: the disk's bytes, then for each further file
// a line `\n=====FILE NAME\n` and its bytes. Written with
//
//   VMDK_FUZZ_IMAGE_SEEDS=$PWD/Fuzz/seeds-images swift test --filter FuzzImageSeedExport
//
// and otherwise checked against the copies kept in git. Each seed is under 64 KiB (the
// target's input cap): tiny capacities and 4 KiB grains.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

@Suite struct FuzzImageSeedExport {
  static let folder = ProcessInfo.processInfo.environment["VMDK_FUZZ_IMAGE_SEEDS"]

  /// Joins files in the target's input format; the first is the disk opened.
  static func pack(_ first: [UInt8], _ rest: [(String, [UInt8])] = []) -> [UInt8] {
    var out = first
    for (name, bytes) in rest { out += Array("\n=====FILE \(name)\n".utf8) + bytes }
    return out
  }

  static func sparse(
    capacity: UInt64 = 256, grains: [UInt64], zeroed: Set<UInt64> = [], descriptor: String?
  ) -> [UInt8] {
    var s = SparseImage()
    s.capacitySectors = capacity
    s.grainSectors = 8
    s.descriptor = descriptor
    s.fill(grains)
    s.zeroedGrains = zeroed
    return s.build().bytes
  }

  static func seeds() -> [(name: String, bytes: [UInt8])] {
    let mono = descriptorText(createType: "monolithicSparse", extents: [#"RW 256 SPARSE "disk.vmdk""#])
    var stream = StreamImage()
    stream.capacitySectors = 256
    stream.grainSectors = 8
    stream.overheadSectors = 8
    stream.descriptor = descriptorText(createType: "streamOptimized", extents: [#"RDONLY 256 SPARSE "disk.vmdk""#])
    stream.fill([0, 5])
    var cowd = COWDImage()
    cowd.capacitySectors = 64
    cowd.fill([0, 3, 9])
    var se = SESparseImage()
    se.capacitySectors = 256
    se.fill([0, 7])
    se.zeroGrains = [3]
    se.unmappedGrains = [4]
    let flat = Pattern.bytes(startingAt: 0, count: 16 << 10)
    let parentDescriptor = descriptorText(
      createType: "monolithicSparse", cid: "0000000b", extents: [#"RW 256 SPARSE "base.vmdk""#])
    let childDescriptor = descriptorText(
      createType: "monolithicSparse", cid: "0000000a", parentCID: "0000000b", parentHint: "base.vmdk",
      extents: [#"RW 256 SPARSE "disk.vmdk""#])
    return [
      ("monolithicSparse", sparse(grains: [0, 3], zeroed: [5], descriptor: mono)),
      ("streamOptimized", stream.build().bytes),
      (
        "twoGbMaxExtentSparse",
        pack(
          Array(
            descriptorText(
              createType: "twoGbMaxExtentSparse",
              extents: [#"RW 128 SPARSE "s001.vmdk""#, #"RW 128 SPARSE "s002.vmdk""#]
            ).utf8),
          [
            ("s001.vmdk", sparse(capacity: 128, grains: [1], descriptor: nil)),
            ("s002.vmdk", sparse(capacity: 128, grains: [0, 15], descriptor: nil)),
          ])
      ),
      (
        "monolithicFlat",
        pack(
          Array(descriptorText(createType: "monolithicFlat", extents: [#"RW 32 FLAT "flat.vmdk" 0"#]).utf8),
          [("flat.vmdk", flat)])
      ),
      (
        "vmfs",
        pack(
          Array(descriptorText(createType: "vmfs", extents: [#"RW 32 VMFS "vmfs-flat.vmdk""#]).utf8),
          [("vmfs-flat.vmdk", flat)])
      ),
      ("cowd", cowd.build().bytes),
      (
        "seSparse",
        pack(
          Array(descriptorText(createType: "seSparse", extents: [#"RW 256 SESPARSE "se.vmdk""#]).utf8),
          [("se.vmdk", se.build().bytes)])
      ),
      (
        "chain-sparse-over-sparse",
        pack(
          sparse(grains: [1, 4], descriptor: childDescriptor),
          [("base.vmdk", sparse(grains: [0, 1, 2], descriptor: parentDescriptor))])
      ),
      (
        "chain-cowd-over-vmfs",
        pack(
          Array(
            descriptorText(
              createType: "vmfsSparse", cid: "0000000a", parentCID: "0000000b", parentHint: "base.vmdk",
              extents: [#"RW 64 VMFSSPARSE "delta.vmdk""#]
            ).utf8),
          [
            ("delta.vmdk", cowd.build().bytes),
            (
              "base.vmdk",
              Array(
                descriptorText(createType: "vmfs", cid: "0000000b", extents: [#"RW 64 VMFS "base-flat.vmdk""#]).utf8)
            ),
            ("base-flat.vmdk", Pattern.bytes(startingAt: 0, count: 32 << 10, seed: 9)),
          ])
      ),
      (
        "chain-sesparse-over-stream",
        pack(
          Array(
            descriptorText(
              createType: "seSparse", cid: "0000000a", parentCID: "fffffffe", parentHint: "base.vmdk",
              extents: [#"RW 256 SESPARSE "se.vmdk""#]
            ).utf8),
          [("se.vmdk", se.build().bytes), ("base.vmdk", stream.build().bytes)])
      ),
    ]
  }

  /// Every seed opens and reads through the block layer (so the fuzzer starts from valid
  /// images), and the copies in Fuzz/seeds-images are current.
  @Test func seedsAreCurrent() throws {
    let dir =
      Self.folder
      ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("Fuzz/seeds-images").path
    for (name, bytes) in Self.seeds() {
      #expect(bytes.count < 64 << 10, "\(name): \(bytes.count) bytes")
      let disk = try FuzzImageOpener.open(bytes)
      _ = try disk.digest()
      #expect(try !disk.blockStatus().isEmpty, "\(name)")
      if Self.folder != nil {
        try Data(bytes).write(to: URL(fileURLWithPath: dir).appendingPathComponent(name))
      } else {
        let kept = try Data(contentsOf: URL(fileURLWithPath: dir).appendingPathComponent(name))
        #expect([UInt8](kept) == bytes, "Fuzz/seeds-images/\(name) is stale")
      }
    }
  }
}

/// Opens an input of the images fuzz target the way the target does (files in memory).
enum FuzzImageOpener {
  struct Locator: StoreLocator {
    let files: [String: [UInt8]]
    var transport: Transport { .file }
    func open(_ location: String, writable: Bool) throws -> any ByteStore {
      guard let bytes = files[location] else { throw VMDKError(.fileNotFound, "not in the input", file: location) }
      return MemoryStore(name: location, bytes: bytes)
    }
    func resolve(
      _ name: String, from descriptor: String, allowExternal: Bool, what: String, missingCode: VMDKError.Code
    ) throws -> String {
      guard files["/m/" + name] != nil else {
        throw VMDKError(missingCode, "\(name) not in the input", file: descriptor)
      }
      return "/m/" + name
    }
    func canonical(_ location: String) -> String { location }
  }

  /// Splits as the target does: the disk, then `\n=====FILE NAME\n` and each file's bytes.
  static func split(_ bytes: [UInt8]) -> [String: [UInt8]] {
    let sep = Array("\n=====FILE ".utf8)
    var files: [String: [UInt8]] = [:]
    var name = "disk.vmdk"
    var start = 0
    var i = 0
    while i + sep.count <= bytes.count {
      if bytes[i] == sep[0], Array(bytes[i..<(i + sep.count)]) == sep,
        let nl = bytes[(i + sep.count)...].prefix(65).firstIndex(of: 0x0A), nl > i + sep.count
      {
        files["/m/" + name] = Array(bytes[start..<i])
        name = String(decoding: bytes[(i + sep.count)..<nl], as: UTF8.self)
        start = nl + 1
        i = start
        if files.count >= 8 { break }
        continue
      }
      i += 1
    }
    if files["/m/" + name] == nil { files["/m/" + name] = Array(bytes[start...]) }
    return files
  }

  static func open(_ bytes: [UInt8], singleLink: Bool = false) throws -> Disk {
    var options = OpenOptions()
    options.format = .vmdk
    options.singleLink = singleLink
    return try Disk.open("/m/disk.vmdk", locator: Locator(files: split(bytes)), options: options)
  }
}
