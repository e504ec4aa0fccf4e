// What the volume layer finds on a disk: the partition table's scheme and its partitions,
// each a byte range of the disk with its type, name and GUID.

/// One partition: a byte range of the disk.
public struct Partition: Sendable, Hashable {
  /// 1-based. MBR: slots 1-4 are the primary entries, logical partitions count from 5 in
  /// chain order (as Linux numbers them). GPT: the entry's slot + 1. No table: 1.
  public var index: Int
  public var startBytes: UInt64
  public var sizeBytes: UInt64
  /// MBR: the type byte as "0x83"; GPT: the type GUID; no table: "none".
  public var type: String
  /// A person's name for the type ("Linux", "EFI System"), when known.
  public var typeName: String?
  /// GPT: the partition name (UTF-16 in the entry).
  public var name: String?
  /// GPT: the unique partition GUID.
  public var guid: String?
  /// MBR: a logical partition inside the extended one.
  public var isLogical: Bool
  /// MBR: status 0x80. GPT: attribute bit 2 (legacy BIOS bootable).
  public var isBootable: Bool
  /// GPT: the attribute bits.
  public var attributes: UInt64?

  public init(
    index: Int, startBytes: UInt64, sizeBytes: UInt64, type: String, typeName: String? = nil, name: String? = nil,
    guid: String? = nil, isLogical: Bool = false, isBootable: Bool = false, attributes: UInt64? = nil
  ) {
    self.index = index
    self.startBytes = startBytes
    self.sizeBytes = sizeBytes
    self.type = type
    self.typeName = typeName
    self.name = name
    self.guid = guid
    self.isLogical = isLogical
    self.isBootable = isBootable
    self.attributes = attributes
  }
}

/// A disk's partition table.
public struct PartitionTable: Sendable {
  public enum Scheme: String, Sendable {
    /// MBR, with extended and logical partitions.
    case mbr
    /// GUID partition table.
    case gpt
    /// No table: the whole disk is one volume (a file system at sector 0, or nothing).
    case none
  }
  public var scheme: Scheme
  /// The logical sector size the table was read with (512 or 4096).
  public var sectorSize: Int
  /// MBR: the disk signature as 8 hex digits; GPT: the disk GUID.
  public var diskID: String?
  public var partitions: [Partition]
  /// What a user should know: the backup GPT header was used, a hybrid MBR, a partition
  /// clamped to the disk.
  public var warnings: [String]

  public init(scheme: Scheme, sectorSize: Int, diskID: String? = nil, partitions: [Partition], warnings: [String] = [])
  {
    self.scheme = scheme
    self.sectorSize = sectorSize
    self.diskID = diskID
    self.partitions = partitions
    self.warnings = warnings
  }
}

/// Caps on what a partition table may claim, with their reasons.
public enum PartitionLimits {
  /// Extended boot records followed in one chain (Linux stops after 100 data-less links).
  public static let maxLogicalPartitions = 128
  /// GPT entries read (UEFI reserves room for 128; 65,536 is far beyond any real disk).
  public static let maxGPTEntries = 65_536
  /// Bytes of a GPT entry array read into memory.
  public static let maxGPTArrayBytes = 4 << 20
  /// Largest GPT entry (UEFI: 128 × 2^n).
  public static let maxGPTEntrySize = 4096
}
