// Regression tests for the inputs the libFuzzer target (Fuzz/) found. Each finding is kept in
// Fixtures/ and replayed here through every parser the target calls, the same way, so a
// regression traps this test run instead of waiting for the next fuzzing session. Findings
// with a specific cause also get a test that pins the typed error.

import Testing
import VMDKFormat

@Suite struct FuzzFixtureTests {
  /// The file sizes the fuzz target checks against: the input's length, and the size its last
  /// 8 bytes claim (a caller's size need not match the bytes it read).
  static func fileSizes(_ bytes: [UInt8]) -> [UInt64] {
    guard bytes.count >= 8 else { return [UInt64(bytes.count)] }
    let claimed = bytes.suffix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    return [UInt64(bytes.count), claimed]
  }

  /// What Fuzz/FuzzParsers.swift does with one input; every failure must be a FormatError.
  static func replay(_ bytes: [UInt8]) {
    func typed(_ body: () throws -> Void) {
      do { try body() } catch { #expect(error is FormatError, "\(error)") }
    }
    let sizes = fileSizes(bytes)
    _ = Descriptor.looksLikeDescriptor(bytes)
    typed { _ = try Descriptor(parsing: bytes).serialized() }
    typed {
      let h = try SparseExtentHeader(parsing: bytes)
      for size in sizes { typed { _ = try h.validate(fileSize: size) } }
    }
    for size in sizes { typed { _ = try StreamFooter.parse(tail: bytes, fileSize: size) } }
    typed { _ = try StreamMarker(parsing: bytes) }
    typed {
      let c = try COWDHeader(parsing: bytes)
      for size in sizes { typed { try c.validate(fileSize: size) } }
    }
    for size in sizes { typed { _ = try SESparseConstHeader(parsing: bytes, fileSize: size) } }
    typed { try SESparseVolatileHeader.validate(bytes, baseOffset: 0) }
    var grain = [UInt8](repeating: 0, count: 64 * 1024)
    typed {
      _ = try bytes.withUnsafeBytes { src in
        try grain.withUnsafeMutableBytes { try GrainCompression.inflate(src, into: $0, offset: 0) }
      }
    }
  }

  @Test func fixturesArePresent() {
    #expect(!Fixtures.names.isEmpty, "the fuzz findings live in \(Fixtures.folder.path)")
  }

  @Test(arguments: Fixtures.names)
  func replaysWithoutTrapping(name: String) throws {
    Self.replay(try Fixtures.load(name))
  }

  /// Finding 1 (first seconds of the first run, on the header seed of
  /// vdiskmanager/monolithicSparse.vmdk): `StreamFooter.parse(tail:fileSize:)` computed
  /// `fileSize - tail.count` before checking either, so a 512-byte header with a claimed
  /// file size of 0 trapped on arithmetic overflow. Fixed: a short file is `.invalidMarker`.
  @Test func streamFooterWithFileSizeBelowTheTail() throws {
    let bytes = try Fixtures.load("crash-streamfooter-filesize-below-tail.bin")
    #expect(bytes.count == 512)
    expectFormatError(.invalidMarker, offset: 0, mentioning: "too short") {
      _ = try StreamFooter.parse(tail: bytes, fileSize: 0)
    }
  }
}
