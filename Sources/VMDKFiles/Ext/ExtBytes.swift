// Little-endian field access over a byte buffer for the ext parsers, the errors they throw,
// and CRC-32C (metadata_csum). Every parser first checks that its buffer is long enough for
// the structure; the accessors here additionally answer 0 for a field outside the buffer, so
// that no offset a guest chose can trap.
import VMDKBlock

/// A read-only window on bytes, read by offset. Offsets outside the window read as 0; the
/// parsers check lengths before they rely on a field.
struct ExtBytes {
  let bytes: [UInt8]
  /// Where `bytes[0]` sits in the volume, for error messages.
  let volumeOffset: UInt64

  init(_ bytes: [UInt8], volumeOffset: UInt64 = 0) {
    self.bytes = bytes
    self.volumeOffset = volumeOffset
  }

  var count: Int { bytes.count }

  func u8(_ o: Int) -> UInt8 {
    o >= 0 && o < bytes.count ? bytes[o] : 0
  }

  func u16(_ o: Int) -> UInt16 {
    guard o >= 0, o <= bytes.count - 2 else { return 0 }
    return UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8
  }

  func u32(_ o: Int) -> UInt32 {
    guard o >= 0, o <= bytes.count - 4 else { return 0 }
    return UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16
      | UInt32(bytes[o + 3]) << 24
  }

  /// `count` bytes from `o`, clipped to the buffer.
  func slice(_ o: Int, _ count: Int) -> [UInt8] {
    guard o >= 0, count > 0, o < bytes.count else { return [] }
    let end = o + min(count, bytes.count - o)
    return Array(bytes[o..<end])
  }

  /// The volume offset of byte `o`, for an error.
  func at(_ o: Int) -> UInt64 {
    volumeOffset &+ UInt64(max(0, o))
  }
}

/// The errors of the ext reader: metadata that contradicts itself, and caps.
enum ExtError {
  static func corrupt(_ message: String, offset: UInt64?) -> VMDKError {
    VMDKError(.corruptFileSystem, "ext: " + message, offset: offset)
  }
  static func limit(_ message: String, offset: UInt64?) -> VMDKError {
    VMDKError(.fileSystemLimit, "ext: " + message, offset: offset)
  }
  static func unsupported(_ message: String, offset: UInt64?) -> VMDKError {
    VMDKError(.notSupported, "ext: " + message, offset: offset)
  }
}

/// CRC-32C (Castagnoli, reflected 0x82F63B78) as ext4 uses it: the caller passes the running
/// value (~0 to start) and no final inversion is applied (e2fsprogs `ext2fs_crc32c_le`).
enum ExtCRC32C {
  static let table: [UInt32] = (0..<256).map { n -> UInt32 in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
    return c
  }

  static func update(_ crc: UInt32, _ bytes: [UInt8], _ range: Range<Int>? = nil) -> UInt32 {
    let r = range ?? 0..<bytes.count
    var c = crc
    bytes.withUnsafeBufferPointer { p in
      table.withUnsafeBufferPointer { t in
        for i in r where i >= 0 && i < p.count {
          c = t[Int((c ^ UInt32(p[i])) & 0xFF)] ^ (c >> 8)
        }
      }
    }
    return c
  }

  static func update(_ crc: UInt32, le32 value: UInt32) -> UInt32 {
    update(crc, [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 24)])
  }
}
