// A fuzzed header must fail in milliseconds: nothing may be allocated, read or looped over in
// proportion to a header field before the field is checked against the file size and a cap.

import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

@Suite(.timeLimit(.minutes(20))) struct ResourceTests {
  /// Header values that ask for absurd work, and the error each must give.
  static let cases: [Named<(code: VMDKError.Code, change: @Sendable (inout SparseExtentHeader) -> Void)>] = [
    // 2^54 sectors at 64 KiB grains: 2^38 grain tables, far over the directory cap.
    Named(
      "capacity 2^54, directory past the end",
      (
        .capacityOverflow,
        { h in
          h.capacitySectors = 1 << 54
          h.gdOffsetSectors = 1 << 50
        }
      )),
    // 2^40 sectors at 4 MiB grains: 262144 tables, under the cap, so the directory's 1 MiB
    // must be found past the end of a small file rather than allocated.
    Named(
      "capacity 2^40 at the largest grain, directory past the end",
      (
        .offsetPastEnd,
        { h in
          h.capacitySectors = 1 << 40
          h.grainSectors = Limits.maxGrainSectors
          h.gdOffsetSectors = 1 << 20
        }
      )),
    Named("capacity 2^64-1", (.capacityOverflow, { $0.capacitySectors = .max })),
    Named("capacity 2^64-512", (.capacityOverflow, { $0.capacitySectors = .max - 511 })),
    Named(
      "capacity just past the byte-size cap",
      (.capacityOverflow, { $0.capacitySectors = Limits.maxCapacitySectors + 1 })),
    Named(
      "a 1 MiB embedded descriptor far past the end",
      (
        .offsetPastEnd,
        { h in
          h.descriptorOffsetSectors = 1 << 40
          h.descriptorSizeSectors = 2048
        }
      )),
  ]

  @Test(arguments: cases)
  func failsFast(_ c: Named<(code: VMDKError.Code, change: @Sendable (inout SparseExtentHeader) -> Void)>) throws {
    var image = SparseImage().build()
    image.header(c.value.change)
    let folder = try TempFolder()
    let path = try folder.write("fuzzed.vmdk", image.bytes)
    let clock = ContinuousClock()
    let elapsed = clock.measure { expectVMDKError(c.value.code, opening: path, file: "fuzzed.vmdk") }
    #expect(elapsed < .milliseconds(200), "took \(elapsed)")
  }
}
