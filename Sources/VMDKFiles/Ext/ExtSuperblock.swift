// The ext2/3/4 superblock: 1024 bytes at byte 1024 of the volume. Parsing checks every field
// the reader later multiplies or divides by, and refuses incompatible features it does not
// know (the kernel's rule: unknown incompat bits make a volume unreadable).
import VMDKBlock

/// The superblock fields the reader uses, checked.
struct ExtSuperblock: Sendable {
  /// Byte offset of the superblock in the volume, and its size.
  static let offset: UInt64 = 1024
  static let size = 1024
  static let magic: UInt16 = 0xEF53

  // Feature bits (compat 0x5C, incompat 0x60, ro_compat 0x64).
  static let compatHasJournal: UInt32 = 0x4
  static let compatSparseSuper2: UInt32 = 0x200
  static let incompatCompression: UInt32 = 0x1
  static let incompatFiletype: UInt32 = 0x2
  static let incompatRecover: UInt32 = 0x4
  static let incompatJournalDev: UInt32 = 0x8
  static let incompatMetaBG: UInt32 = 0x10
  static let incompatExtents: UInt32 = 0x40
  static let incompat64Bit: UInt32 = 0x80
  static let incompatMMP: UInt32 = 0x100
  static let incompatFlexBG: UInt32 = 0x200
  static let incompatEAInode: UInt32 = 0x400
  static let incompatDirData: UInt32 = 0x1000
  static let incompatCsumSeed: UInt32 = 0x2000
  static let incompatLargeDir: UInt32 = 0x4000
  static let incompatInlineData: UInt32 = 0x8000
  static let incompatEncrypt: UInt32 = 0x10000
  static let incompatCasefold: UInt32 = 0x20000
  static let roSparseSuper: UInt32 = 0x1
  static let roLargeFile: UInt32 = 0x2
  static let roBtreeDir: UInt32 = 0x4
  static let roHugeFile: UInt32 = 0x8
  static let roGdtCsum: UInt32 = 0x10
  static let roBigalloc: UInt32 = 0x200
  static let roMetadataCsum: UInt32 = 0x400

  /// The incompat bits this reader understands; any other bit is refused.
  static let incompatKnown: UInt32 =
    incompatFiletype | incompatRecover | incompatMetaBG | incompatExtents | incompat64Bit | incompatMMP
    | incompatFlexBG | incompatEAInode | incompatCsumSeed | incompatLargeDir | incompatInlineData
    | incompatCasefold

  /// Caps with their reasons: block sizes the format defines (1 KiB..64 KiB).
  static let maxLogBlockSize: UInt32 = 6

  /// 0x00 s_inodes_count.
  var inodesCount: UInt32
  /// 0x04 s_blocks_count_lo, 0x150 s_blocks_count_hi (64bit): in blocks.
  var blocksCount: UInt64
  /// 0x14 s_first_data_block: the block that holds the superblock (1 with 1 KiB blocks).
  var firstDataBlock: UInt32
  /// 1024 << 0x18 s_log_block_size, in bytes.
  var blockSize: Int
  /// 1024 << 0x1C s_log_cluster_size, in bytes (bigalloc; else the block size).
  var clusterSize: Int
  /// 0x20 s_blocks_per_group.
  var blocksPerGroup: UInt32
  /// 0x28 s_inodes_per_group.
  var inodesPerGroup: UInt32
  /// 0x3A s_state: 1 clean, 2 errors.
  var state: UInt16
  /// 0x4C s_rev_level: 0 original, 1 dynamic.
  var revLevel: UInt32
  /// 0x58 s_inode_size (128 with revision 0), in bytes.
  var inodeSize: Int
  var featureCompat: UInt32
  var featureIncompat: UInt32
  var featureROCompat: UInt32
  /// 0x68, 16 bytes.
  var uuid: [UInt8]
  /// 0x78, 16 bytes, NUL-padded.
  var volumeName: [UInt8]
  /// 0xFE s_desc_size: 32, or with 64bit a power of two 64..1024.
  var descriptorSize: Int
  /// 0x104 s_first_meta_bg.
  var firstMetaBG: UInt32
  /// 0x24C s_backup_bgs[2] (sparse_super2).
  var backupGroups: (UInt32, UInt32)
  /// The metadata_csum seed: crc32c(~0, uuid), or 0x270 s_checksum_seed with csum_seed.
  var checksumSeed: UInt32
  /// Whether 0x3FC s_checksum matched (always true without metadata_csum).
  var checksumMatches: Bool
  /// The number of block groups.
  var groupCount: UInt32

  func has(incompat bit: UInt32) -> Bool { featureIncompat & bit != 0 }
  func has(roCompat bit: UInt32) -> Bool { featureROCompat & bit != 0 }
  func has(compat bit: UInt32) -> Bool { featureCompat & bit != 0 }

  /// Whether `bytes` (the 1024 bytes at byte 1024) carry the ext magic.
  static func isExt(_ bytes: [UInt8]) -> Bool {
    ExtBytes(bytes).u16(0x38) == magic
  }

  /// Parses and checks the superblock. `volumeSize` bounds the geometry.
  init(parsing raw: [UInt8], volumeSize: UInt64) throws {
    let b = ExtBytes(raw, volumeOffset: Self.offset)
    guard raw.count >= Self.size else {
      throw ExtError.corrupt("superblock truncated: \(raw.count) of \(Self.size) bytes", offset: Self.offset)
    }
    guard b.u16(0x38) == Self.magic else {
      throw ExtError.corrupt("superblock magic is 0x\(String(b.u16(0x38), radix: 16)), not 0xef53", offset: b.at(0x38))
    }
    featureCompat = b.u32(0x5C)
    featureIncompat = b.u32(0x60)
    featureROCompat = b.u32(0x64)
    revLevel = b.u32(0x4C)
    if revLevel == 0 {
      featureCompat = 0
      featureIncompat = 0
      featureROCompat = 0
    }
    if featureIncompat & Self.incompatJournalDev != 0 {
      throw ExtError.unsupported("an external journal device, not a file system", offset: b.at(0x60))
    }
    if featureIncompat & Self.incompatCompression != 0 {
      throw ExtError.unsupported("the compression feature (never part of Linux)", offset: b.at(0x60))
    }
    if featureIncompat & Self.incompatEncrypt != 0 {
      throw ExtError.unsupported("encrypted file system (encrypt feature)", offset: b.at(0x60))
    }
    let unknown = featureIncompat & ~Self.incompatKnown
    guard unknown == 0 else {
      throw ExtError.unsupported("unknown incompatible features 0x\(String(unknown, radix: 16))", offset: b.at(0x60))
    }

    let logBlock = b.u32(0x18)
    guard logBlock <= Self.maxLogBlockSize else {
      throw ExtError.limit(
        "block size 1024 << \(logBlock) is beyond the 64 KiB the format allows", offset: b.at(0x18))
    }
    blockSize = 1024 << Int(logBlock)
    let logCluster = b.u32(0x1C)
    if featureROCompat & Self.roBigalloc != 0 {
      guard logCluster >= logBlock, logCluster <= 19 else {
        throw ExtError.corrupt("cluster size 1024 << \(logCluster) with block size \(blockSize)", offset: b.at(0x1C))
      }
      clusterSize = 1024 << Int(logCluster)
    } else {
      clusterSize = blockSize
    }

    inodesCount = b.u32(0x00)
    var blocks = UInt64(b.u32(0x04))
    if featureIncompat & Self.incompat64Bit != 0 { blocks |= UInt64(b.u32(0x150)) << 32 }
    blocksCount = blocks
    firstDataBlock = b.u32(0x14)
    blocksPerGroup = b.u32(0x20)
    inodesPerGroup = b.u32(0x28)
    state = b.u16(0x3A)

    guard UInt64(firstDataBlock) < blocksCount else {
      throw ExtError.corrupt(
        "first data block \(firstDataBlock) is not below the block count \(blocksCount)", offset: b.at(0x14))
    }
    // The block count times the block size must be a byte count; the kernel caps blocks at 2^48.
    guard blocksCount < 1 << 48 else {
      throw ExtError.corrupt("block count \(blocksCount) is beyond 2^48", offset: b.at(0x04))
    }
    guard blocksPerGroup >= 8, UInt64(blocksPerGroup) <= 8 * UInt64(blockSize) * UInt64(clusterSize / blockSize) else {
      throw ExtError.corrupt("blocks per group \(blocksPerGroup) with \(blockSize)-byte blocks", offset: b.at(0x20))
    }
    guard inodesPerGroup > 0, UInt64(inodesPerGroup) <= 8 * UInt64(blockSize) else {
      throw ExtError.corrupt("inodes per group \(inodesPerGroup) with \(blockSize)-byte blocks", offset: b.at(0x28))
    }
    let groups64 = (blocksCount - UInt64(firstDataBlock) + UInt64(blocksPerGroup) - 1) / UInt64(blocksPerGroup)
    guard groups64 > 0, groups64 < 1 << 32 else {
      throw ExtError.corrupt("\(groups64) block groups", offset: b.at(0x04))
    }
    groupCount = UInt32(groups64)
    guard groups64 * UInt64(inodesPerGroup) >= UInt64(inodesCount), inodesCount >= 11 || revLevel > 0 else {
      throw ExtError.corrupt(
        "\(inodesCount) inodes do not fit \(groups64) groups of \(inodesPerGroup)", offset: b.at(0x00))
    }

    if revLevel == 0 {
      inodeSize = 128
    } else {
      let size = Int(b.u16(0x58))
      guard size >= 128, size & (size - 1) == 0 else {
        throw ExtError.corrupt("inode size \(size) is not a power of two of at least 128", offset: b.at(0x58))
      }
      guard size <= blockSize else {
        throw ExtError.limit("inode size \(size) is larger than the block size \(blockSize)", offset: b.at(0x58))
      }
      inodeSize = size
    }

    if featureIncompat & Self.incompat64Bit != 0 {
      let size = Int(b.u16(0xFE))
      guard size >= 64, size <= 1024, size & (size - 1) == 0 else {
        throw ExtError.corrupt("group descriptor size \(size) with 64bit (a power of two 64..1024)", offset: b.at(0xFE))
      }
      descriptorSize = size
    } else {
      descriptorSize = 32
    }
    firstMetaBG = b.u32(0x104)
    if featureIncompat & Self.incompatMetaBG != 0 {
      let perBlock = UInt64(blockSize / descriptorSize)
      let descriptorBlocks = (UInt64(groupCount) + perBlock - 1) / perBlock
      guard UInt64(firstMetaBG) <= descriptorBlocks else {
        throw ExtError.corrupt(
          "first meta_bg \(firstMetaBG) is past the \(descriptorBlocks) descriptor blocks", offset: b.at(0x104))
      }
    }
    backupGroups = (b.u32(0x24C), b.u32(0x250))
    uuid = b.slice(0x68, 16)
    volumeName = b.slice(0x78, 16)

    if featureIncompat & Self.incompatCsumSeed != 0 {
      checksumSeed = b.u32(0x270)
    } else {
      checksumSeed = ExtCRC32C.update(~0, uuid)
    }
    if featureROCompat & Self.roMetadataCsum != 0 {
      checksumMatches = ExtCRC32C.update(~0, raw, 0..<0x3FC) == b.u32(0x3FC)
    } else {
      checksumMatches = true
    }
  }

  /// "ext2", "ext3" or "ext4", as blkid names them: ext4 as soon as a feature beyond ext3's is on.
  var kind: String {
    let ext3Incompat = Self.incompatFiletype | Self.incompatRecover | Self.incompatMetaBG
    let ext3RO = Self.roSparseSuper | Self.roLargeFile | Self.roBtreeDir
    if featureIncompat & ~ext3Incompat != 0 || featureROCompat & ~ext3RO != 0 { return "ext4" }
    return has(compat: Self.compatHasJournal) ? "ext3" : "ext2"
  }

  /// Whether group `g` holds a superblock backup (and so a descriptor table copy).
  func groupHasSuperblock(_ g: UInt32) -> Bool {
    if g == 0 { return true }
    if has(compat: Self.compatSparseSuper2) { return g == backupGroups.0 || g == backupGroups.1 }
    if !has(roCompat: Self.roSparseSuper) { return true }
    if g == 1 { return true }
    for base: UInt32 in [3, 5, 7] {
      var p: UInt32 = base
      while p < g {
        let (next, overflow) = p.multipliedReportingOverflow(by: base)
        if overflow { break }
        p = next
      }
      if p == g { return true }
    }
    return false
  }

  /// The block that holds the descriptor of group `g`, and the descriptor's byte offset in it.
  func descriptorLocation(group g: UInt32) -> (block: UInt64, offsetInBlock: Int) {
    let perBlock = UInt32(blockSize / descriptorSize)
    let index = g / perBlock
    let within = Int(g % perBlock) * descriptorSize
    // The superblock sits in block 1 with 1 KiB blocks, block 0 otherwise; the table follows.
    let superblockBlock: UInt64 = blockSize == 1024 ? 1 : 0
    if !has(incompat: Self.incompatMetaBG) || index < firstMetaBG {
      return (superblockBlock + 1 + UInt64(index), within)
    }
    let firstGroup = index * perBlock
    let groupStart = UInt64(firstDataBlock) + UInt64(firstGroup) * UInt64(blocksPerGroup)
    return (groupStart + (groupHasSuperblock(firstGroup) ? 1 : 0), within)
  }
}
