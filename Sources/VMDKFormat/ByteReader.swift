// Bounds-checked little-endian field reads from a byte buffer. Every on-disk field is read
// through here by its offset; nothing is loaded as a whole struct.

/// Reads little-endian integers at fixed offsets of a byte array, failing with
/// `FormatError.truncated` (naming the field) when the bytes end first.
public struct ByteReader: Sendable {
  public let bytes: [UInt8]
  /// Where `bytes[0]` sits in the file, so errors carry file offsets.
  public let baseOffset: UInt64

  public init(_ bytes: [UInt8], baseOffset: UInt64 = 0) {
    self.bytes = bytes
    self.baseOffset = baseOffset
  }

  @inline(__always)
  private func check(_ offset: Int, _ size: Int, _ field: String) throws {
    guard offset >= 0, offset <= bytes.count, size <= bytes.count - offset else {
      throw FormatError(
        .truncated, offset: baseOffset + UInt64(max(offset, 0)),
        "\(field): needs \(size) bytes at offset \(offset), only \(max(bytes.count - offset, 0)) present"
      )
    }
  }

  public func u8(_ offset: Int, _ field: String) throws -> UInt8 {
    try check(offset, 1, field)
    return bytes[offset]
  }

  public func u16(_ offset: Int, _ field: String) throws -> UInt16 {
    try check(offset, 2, field)
    return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
  }

  public func u32(_ offset: Int, _ field: String) throws -> UInt32 {
    try check(offset, 4, field)
    var v: UInt32 = 0
    for i in 0..<4 { v |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
    return v
  }

  public func u64(_ offset: Int, _ field: String) throws -> UInt64 {
    try check(offset, 8, field)
    var v: UInt64 = 0
    for i in 0..<8 { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
    return v
  }

  public func slice(_ offset: Int, _ count: Int, _ field: String) throws -> ArraySlice<UInt8> {
    try check(offset, count, field)
    return bytes[offset..<(offset + count)]
  }
}

/// Little-endian field writes into a byte array (used by writers and by tests that build
/// hostile images).
public struct ByteWriter: Sendable {
  public var bytes: [UInt8]

  public init(count: Int) { bytes = [UInt8](repeating: 0, count: count) }

  public mutating func u8(_ offset: Int, _ v: UInt8) { bytes[offset] = v }
  public mutating func u16(_ offset: Int, _ v: UInt16) {
    for i in 0..<2 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt16(i))) }
  }
  public mutating func u32(_ offset: Int, _ v: UInt32) {
    for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
  }
  public mutating func u64(_ offset: Int, _ v: UInt64) {
    for i in 0..<8 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
  }
}

/// Loads little-endian integers from raw memory on hot paths (grain tables), with no checks
/// beyond the caller's.
@inline(__always)
func loadLE32(_ p: UnsafeRawBufferPointer, _ index: Int) -> UInt32 {
  UInt32(littleEndian: p.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
}
