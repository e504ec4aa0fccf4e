// Writes the pieces of the builders' images that the fuzz target parses (headers, embedded
// descriptors, stream tails, markers, zlib grains, COWD and seSparse headers) as libFuzzer
// seeds, and checks that the copies kept in git are current. To write them again:
//
//   VMDK_FUZZ_SEEDS=$PWD/Fuzz/seeds swift test --filter FuzzSeedExport
//
// Fuzz/seeds is kept in git, so the fuzzer starts from valid structures of every kind.

import Foundation
import Testing
import VMDKFormat

@Suite struct FuzzSeedExport {
  static let folder = ProcessInfo.processInfo.environment["VMDK_FUZZ_SEEDS"]

  static func seeds() -> [(name: String, bytes: [UInt8])] {
    var sparse = SparseImage()
    sparse.fill([0, 5])
    sparse.zeroedGrains = [7]
    let s = sparse.build()
    var stream = StreamImage()
    stream.fill([0, 3])
    let t = stream.build()
    var cowd = COWDImage()
    cowd.fill([0])
    let c = cowd.build()
    var se = SESparseImage()
    se.fill([0])
    let e = se.build()
    let marker = t.markerOffsets[0]!
    let zlibSize = Int(try! StreamMarker(parsing: Array(t.bytes[marker..<(marker + 12)])).size)
    return [
      ("builder-sparse-header", Array(s.bytes.prefix(512))),
      // The text and a little of its NUL padding: the fuzzer's inputs are at most 4 KiB.
      ("builder-sparse-descriptor", Array(s.bytes[512...].prefix { $0 != 0 }) + [UInt8](repeating: 0, count: 64)),
      ("builder-stream-header", Array(t.bytes.prefix(512))),
      ("builder-stream-tail", Array(t.bytes.suffix(1536))),
      ("builder-stream-grain-marker", Array(t.bytes[marker..<(marker + 512)])),
      ("builder-stream-zlib", Array(t.bytes[(marker + 12)..<(marker + 12 + zlibSize)])),
      ("builder-stream-gt-marker", Array(t.bytes[(t.gtOffsets[0]! - 512)..<t.gtOffsets[0]!])),
      ("builder-cowd-header", Array(c.bytes.prefix(COWDHeader.size))),
      ("builder-sesparse-header", Array(e.bytes.prefix(512))),
      ("builder-sesparse-volatile", Array(e.bytes[512..<1024])),
      (
        "builder-descriptor-chain",
        Array(
          descriptorText(
            createType: "seSparse", cid: "0000000a", parentCID: "0000000b", parentHint: "../base.vmdk",
            extents: [#"RW 33000 SESPARSE "snap-sesparse.vmdk""#]
          ).utf8)
      ),
      (
        "builder-descriptor-extents",
        Array(
          descriptorText(
            createType: "custom",
            extents: [
              #"RDONLY 8 FLAT "a b.vmdk" 16"#, "RW 16 ZERO", #"NOACCESS 8 VMFS "v.vmdk""#,
              #"RW 2048 VMFSRDM "r.vmdk""#, #"RW 10000 VMFSSPARSE "d.vmdk""#,
            ]
          ).replacingOccurrences(of: "\n", with: "\r\n").utf8)
      ),
    ]
  }

  /// With VMDK_FUZZ_SEEDS set, writes the seeds there; otherwise checks that the seeds kept
  /// in Fuzz/seeds are the ones the builders make today (so the fuzzer starts from current
  /// structures).
  @Test func seedsAreCurrent() throws {
    if let dir = Self.folder {
      try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
      for (name, bytes) in Self.seeds() {
        try Data(bytes).write(to: URL(fileURLWithPath: dir).appendingPathComponent(name))
      }
      return
    }
    let committed = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("Fuzz/seeds")
    for (name, bytes) in Self.seeds() {
      let kept = try Data(contentsOf: committed.appendingPathComponent(name))
      #expect(Array(kept) == bytes, "Fuzz/seeds/\(name) is stale: regenerate with VMDK_FUZZ_SEEDS=$PWD/Fuzz/seeds")
    }
  }
}
