// One block group descriptor: 32 bytes, or s_desc_size bytes with 64bit, where the high
// halves of the block numbers and counters follow at 0x20.
import VMDKBlock

struct ExtGroupDescriptor: Sendable {
  static let flagInodeUninit: UInt16 = 0x1

  /// 0x08 bg_inode_table_lo (+ 0x28 hi): the first block of the group's inode table.
  var inodeTable: UInt64
  /// 0x12 bg_flags.
  var flags: UInt16
  /// 0x1C bg_itable_unused_lo (+ 0x32 hi): inodes at the end of the group never used.
  var inodeTableUnused: UInt32
  /// 0x1E bg_checksum.
  var checksum: UInt16
  /// Whether bg_checksum matched (metadata_csum only; gdt_csum's crc16 is not verified).
  var checksumMatches: Bool
  /// The group this descriptor describes.
  var group: UInt32

  /// Parses the descriptor of group `group` from `b`, at byte `o` of it.
  init(parsing b: ExtBytes, at o: Int, group: UInt32, superblock sb: ExtSuperblock) throws {
    self.group = group
    let size = sb.descriptorSize
    guard o >= 0, o + size <= b.count else {
      throw ExtError.corrupt("group descriptor \(group) is truncated", offset: b.at(o))
    }
    var table = UInt64(b.u32(o + 0x08))
    var unused = UInt32(b.u16(o + 0x1C))
    if size >= 64 {
      table |= UInt64(b.u32(o + 0x28)) << 32
      unused |= UInt32(b.u16(o + 0x32)) << 16
    }
    inodeTable = table
    inodeTableUnused = unused
    flags = b.u16(o + 0x12)
    checksum = b.u16(o + 0x1E)
    if sb.has(roCompat: ExtSuperblock.roMetadataCsum) {
      var bytes = b.slice(o, size)
      bytes[0x1E] = 0
      bytes[0x1F] = 0
      let crc = ExtCRC32C.update(ExtCRC32C.update(sb.checksumSeed, le32: group), bytes)
      checksumMatches = UInt16(crc & 0xFFFF) == checksum
    } else {
      checksumMatches = true
    }
    // The inode table must lie inside the volume.
    let tableBytes = UInt64(sb.inodesPerGroup) * UInt64(sb.inodeSize)
    let tableBlocks = (tableBytes + UInt64(sb.blockSize) - 1) / UInt64(sb.blockSize)
    guard inodeTable > 0, inodeTable < sb.blocksCount, tableBlocks <= sb.blocksCount - inodeTable else {
      throw ExtError.corrupt(
        "group \(group)'s inode table at block \(inodeTable) (\(tableBlocks) blocks) is outside the \(sb.blocksCount) blocks",
        offset: b.at(o + 0x08))
    }
  }
}
