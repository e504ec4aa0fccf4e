// Caps on values read from untrusted images, with the reason for each. No allocation is sized
// by a header field until the field has been checked against one of these and the file size.

/// The toolkit's documented caps for untrusted header fields.
public enum Limits {
  /// Bytes in one sector; every on-disk sector number and count uses it.
  public static let sectorSize: UInt64 = 512

  /// Largest grain accepted, in sectors (4 MiB). Every known writer uses 128 sectors (hosted,
  /// stream), 8 (seSparse) or 1 (COWD); a read buffer is one grain, so this also bounds memory.
  public static let maxGrainSectors: UInt64 = 8192

  /// Largest descriptor accepted, embedded or in its own file: 1 MiB (qemu parses no more).
  public static let maxDescriptorBytes: UInt64 = 1 << 20

  /// Most grain directory entries in one extent: 32 Mi, qemu's "L1 size too big" bound
  /// (1 PiB of virtual disk at the default grain).
  public static let maxGrainDirectoryEntries: UInt64 = 32 * 1024 * 1024

  /// Largest virtual capacity in sectors: its byte size must fit a signed 64-bit file offset.
  public static let maxCapacitySectors: UInt64 = UInt64(Int64.max) / 512

  /// Deepest snapshot chain opened by default (VMware allows 32 snapshots per disk on ESXi,
  /// 255 hosted); a caller may raise it.
  public static let defaultMaxChainDepth = 255
}
