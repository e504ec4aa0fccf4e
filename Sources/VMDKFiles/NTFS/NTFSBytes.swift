// Little-endian field access for the NTFS parsers and the errors they throw. Every parser
// checks that a structure fits its buffer before it relies on a field; the accessors also
// answer 0 outside the buffer, so that no offset a guest chose can trap.
import VMDKBlock

/// A read-only window on bytes, read by offset; offsets outside read as 0.
struct NTFSBytes {
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

  /// `units` UTF-16 code units from `o`, clipped to the buffer.
  func utf16(_ o: Int, units: Int) -> [UInt16] {
    guard units > 0 else { return [] }
    var out: [UInt16] = []
    out.reserveCapacity(units)
    for i in 0..<units {
      let p = o + 2 * i
      guard has(p, 2) else { break }
      out.append(u16(p))
    }
    return out
  }

  /// The volume offset of byte `o`, for an error.
  func at(_ o: Int) -> UInt64 { volumeOffset &+ UInt64(max(0, o)) }
}

/// UTF-16 as the guest stored it, converted to UTF-8 (unpaired surrogates become U+FFFD).
func ntfsUTF8(_ units: [UInt16]) -> [UInt8] {
  Array(String(decoding: units, as: UTF16.self).utf8)
}

/// The errors of the NTFS reader: metadata that contradicts itself, caps, and features it
/// does not read.
enum NTFSError {
  static func corrupt(_ message: String, offset: UInt64? = nil) -> VMDKError {
    VMDKError(.corruptFileSystem, "ntfs: " + message, offset: offset)
  }
  static func limit(_ message: String, offset: UInt64? = nil) -> VMDKError {
    VMDKError(.fileSystemLimit, "ntfs: " + message, offset: offset)
  }
  static func unsupported(_ message: String, offset: UInt64? = nil) -> VMDKError {
    VMDKError(.notSupported, "ntfs: " + message, offset: offset)
  }
}

/// NTFS's FILETIME (100 ns ticks since 1601-01-01 UTC) as a Unix time, exactly; the field is
/// signed in ntfs-3g, and any u64 converts without overflow.
func ntfsTime(_ ft: UInt64) -> FileTime {
  let ticks = Int64(bitPattern: ft)
  // Floor division, so that times before 1601 (negative ticks) keep 0 <= ns < 1 s.
  var seconds = ticks / 10_000_000
  var rest = ticks % 10_000_000
  if rest < 0 {
    seconds -= 1
    rest += 10_000_000
  }
  return FileTime(seconds: seconds - 11_644_473_600, nanoseconds: UInt32(rest) * 100)
}
