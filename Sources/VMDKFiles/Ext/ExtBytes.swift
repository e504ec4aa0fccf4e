// The ext parsers' bytes (GuestBytes), error kind, and CRC-32C (metadata_csum).
import VMDKBlock

/// The ext parsers' view of bytes.
typealias ExtBytes = GuestBytes

/// The errors of the ext reader: metadata that contradicts itself, and caps.
enum ExtError: GuestFileSystemErrors { static let name = "ext" }

/// CRC-32C (Castagnoli, reflected 0x82F63B78) as ext4 uses it: the caller passes the running
/// value (~0 to start) and no final inversion is applied (e2fsprogs `ext2fs_crc32c_le`).
enum ExtCRC32C {
  /// Slicing-by-8 tables, flat: table k at k * 256. Table 0 is the bytewise table; table k
  /// advances a byte through k further zero bytes.
  static let table: [UInt32] = {
    var t = [UInt32](repeating: 0, count: 8 * 256)
    for n in 0..<256 {
      var c = UInt32(n)
      for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
      t[n] = c
    }
    for k in 1..<8 {
      for n in 0..<256 {
        let prev = t[(k - 1) * 256 + n]
        t[k * 256 + n] = (prev >> 8) ^ t[Int(prev & 0xFF)]
      }
    }
    return t
  }()

  /// The running value over `bytes[range]` (the whole array by default); indices outside the
  /// array are skipped.
  static func update(_ crc: UInt32, _ bytes: [UInt8], _ range: Range<Int>? = nil) -> UInt32 {
    let r = range ?? 0..<bytes.count
    let lo = max(0, r.lowerBound)
    let hi = min(bytes.count, r.upperBound)
    guard lo < hi else { return crc }
    var c = crc
    bytes.withUnsafeBufferPointer { p in
      table.withUnsafeBufferPointer { t in
        var i = lo
        while hi - i >= 8 {
          let a =
            c ^ (UInt32(p[i]) | UInt32(p[i + 1]) << 8 | UInt32(p[i + 2]) << 16 | UInt32(p[i + 3]) << 24)
          let b = UInt32(p[i + 4]) | UInt32(p[i + 5]) << 8 | UInt32(p[i + 6]) << 16 | UInt32(p[i + 7]) << 24
          c =
            t[7 * 256 + Int(a & 0xFF)] ^ t[6 * 256 + Int(a >> 8 & 0xFF)] ^ t[5 * 256 + Int(a >> 16 & 0xFF)]
            ^ t[4 * 256 + Int(a >> 24)] ^ t[3 * 256 + Int(b & 0xFF)] ^ t[2 * 256 + Int(b >> 8 & 0xFF)]
            ^ t[256 + Int(b >> 16 & 0xFF)] ^ t[Int(b >> 24)]
          i += 8
        }
        while i < hi {
          c = t[Int((c ^ UInt32(p[i])) & 0xFF)] ^ (c >> 8)
          i += 1
        }
      }
    }
    return c
  }

  static func update(_ crc: UInt32, le32 value: UInt32) -> UInt32 {
    update(crc, [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 24)])
  }
}
