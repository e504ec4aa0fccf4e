// GrainCompressor on its own: batches come back in order whatever the thread count, records
// are grain markers whose zlib streams inflate to the grain, all-zero grains get no record,
// and an error from the emitting stage comes out of the call that was running, after which
// shutdown still returns.

import Testing
import VMDKFormat
import VMDKTransport

@testable import VMDKBlock

@Suite(.timeLimit(.minutes(20))) struct GrainCompressorTests {
  /// Grain `g` of the test input: zeros when g % 5 == 4, else bytes derived from g.
  static func fill(_ slot: UnsafeMutableRawBufferPointer, grain g: UInt64) {
    for i in 0..<slot.count {
      slot[i] = g % 5 == 4 ? 0 : UInt8(truncatingIfNeeded: (UInt64(i) / 97) &+ g) | 1
    }
  }

  @Test(arguments: [0, 1, 3, 16])
  func emitsInOrder(threads: Int) throws {
    var seen: [UInt64] = []
    var records: [(UInt64, [UInt8])] = []
    let c = GrainCompressor(grainSectors: 16, level: 6, threads: threads) { batch in
      for i in 0..<batch.count {
        seen.append(batch.grainIndex[i])
        let n = batch.recordBytes[i]
        if n > 0 {
          records.append(
            (batch.grainIndex[i], Array(UnsafeRawBufferPointer(start: batch.outputSlot(i).baseAddress, count: n))))
        }
      }
    }
    defer { c.shutdown() }
    // Grain numbers with gaps, across many batches (256 grains of 8 KiB per batch).
    let grains = (0..<1500).map { UInt64($0) * 3 }
    for g in grains { Self.fill(try c.slot(for: g), grain: g) }
    try c.finish()
    #expect(seen == grains)
    #expect(records.count == grains.filter { $0 % 5 != 4 }.count)
    for (g, r) in records.prefix(300) {
      let marker = try StreamMarker(parsing: Array(r[0..<12]))
      #expect(marker.value == g * 16)
      #expect(r.count % 512 == 0 && r.count >= 12 + Int(marker.size))
      var expected = [UInt8](repeating: 0, count: 8192)
      expected.withUnsafeMutableBytes { Self.fill($0, grain: g) }
      var out = [UInt8](repeating: 0, count: 8192)
      let n = try out.withUnsafeMutableBytes { o in
        try r.withUnsafeBytes {
          try GrainInflater.inflate(
            UnsafeRawBufferPointer(rebasing: $0[12..<(12 + Int(marker.size))]), into: o, offset: 0)
        }
      }
      #expect(n == 8192 && out == expected, "grain \(g)")
    }
  }

  @Test(arguments: [0, 2])
  func emitErrorsPropagate(threads: Int) throws {
    var batches = 0
    let c = GrainCompressor(grainSectors: 128, level: 1, threads: threads) { _ in
      batches += 1
      if batches == 2 { throw VMDKError(.diskFull, "test: the disk is full") }
    }
    let error = #expect(throws: VMDKError.self) {
      for g in 0..<UInt64(400) { Self.fill(try c.slot(for: g), grain: g) }
      try c.finish()
    }
    #expect(error?.code == .diskFull)
    c.shutdown()
    c.shutdown()
    // With the workers gone, more work is refused rather than waited for.
    if threads > 0 {
      #expect(throws: VMDKError.self) {
        Self.fill(try c.slot(for: 1000), grain: 1000)
        try c.finish()
      }
    }
  }
}
