// The libdeflate inflater behaves as zlib's did: same results, and on damaged input the same
// error code, offset and message (it falls back to zlib to describe the damage).

import Testing
import VMDKFormat
import VMDKTransport

@testable import VMDKBlock

@Suite struct GrainInflaterTests {
  static let grain: [UInt8] = (0..<65536).map { UInt8(truncatingIfNeeded: $0 / 300 &* 7 &+ $0 % 13) }

  static func compressed() -> [UInt8] {
    var out = [UInt8](repeating: 0, count: GrainCompression.bound(grain.count))
    let n = out.withUnsafeMutableBytes { o in grain.withUnsafeBytes { GrainCompression.deflate($0, into: o, level: 6)! }
    }
    return Array(out.prefix(n))
  }

  /// Runs both inflaters on `input` with an output of `outputBytes`.
  static func both(_ input: [UInt8], outputBytes: Int = 65536) -> [Result<[UInt8], FormatError>] {
    [GrainInflater.inflate, GrainCompression.inflate].map { f in
      var out = [UInt8](repeating: 0, count: outputBytes)
      do {
        let n = try out.withUnsafeMutableBytes { o in try input.withUnsafeBytes { try f($0, o, 4096) } }
        return .success(Array(out.prefix(n)))
      } catch let e as FormatError {
        return .failure(e)
      } catch {
        Issue.record("unexpected \(error)")
        return .success([])
      }
    }
  }

  @Test func inflatesLikeZlib() {
    let z = Self.compressed()
    let r = Self.both(z + [1, 2, 3])  // bytes after the stream are ignored, as zlib does
    #expect(r[0] == .success(Self.grain))
    #expect(r[0] == r[1])
  }

  static let damages: [(String, @Sendable ([UInt8]) -> ([UInt8], Int))] = [
    ("truncated stream", { z in (Array(z.prefix(z.count / 2)), 65536) }),
    ("output too small", { z in (z, 1000) }),
    ("bad checksum", { z in (Array(z.dropLast(1)) + [z.last! ^ 0xFF], 65536) }),
    ("no zlib header", { z in ([0, 0] + z.dropFirst(2), 65536) }),
    (
      "corrupt data",
      { z in (z.enumerated().map { $0.offset >= 20 && $0.offset < 40 ? $0.element ^ 0x5A : $0.element }, 65536) }
    ),
    ("empty", { _ in ([], 65536) }),
  ]

  @Test(arguments: damages.map(\.0))
  func errorsLikeZlib(_ name: String) throws {
    let damage = try #require(Self.damages.first { $0.0 == name }?.1)
    let (input, outputBytes) = damage(Self.compressed())
    let r = Self.both(input, outputBytes: outputBytes)
    guard case .failure(let ours) = r[0], case .failure(let zlib) = r[1] else {
      Issue.record("\(name): expected both to fail: \(r.map { (try? $0.get())?.count ?? -1 })")
      return
    }
    #expect(ours.kind == .corruptCompressedData)
    #expect(ours == zlib, "\(name): \(ours) vs \(zlib)")
  }
}
