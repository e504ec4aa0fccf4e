// The ESX vmfsSparse ("COWD") extent header: 2048 bytes (4 sectors) at the start of a
// `-delta.vmdk` redo log. Grain tables hold 4096 entries and are allocated on demand; there is
// no redundant directory and no zeroed-grain entry.

/// A parsed `COWDisk_Header`. Offsets and sizes are in 512-byte sectors.
public struct COWDHeader: Equatable, Sendable {
  /// Bytes of the header on disk.
  public static let size = 2048
  /// `magicNumber`, little-endian: the bytes "COWD".
  public static let magic: UInt32 = 0x4457_4F43
  /// Entries in one COWD grain table.
  public static let entriesPerTable: UInt64 = 4096

  /// Offset 4, 4 bytes.
  public var version: UInt32
  /// Offset 8, 4 bytes.
  public var flags: UInt32
  /// Offset 12, 4 bytes: capacity in sectors.
  public var numSectors: UInt32
  /// Offset 16, 4 bytes: sectors per grain.
  public var grainSectors: UInt32
  /// Offset 20, 4 bytes: sector of the grain directory.
  public var gdOffsetSectors: UInt32
  /// Offset 24, 4 bytes: grain directory entries.
  public var numGDEntries: UInt32
  /// Offset 28, 4 bytes: next free sector.
  public var freeSector: UInt32
  /// Offset 1060, 4 bytes.
  public var generation: UInt32
  /// Offset 1648, 4 bytes.
  public var uncleanShutdown: UInt32

  public static func hasMagic(_ bytes: [UInt8]) -> Bool {
    bytes.count >= 4 && bytes[0] == 0x43 && bytes[1] == 0x4F && bytes[2] == 0x57 && bytes[3] == 0x44
  }

  public init(
    numSectors: UInt32, grainSectors: UInt32, gdOffsetSectors: UInt32 = 4, numGDEntries: UInt32,
    freeSector: UInt32, version: UInt32 = 1, flags: UInt32 = 3
  ) {
    self.version = version
    self.flags = flags
    self.numSectors = numSectors
    self.grainSectors = grainSectors
    self.gdOffsetSectors = gdOffsetSectors
    self.numGDEntries = numGDEntries
    self.freeSector = freeSector
    self.generation = 0
    self.uncleanShutdown = 0
  }

  /// Parses the header at file offset `baseOffset`.
  public init(parsing bytes: [UInt8], baseOffset: UInt64 = 0) throws {
    let r = ByteReader(bytes, baseOffset: baseOffset)
    let magic = try r.u32(0, "magicNumber")
    guard magic == COWDHeader.magic else {
      throw FormatError(
        .badMagic, offset: baseOffset,
        "COWD header: expected magic COWD (0x44574f43), found 0x\(String(magic, radix: 16))")
    }
    version = try r.u32(4, "version")
    flags = try r.u32(8, "flags")
    numSectors = try r.u32(12, "numSectors")
    grainSectors = try r.u32(16, "grainSize")
    gdOffsetSectors = try r.u32(20, "gdOffset")
    numGDEntries = try r.u32(24, "numGDEntries")
    freeSector = try r.u32(28, "freeSector")
    generation = try r.u32(1060, "generation")
    uncleanShutdown = try r.u32(1648, "uncleanShutdown")
  }

  /// The 2048 bytes of this header.
  public func serialized() -> [UInt8] {
    var w = ByteWriter(count: COWDHeader.size)
    w.u32(0, COWDHeader.magic)
    w.u32(4, version)
    w.u32(8, flags)
    w.u32(12, numSectors)
    w.u32(16, grainSectors)
    w.u32(20, gdOffsetSectors)
    w.u32(24, numGDEntries)
    w.u32(28, freeSector)
    w.u32(1060, generation)
    w.u32(1648, uncleanShutdown)
    return w.bytes
  }

  /// Sectors covered by one grain table.
  public var sectorsPerTable: UInt64 { COWDHeader.entriesPerTable * UInt64(grainSectors) }

  /// Checks the values against the format, the caps and `fileSize`.
  public func validate(fileSize: UInt64, baseOffset: UInt64 = 0) throws {
    func fail(_ kind: FormatError.Kind, _ field: Int, _ m: String) -> FormatError {
      FormatError(kind, offset: baseOffset + UInt64(field), m)
    }
    guard version == 1 else {
      throw fail(.unsupportedVersion, 4, "COWD version \(version); only version 1 is supported")
    }
    guard grainSectors != 0 else { throw fail(.invalidGrainSize, 16, "grain size is 0 sectors") }
    guard UInt64(grainSectors) <= Limits.maxGrainSectors else {
      throw fail(
        .invalidGrainSize, 16, "grain size \(grainSectors) sectors is larger than the cap of \(Limits.maxGrainSectors)")
    }
    let needed = (UInt64(numSectors) + sectorsPerTable - 1) / sectorsPerTable
    guard UInt64(numGDEntries) >= needed else {
      throw fail(
        .invalidHeader, 24,
        "numGDEntries \(numGDEntries) cannot cover \(numSectors) sectors (needs \(needed))")
    }
    guard UInt64(numGDEntries) <= Limits.maxGrainDirectoryEntries else {
      throw fail(.capacityOverflow, 24, "numGDEntries \(numGDEntries) is larger than the cap")
    }
    guard gdOffsetSectors != 0 else { throw fail(.invalidHeader, 20, "grain directory offset is 0") }
    let end = UInt64(gdOffsetSectors) * 512 + UInt64(numGDEntries) * 4
    guard end <= fileSize else {
      throw fail(
        .offsetPastEnd, 20,
        "grain directory (\(numGDEntries) entries at sector \(gdOffsetSectors)) ends past the end of the file (\(fileSize) bytes)"
      )
    }
  }
}
