// Writes through the library into images qemu-img made, judged by qemu: `qemu-img check`
// finds no errors, `qemu-img convert -O raw` gives the digest of an in-memory model of the
// writes, and the same writes done by qemu-io into a twin image give the same disk
// (`qemu-img compare`). Offsets and lengths are odd and cross grains, grain tables and, for
// the split subformats, the 2 GiB extent boundary. A 2-link chain (`-b`) checks copy-on-write
// of partial grains from the parent.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

/// The virtual disk as the writes made it: 64 KiB chunks, zeros where none was written.
struct SparseModel {
  let capacity: UInt64
  var chunks: [UInt64: [UInt8]] = [:]
  static let chunk: UInt64 = 65536

  init(capacity: UInt64) { self.capacity = capacity }

  mutating func write(at offset: UInt64, _ bytes: [UInt8]) {
    var done = 0
    while done < bytes.count {
      let at = offset + UInt64(done)
      let index = at / Self.chunk
      let within = Int(at % Self.chunk)
      let n = min(bytes.count - done, Int(Self.chunk) - within)
      var c = chunks[index] ?? [UInt8](repeating: 0, count: Int(Self.chunk))
      c.replaceSubrange(within..<(within + n), with: bytes[done..<(done + n)])
      chunks[index] = c
      done += n
    }
  }

  func read(at offset: UInt64, count: Int) -> [UInt8] {
    var out: [UInt8] = []
    var at = offset
    while out.count < count {
      let index = at / Self.chunk
      let within = Int(at % Self.chunk)
      let n = min(count - out.count, Int(Self.chunk) - within)
      if let c = chunks[index] { out += c[within..<(within + n)] } else { out += repeatElement(0, count: n) }
      at += UInt64(n)
    }
    return out
  }

  var sha256: String {
    let context = DigestContext(.sha256)
    let zeros = [UInt8](repeating: 0, count: Int(Self.chunk))
    var at: UInt64 = 0
    while at < capacity {
      let n = Int(min(Self.chunk, capacity - at))
      let c = chunks[at / Self.chunk] ?? zeros
      c.withUnsafeBytes { context.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
      at += UInt64(n)
    }
    return context.finalHex()
  }
}

/// One write: `count` bytes of `byte` at `offset` (qemu-io's `write -P` writes one byte value).
struct PatternWrite: Sendable {
  var offset: UInt64
  var count: Int
  var byte: UInt8
  var qemuIO: String { "write -P 0x\(String(byte, radix: 16)) \(offset) \(count)" }
}

/// A seeded list of writes: odd offsets and lengths, some on grain, table and extent edges.
func randomWrites(capacity: UInt64, seed: UInt64, count: Int = 60) -> [PatternWrite] {
  var state = seed
  func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  // Edges: grains (64 KiB), grain tables (32 MiB), extents (2 GiB) and the disk's end.
  var edges: [UInt64] = [65536, 3 * 65536, 32 << 20, capacity]
  if capacity > 2 << 30 { edges += [2 << 30, (2 << 30) + 65536] }
  var out: [PatternWrite] = []
  for i in 0..<count {
    let length = Int(i % 7 == 0 ? 65536 + next() % 200_000 : 1 + next() % 9000)
    var offset: UInt64
    if i % 3 == 0 {
      let edge = edges[Int(next() % UInt64(edges.count))]
      offset = edge >= UInt64(length / 2) ? edge - UInt64(length / 2) : 0
    } else {
      offset = next() % capacity
    }
    offset = min(offset, capacity - UInt64(length))
    out.append(PatternWrite(offset: offset, count: length, byte: UInt8(truncatingIfNeeded: i &* 29 &+ 3)))
  }
  return out
}

/// Applies `writes` with the library (one open) and to the model.
func writeWithLibrary(_ path: String, _ writes: [PatternWrite], model: inout SparseModel) throws {
  var options = OpenOptions()
  options.writable = true
  let disk = try Disk.open(path, options: options)
  for w in writes {
    let bytes = [UInt8](repeating: w.byte, count: w.count)
    try disk.write(at: w.offset, bytes)
    model.write(at: w.offset, bytes)
  }
  try disk.close()
}

/// `qemu-img check` must find nothing wrong.
func expectQemuCheckClean(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
  let r = try runProcess(try requireTool("qemu-img"), ["check", "-f", "vmdk", path])
  #expect(r.status == 0, "qemu-img check \(path): \(r.output)\(r.errorOutput)", sourceLocation: sourceLocation)
  #expect(r.output.contains("No errors were found"), "\(r.output)", sourceLocation: sourceLocation)
  #expect(!r.output.lowercased().contains("leak"), "\(r.output)", sourceLocation: sourceLocation)
}

/// `qemu-img compare` of two images must say identical.
func expectQemuSame(_ a: String, _ b: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
  let r = try runProcess(try requireTool("qemu-img"), ["compare", "-f", "vmdk", "-F", "vmdk", a, b])
  #expect(r.status == 0, "qemu-img compare: \(r.output)\(r.errorOutput)", sourceLocation: sourceLocation)
}

struct WriteRecipe: Sendable, CustomTestStringConvertible {
  var subformat: Subformat
  var capacity: UInt64
  var zeroedGrain = false
  var testDescription: String { "\(subformat.rawValue) \(capacity >> 20) MiB\(zeroedGrain ? " zeroed_grain" : "")" }
  var options: [String] { ["subformat=\(subformat.rawValue)"] + (zeroedGrain ? ["zeroed_grain=on"] : []) }
}

@Suite(.serialized, .timeLimit(.minutes(10))) struct WriteInteropTests {
  static let recipes: [WriteRecipe] = [
    WriteRecipe(subformat: .monolithicSparse, capacity: 256 << 20),
    WriteRecipe(subformat: .monolithicSparse, capacity: 96 << 20, zeroedGrain: true),
    WriteRecipe(subformat: .twoGbMaxExtentSparse, capacity: (2 << 30) + (64 << 20)),
    WriteRecipe(subformat: .monolithicFlat, capacity: 64 << 20),
    WriteRecipe(subformat: .twoGbMaxExtentFlat, capacity: (2 << 30) + (64 << 20)),
  ]

  @Test(arguments: recipes)
  func writesMatchModelAndQemuIO(recipe: WriteRecipe) throws {
    try withTemporaryFolder { folder in
      let ours = "\(folder)/ours.vmdk"
      let theirs = "\(folder)/theirs.vmdk"
      try Qemu.create(ours, size: recipe.capacity, options: recipe.options)
      try Qemu.create(theirs, size: recipe.capacity, options: recipe.options)
      var model = SparseModel(capacity: recipe.capacity)
      // Data written by qemu first, so that our writes also land on allocated grains; with
      // zeroed_grain, qemu then zeroes whole grains (entry 1) that our writes must allocate
      // over without bringing the old data back.
      var setup = [
        PatternWrite(offset: 0, count: 4 << 20, byte: 0x33),
        PatternWrite(offset: (32 << 20) - 65536, count: 3 * 65536, byte: 0x34),
      ]
      var setupCommands = setup.map(\.qemuIO)
      if recipe.zeroedGrain {
        setupCommands.append("write -z \(1 << 20) \(1 << 20)")
      }
      try Qemu.io(ours, setupCommands)
      try Qemu.io(theirs, setupCommands)
      for w in setup { model.write(at: w.offset, [UInt8](repeating: w.byte, count: w.count)) }
      if recipe.zeroedGrain {
        model.write(at: 1 << 20, [UInt8](repeating: 0, count: 1 << 20))
        // Partial writes into zeroed grains.
        setup = [
          PatternWrite(offset: (1 << 20) + 100, count: 1000, byte: 0x41),
          PatternWrite(offset: (1 << 20) + 65536 * 3 - 7, count: 70_000, byte: 0x42),
        ]
      } else {
        setup = []
      }
      // qemu's `write -z` over allocated grains leaves them leaked (entry 1, data orphaned):
      // what our writes must not add to.
      let leakedBefore = recipe.subformat.hasGrainTables ? try Disk.open(ours).check().leakedBytes : 0
      let writes = setup + randomWrites(capacity: recipe.capacity, seed: recipe.capacity ^ 0xA5)
      try writeWithLibrary(ours, writes, model: &model)
      try Qemu.io(theirs, writes.map(\.qemuIO))

      if recipe.subformat.hasGrainTables {
        try expectQemuCheckClean(ours)
        let report = try Disk.open(ours).check()
        #expect(report.problems.isEmpty, "\(report.problems)")
        #expect(report.leakedBytes == leakedBefore, "leaked \(report.leakedBytes), qemu left \(leakedBefore)")
      }
      let disk = try Disk.open(ours)
      for w in writes.prefix(10) {
        #expect(try disk.read(at: w.offset, count: w.count) == model.read(at: w.offset, count: w.count))
      }
      #expect(try Qemu.rawSHA256(ours, scratch: folder) == model.sha256)
      try expectQemuSame(ours, theirs)
    }
  }

  /// A child made with `-b` over a parent with data: partial-grain writes copy the rest of
  /// the grain from the parent, the parent stays as it was, qemu agrees.
  @Test func chainChildWrites() throws {
    try withTemporaryFolder { folder in
      let capacity: UInt64 = 64 << 20
      let base = "\(folder)/base.vmdk"
      try Qemu.create(base, size: capacity)
      let baseWrites = [
        PatternWrite(offset: 0, count: 1 << 20, byte: 0x21),
        PatternWrite(offset: (8 << 20) + 512, count: 300_000, byte: 0x22),
        PatternWrite(offset: (33 << 20) - 1000, count: 5000, byte: 0x23),
      ]
      try Qemu.io(base, baseWrites.map(\.qemuIO))
      var model = SparseModel(capacity: capacity)
      for w in baseWrites { model.write(at: w.offset, [UInt8](repeating: w.byte, count: w.count)) }
      let ours = "\(folder)/ours.vmdk"
      let theirs = "\(folder)/theirs.vmdk"
      for child in [ours, theirs] {
        try Qemu.img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", child)
      }
      let baseDigest = try fileDigest(base, .sha256)
      // Small writes inside the parent's grains, so each new grain is mostly parent data.
      let writes =
        [
          PatternWrite(offset: 700, count: 10, byte: 0x51),
          PatternWrite(offset: (8 << 20) + 65536 * 2 + 3, count: 1, byte: 0x52),
          PatternWrite(offset: (33 << 20) - 600, count: 1200, byte: 0x53),
        ] + randomWrites(capacity: capacity, seed: 7, count: 40)
      try writeWithLibrary(ours, writes, model: &model)
      try Qemu.io(theirs, writes.map(\.qemuIO))
      #expect(try fileDigest(base, .sha256) == baseDigest)
      try expectQemuCheckClean(ours)
      #expect(try Disk.open(ours).check().isClean)
      #expect(try Qemu.rawSHA256(ours, scratch: folder) == model.sha256)
      #expect(try Disk.open(ours).digest() == model.sha256)
      try expectQemuSame(ours, theirs)
      // The child still names its parent's CID (the parent was not written).
      let child = try Disk.open(ours)
      #expect(child.top.descriptor.parentCID == child.links[1].descriptor.cid)
    }
  }
}
