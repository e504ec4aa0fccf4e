// The NTFS boot sector ($Boot, the first sector of the volume): geometry, where $MFT starts,
// and the sizes of MFT records and index blocks. Every field the reader multiplies by is
// checked here.
import VMDKBlock

public struct NTFSBootSector: Sendable, Equatable {
  /// The bytes read to parse it.
  static let size = 512
  /// Clusters above 2 MiB are refused (Windows and ntfs-3g stop there).
  public static let maxClusterSize = 2 << 20
  /// MFT records and index blocks: powers of two from 512 (the fixup stride) to 64 KiB.
  public static let recordSizes = 512...65536

  public let bytesPerSector: Int
  public let clusterSize: Int
  /// Sectors of the volume, without the backup boot sector.
  public let totalSectors: UInt64
  public let mftLCN: UInt64
  public let mftMirrorLCN: UInt64
  public let mftRecordSize: Int
  public let indexBlockSize: Int
  public let serial: UInt64

  /// Clusters of the volume.
  public var clusterCount: UInt64 { totalSectors / UInt64(clusterSize / bytesPerSector) }

  /// True when the OEM name says NTFS: the probe's "mine".
  static func isNTFS(_ b: [UInt8]) -> Bool {
    b.count >= 11 && Array(b[3..<11]) == Array("NTFS    ".utf8)
  }

  /// The size a "clusters per record" byte stands for: a positive count of clusters, or
  /// 2^-v bytes when negative.
  static func recordSize(_ raw: UInt8, clusterSize: Int, field: String, offset: Int) throws -> Int {
    let v = Int8(bitPattern: raw)
    let size: Int
    if v > 0 {
      size = Int(v) * clusterSize
    } else if v < 0, -Int(v) <= 30 {
      size = 1 << -Int(v)
    } else {
      throw NTFSError.corrupt(
        "boot sector: \(field) byte 0x\(String(raw, radix: 16)) is invalid", offset: UInt64(offset))
    }
    guard recordSizes.contains(size), size & (size - 1) == 0 else {
      throw NTFSError.limit(
        "boot sector: \(field) of \(size) bytes is outside \(recordSizes) or not a power of two", offset: UInt64(offset)
      )
    }
    return size
  }

  public init(parsing raw: [UInt8], volumeSize: UInt64) throws {
    let b = NTFSBytes(raw)
    guard b.count >= Self.size else { throw NTFSError.corrupt("boot sector shorter than 512 bytes", offset: 0) }
    guard Self.isNTFS(raw) else { throw NTFSError.corrupt("boot sector: the OEM name is not \"NTFS\"", offset: 3) }
    let bps = Int(b.u16(11))
    guard (256...4096).contains(bps), bps & (bps - 1) == 0 else {
      throw NTFSError.corrupt("boot sector: \(bps) bytes per sector (expected a power of two, 256...4096)", offset: 11)
    }
    let spcRaw = b.u8(13)
    let sectorsPerCluster: Int
    if spcRaw <= 128 {
      guard spcRaw != 0, spcRaw & (spcRaw - 1) == 0 else {
        throw NTFSError.corrupt("boot sector: \(spcRaw) sectors per cluster is not a power of two", offset: 13)
      }
      sectorsPerCluster = Int(spcRaw)
    } else {
      // Values above 128 are a shift: 2^(256 - v) sectors.
      let shift = 256 - Int(spcRaw)
      guard shift <= 21 else {
        throw NTFSError.limit("boot sector: sectors-per-cluster shift \(shift) is too large", offset: 13)
      }
      sectorsPerCluster = 1 << shift
    }
    let cluster = bps * sectorsPerCluster
    guard cluster <= Self.maxClusterSize else {
      throw NTFSError.limit(
        "boot sector: clusters of \(cluster) bytes are beyond the cap of \(Self.maxClusterSize)", offset: 13)
    }
    bytesPerSector = bps
    clusterSize = cluster
    totalSectors = b.u64(40)
    guard totalSectors >= UInt64(sectorsPerCluster) else {
      throw NTFSError.corrupt("boot sector: \(totalSectors) sectors is smaller than one cluster", offset: 40)
    }
    let bytes = totalSectors.multipliedReportingOverflow(by: UInt64(bps))
    guard !bytes.overflow else { throw NTFSError.corrupt("boot sector: sector count overflows", offset: 40) }
    mftLCN = b.u64(48)
    mftMirrorLCN = b.u64(56)
    let clusters = totalSectors / UInt64(sectorsPerCluster)
    guard mftLCN > 0, mftLCN < clusters else {
      throw NTFSError.corrupt("boot sector: $MFT at cluster \(mftLCN), outside 1..<\(clusters)", offset: 48)
    }
    guard mftMirrorLCN > 0, mftMirrorLCN < clusters, mftMirrorLCN != mftLCN else {
      throw NTFSError.corrupt("boot sector: $MFTMirr at cluster \(mftMirrorLCN) is invalid", offset: 56)
    }
    mftRecordSize = try Self.recordSize(b.u8(64), clusterSize: cluster, field: "MFT record size", offset: 64)
    indexBlockSize = try Self.recordSize(b.u8(68), clusterSize: cluster, field: "index block size", offset: 68)
    serial = b.u64(72)
  }
}
