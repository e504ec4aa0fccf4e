// The CHS geometry VMware writes into the disk database (notes §7.3): IDE disks use 16 heads
// and 63 sectors with cylinders capped at 16383; SCSI disks use 64 heads and 32 sectors below
// 1 GiB and 255 heads and 63 sectors from 1 GiB up, with cylinders not capped (ESXi writes
// the real count for big disks).

public struct DiskGeometry: Equatable, Sendable {
  public var cylinders: UInt64
  public var heads: UInt32
  public var sectors: UInt32

  public init(cylinders: UInt64, heads: UInt32, sectors: UInt32) {
    self.cylinders = cylinders
    self.heads = heads
    self.sectors = sectors
  }

  /// VMware's geometry for a disk of `capacitySectors` on an adapter (`ddb.adapterType`).
  public static func vmware(capacitySectors: UInt64, adapterType: String) -> DiskGeometry {
    if adapterType == "ide" {
      return DiskGeometry(cylinders: min(capacitySectors / (16 * 63), 16383), heads: 16, sectors: 63)
    }
    if capacitySectors < 2_097_152 {
      return DiskGeometry(cylinders: capacitySectors / (64 * 32), heads: 64, sectors: 32)
    }
    return DiskGeometry(cylinders: capacitySectors / (255 * 63), heads: 255, sectors: 63)
  }
}
