// An inode of any size (128 bytes with revision 0, else s_inode_size): the fixed 128 bytes,
// and the fields past 128 that i_extra_isize says exist (nanoseconds, creation time, the high
// half of the checksum). Also the in-inode extended attributes, for inline data.
import VMDKBlock

struct ExtInode: Sendable {
  static let flagIndex: UInt32 = 0x1000
  static let flagHugeFile: UInt32 = 0x40000
  static let flagExtents: UInt32 = 0x80000
  static let flagEAInode: UInt32 = 0x200000
  static let flagInlineData: UInt32 = 0x1000_0000
  /// Bytes of i_block, at 0x28.
  static let blockArea = 60

  var number: UInt32
  /// Where the inode sits in the volume, for errors that name a field of it.
  var volumeOffset: UInt64
  /// 0x00 i_mode.
  var mode: UInt16
  var uid: UInt32
  var gid: UInt32
  /// 0x04 i_size_lo, 0x6C i_size_high (regular files, or with largedir).
  var size: UInt64
  var accessTime: FileTime
  var changeTime: FileTime
  var modificationTime: FileTime
  var creationTime: FileTime?
  /// 0x1A i_links_count.
  var linkCount: UInt16
  /// 0x1C i_blocks_lo (+ 0x74 hi with huge_file), in the unit the raw field has.
  var blocks: UInt64
  /// 0x20 i_flags.
  var flags: UInt32
  /// 0x28, 60 bytes: block map, extent root, inline data or fast symlink target.
  var blockArea: [UInt8]
  /// 0x64 i_generation.
  var generation: UInt32
  /// 0x68 i_file_acl_lo (+ 0x76 hi): the xattr block.
  var fileACL: UInt64
  /// The value of the `system.data` xattr stored in the inode (inline data past 60 bytes).
  var inlineDataTail: [UInt8]?
  /// Whether the checksum matched (always true without metadata_csum).
  var checksumMatches: Bool

  var type: FileType {
    switch mode & 0xF000 {
    case 0x1000: .fifo
    case 0x2000: .characterDevice
    case 0x4000: .directory
    case 0x6000: .blockDevice
    case 0x8000: .regular
    case 0xA000: .symlink
    case 0xC000: .socket
    default: .unknown
    }
  }

  var hasExtents: Bool { flags & Self.flagExtents != 0 }
  var hasInlineData: Bool { flags & Self.flagInlineData != 0 }

  /// i_block as fifteen 32-bit words.
  func blockWord(_ i: Int) -> UInt32 { ExtBytes(blockArea).u32(i * 4) }

  /// A Linux dev_t (glibc's makedev encoding) for a character or block device.
  var device: UInt64? {
    guard type == .characterDevice || type == .blockDevice else { return nil }
    let old = blockWord(0)
    let major: UInt64
    let minor: UInt64
    if old != 0 {
      major = UInt64(old >> 8 & 0xFF)
      minor = UInt64(old & 0xFF)
    } else {
      let new = blockWord(1)
      major = UInt64((new & 0xFFF00) >> 8)
      minor = UInt64((new & 0xFF) | ((new >> 12) & 0xFFF00))
    }
    return (major & 0xFFFF_F000) << 32 | (major & 0xFFF) << 8 | (minor & 0xFFFF_FF00) << 12 | (minor & 0xFF)
  }

  /// A time from its seconds field and, when present, its extra field (epoch bits 0-1,
  /// nanoseconds in bits 2-31).
  static func time(_ seconds: UInt32, extra: UInt32?) -> FileTime {
    var s = Int64(Int32(bitPattern: seconds))
    var ns: UInt32 = 0
    if let extra {
      s += Int64(extra & 3) << 32
      ns = min(extra >> 2, 999_999_999)
    }
    return FileTime(seconds: s, nanoseconds: ns)
  }

  /// Parses inode `number` from `raw` (exactly the on-disk inode, `superblock.inodeSize` bytes).
  init(parsing raw: [UInt8], number: UInt32, volumeOffset: UInt64, superblock sb: ExtSuperblock) throws {
    let b = ExtBytes(raw, volumeOffset: volumeOffset)
    guard raw.count >= 128, raw.count == sb.inodeSize else {
      throw ExtError.corrupt("inode \(number) is \(raw.count) bytes, not \(sb.inodeSize)", offset: volumeOffset)
    }
    self.number = number
    self.volumeOffset = volumeOffset
    mode = b.u16(0x00)
    flags = b.u32(0x20)
    var extra = 0
    if raw.count > 128 {
      extra = Int(b.u16(0x80))
      guard extra <= raw.count - 128, extra % 4 == 0 else {
        throw ExtError.corrupt(
          "inode \(number)'s i_extra_isize \(extra) does not fit its \(raw.count) bytes", offset: b.at(0x80))
      }
    }
    /// Whether the field at `o` of `n` bytes past 128 exists.
    func hasField(_ o: Int, _ n: Int) -> Bool { o + n <= 128 + extra }

    uid = UInt32(b.u16(0x02)) | UInt32(b.u16(0x78)) << 16
    gid = UInt32(b.u16(0x18)) | UInt32(b.u16(0x7A)) << 16
    var size = UInt64(b.u32(0x04))
    let isRegular = mode & 0xF000 == 0x8000
    if isRegular || sb.has(incompat: ExtSuperblock.incompatLargeDir) { size |= UInt64(b.u32(0x6C)) << 32 }
    self.size = size
    accessTime = Self.time(b.u32(0x08), extra: hasField(0x8C, 4) ? b.u32(0x8C) : nil)
    changeTime = Self.time(b.u32(0x0C), extra: hasField(0x84, 4) ? b.u32(0x84) : nil)
    modificationTime = Self.time(b.u32(0x10), extra: hasField(0x88, 4) ? b.u32(0x88) : nil)
    creationTime = hasField(0x90, 4) ? Self.time(b.u32(0x90), extra: hasField(0x94, 4) ? b.u32(0x94) : nil) : nil
    linkCount = b.u16(0x1A)
    var blocks = UInt64(b.u32(0x1C))
    if sb.has(roCompat: ExtSuperblock.roHugeFile) { blocks |= UInt64(b.u16(0x74)) << 32 }
    self.blocks = blocks
    blockArea = b.slice(0x28, Self.blockArea)
    generation = b.u32(0x64)
    fileACL = UInt64(b.u32(0x68)) | UInt64(b.u16(0x76)) << 32

    if sb.has(roCompat: ExtSuperblock.roMetadataCsum) {
      var copy = raw
      copy[0x7C] = 0
      copy[0x7D] = 0
      let hasHigh = raw.count > 128 && hasField(0x82, 2)
      if hasHigh {
        copy[0x82] = 0
        copy[0x83] = 0
      }
      var crc = ExtCRC32C.update(sb.checksumSeed, le32: number)
      crc = ExtCRC32C.update(crc, le32: generation)
      crc = ExtCRC32C.update(crc, copy)
      let stored = UInt32(b.u16(0x7C)) | (hasHigh ? UInt32(b.u16(0x82)) << 16 : 0)
      checksumMatches = (hasHigh ? crc : crc & 0xFFFF) == stored
    } else {
      checksumMatches = true
    }

    inlineDataTail = nil
    if flags & Self.flagInlineData != 0, raw.count > 128 {
      inlineDataTail = try Self.inlineDataValue(b, xattrStart: 128 + extra, number: number)
    }
  }

  /// The value of `system.data` among the in-inode xattrs that start at `xattrStart`, or nil.
  /// Layout: magic 0xEA020000, then entries {name_len u8, name_index u8, value_offs u16,
  /// value_inum u32, value_size u32, hash u32, name}, padded to 4 bytes; a zero u32 ends the
  /// list. Value offsets count from the first entry.
  static func inlineDataValue(_ b: ExtBytes, xattrStart: Int, number: UInt32) throws -> [UInt8]? {
    guard xattrStart + 4 <= b.count, b.u32(xattrStart) == 0xEA02_0000 else { return nil }
    let first = xattrStart + 4
    var o = first
    // At most one entry per 16 bytes of the area: the walk always advances.
    while o + 16 <= b.count, b.u32(o) != 0 {
      let nameLength = Int(b.u8(o))
      let index = b.u8(o + 1)
      let valueOffset = Int(b.u16(o + 2))
      let valueInode = b.u32(o + 4)
      let valueSize = Int(b.u32(o + 8))
      guard o + 16 + nameLength <= b.count else {
        throw ExtError.corrupt("inode \(number)'s xattr entry overruns the inode", offset: b.at(o))
      }
      if index == 7, nameLength == 4, b.slice(o + 16, 4) == Array("data".utf8) {
        guard valueInode == 0 else {
          throw ExtError.unsupported("inode \(number)'s inline data lives in an EA inode", offset: b.at(o + 4))
        }
        guard valueSize <= b.count, first + valueOffset + valueSize <= b.count else {
          throw ExtError.corrupt(
            "inode \(number)'s system.data value (\(valueSize) bytes at \(valueOffset)) overruns the inode",
            offset: b.at(o + 2))
        }
        return b.slice(first + valueOffset, valueSize)
      }
      o += (16 + nameLength + 3) & ~3
    }
    return nil
  }
}
