// What only the NTFS parsers read on top of GuestBytes (UTF-16 names, FILETIME), and their
// error kind.
import VMDKBlock

/// The NTFS parsers' view of bytes (GuestBytes) and what only NTFS reads: UTF-16 names.
typealias NTFSBytes = GuestBytes

extension GuestBytes {
  /// `units` UTF-16 code units from `o`, clipped to the buffer.
  func utf16(_ o: Int, units: Int) -> [UInt16] {
    guard units > 0, o >= 0, o < bytes.count else { return [] }
    let n = min(units, (bytes.count - o) / 2)
    return bytes.withUnsafeBufferPointer { p in
      [UInt16](unsafeUninitializedCapacity: n) { out, count in
        for i in 0..<n { out[i] = UInt16(p[o + 2 * i]) | UInt16(p[o + 2 * i + 1]) << 8 }
        count = n
      }
    }
  }
}

extension GuestBytes {
  /// Writes `units` UTF-16LE code units from `o` (clipped to the buffer) as UTF-8 to `dst`,
  /// which has room for `3 * units` bytes (3 bytes a unit at most; a surrogate pair takes 4);
  /// returns the count written. Each unpaired surrogate becomes U+FFFD, as in `ntfsUTF8`.
  func writeUTF8(fromUTF16At o: Int, units: Int, to dst: UnsafeMutablePointer<UInt8>) -> Int {
    guard units > 0, o >= 0, o < bytes.count else { return 0 }
    let n = min(units, (bytes.count - o) / 2)
    return bytes.withUnsafeBufferPointer { p in
      let src = p.baseAddress! + o
      func unit(_ i: Int) -> UInt32 { UInt32(src[2 * i]) | UInt32(src[2 * i + 1]) << 8 }
      var w = 0
      var i = 0
      while i < n {
        var c = unit(i)
        i += 1
        if c < 0x80 {
          dst[w] = UInt8(truncatingIfNeeded: c)
          w += 1
          continue
        }
        if c & 0xF800 == 0xD800 {
          // A high surrogate followed by a low one is one scalar; any other surrogate is U+FFFD.
          if c < 0xDC00, i < n, unit(i) & 0xFC00 == 0xDC00 {
            c = 0x10000 + ((c - 0xD800) << 10) + (unit(i) - 0xDC00)
            i += 1
          } else {
            c = 0xFFFD
          }
        }
        if c < 0x800 {
          dst[w] = UInt8(truncatingIfNeeded: 0xC0 | c >> 6)
          w += 1
        } else if c < 0x10000 {
          dst[w] = UInt8(truncatingIfNeeded: 0xE0 | c >> 12)
          dst[w + 1] = UInt8(truncatingIfNeeded: 0x80 | (c >> 6) & 0x3F)
          w += 2
        } else {
          dst[w] = UInt8(truncatingIfNeeded: 0xF0 | c >> 18)
          dst[w + 1] = UInt8(truncatingIfNeeded: 0x80 | (c >> 12) & 0x3F)
          dst[w + 2] = UInt8(truncatingIfNeeded: 0x80 | (c >> 6) & 0x3F)
          w += 3
        }
        dst[w] = UInt8(truncatingIfNeeded: 0x80 | c & 0x3F)
        w += 1
      }
      return w
    }
  }
}

/// UTF-16 as the guest stored it, converted to UTF-8 (unpaired surrogates become U+FFFD).
func ntfsUTF8(_ units: [UInt16]) -> [UInt8] {
  // Most names are ASCII: one byte per unit, without building a String.
  if units.allSatisfy({ $0 < 0x80 }) { return units.map { UInt8(truncatingIfNeeded: $0) } }
  return Array(String(decoding: units, as: UTF16.self).utf8)
}

/// The errors of the NTFS reader: metadata that contradicts itself, caps, and features it
/// does not read.
enum NTFSError: GuestFileSystemErrors { static let name = "ntfs" }

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
