// The ext parsers' bytes (GuestBytes), error kind, and CRC-32C (metadata_csum).
import VMDKBlock

/// The ext parsers' view of bytes.
typealias ExtBytes = GuestBytes

/// The errors of the ext reader: metadata that contradicts itself, and caps.
enum ExtError: GuestFileSystemErrors { static let name = "ext" }

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
