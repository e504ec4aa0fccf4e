// Builders for the pure tests: disks and file systems as bytes in memory, to be patched.
import Testing
import VMDKBlock

@testable import VMDKFiles

/// Writes little-endian values into a byte array.
extension Array where Element == UInt8 {
  mutating func put16(_ o: Int, _ v: UInt16) {
    self[o] = UInt8(v & 0xFF)
    self[o + 1] = UInt8(v >> 8)
  }
  mutating func put32(_ o: Int, _ v: UInt32) {
    for i in 0..<4 { self[o + i] = UInt8((v >> (8 * UInt32(i))) & 0xFF) }
  }
  mutating func put64(_ o: Int, _ v: UInt64) {
    for i in 0..<8 { self[o + i] = UInt8((v >> (8 * UInt64(i))) & 0xFF) }
  }
}

/// Runs `body`, which must throw a VMDKError with `code`.
@discardableResult
func expectError(
  _ code: VMDKError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> VMDKError? {
  do {
    try body()
    Issue.record("expected \(code), nothing was thrown", sourceLocation: sourceLocation)
  } catch let e as VMDKError {
    #expect(e.code == code, "wrong error: \(e)", sourceLocation: sourceLocation)
    return e
  } catch {
    Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
  }
  return nil
}
