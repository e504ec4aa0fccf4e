// What every guest file-system parser reads bytes with: little-endian fields by offset over a
// buffer, where an offset outside the buffer reads as 0 (so that no offset a guest chose can
// trap; the parsers check lengths before they rely on a field), and the typed errors they
// throw, each prefixed with the file system's name.
import VMDKBlock

/// A read-only window on bytes, read by offset; offsets outside read as 0.
struct GuestBytes {
  let bytes: [UInt8]
  /// Where `bytes[0]` sits in the volume, for error messages.
  let volumeOffset: UInt64

  init(_ bytes: [UInt8], volumeOffset: UInt64 = 0) {
    self.bytes = bytes
    self.volumeOffset = volumeOffset
  }

  var count: Int { bytes.count }

  /// True when `count` bytes from `o` lie inside the buffer.
  func has(_ o: Int, _ count: Int) -> Bool {
    o >= 0 && count >= 0 && o <= bytes.count && count <= bytes.count - o
  }

  func u8(_ o: Int) -> UInt8 { o >= 0 && o < bytes.count ? bytes[o] : 0 }

  func u16(_ o: Int) -> UInt16 {
    guard has(o, 2) else { return 0 }
    return UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8
  }

  func u32(_ o: Int) -> UInt32 {
    guard has(o, 4) else { return 0 }
    return UInt32(u16(o)) | UInt32(u16(o + 2)) << 16
  }

  func u64(_ o: Int) -> UInt64 {
    guard has(o, 8) else { return 0 }
    return UInt64(u32(o)) | UInt64(u32(o + 4)) << 32
  }

  func i64(_ o: Int) -> Int64 { Int64(bitPattern: u64(o)) }

  /// `count` bytes from `o`, clipped to the buffer.
  func slice(_ o: Int, _ count: Int) -> [UInt8] {
    guard o >= 0, count > 0, o < bytes.count else { return [] }
    return Array(bytes[o..<(o + min(count, bytes.count - o))])
  }

  /// The volume offset of byte `o`, for an error.
  func at(_ o: Int) -> UInt64 { volumeOffset &+ UInt64(max(0, o)) }
}

/// The errors of one file-system reader: metadata that contradicts itself, caps, and features
/// it does not read. A reader declares `enum XError: GuestFileSystemErrors { static let name }`.
protocol GuestFileSystemErrors {
  static var name: String { get }
}

extension GuestFileSystemErrors {
  static func corrupt(_ message: String, offset: UInt64? = nil) -> VMDKError {
    VMDKError(.corruptFileSystem, "\(name): " + message, offset: offset)
  }
  static func limit(_ message: String, offset: UInt64? = nil) -> VMDKError {
    VMDKError(.fileSystemLimit, "\(name): " + message, offset: offset)
  }
  static func unsupported(_ message: String, offset: UInt64? = nil) -> VMDKError {
    VMDKError(.notSupported, "\(name): " + message, offset: offset)
  }
}
