// The hosted sparse extent header ("KDMV"), 512 bytes at sector 0 of monolithicSparse,
// twoGbMaxExtentSparse and streamOptimized extents, and again as the footer of VMware's
// stream layout. Field offsets, sizes and units follow VMware's Virtual Disk Format 5.0.

/// A parsed `SparseExtentHeader`. Offsets and sizes are in 512-byte sectors.
public struct SparseExtentHeader: Equatable, Sendable {
  /// Bytes of the header on disk.
  public static let size = 512
  /// `magicNumber`, little-endian: the bytes "KDMV".
  public static let magic: UInt32 = 0x564D_444B
  /// `gdOffset` value meaning "the grain directory is found through the footer".
  public static let gdAtEnd: UInt64 = 0xFFFF_FFFF_FFFF_FFFF
  /// Newline-detection bytes at offsets 73..76.
  public static let newlineBytes: [UInt8] = [0x0A, 0x20, 0x0D, 0x0A]

  /// Flag bits of `flags`.
  public struct Flags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Bit 0: the newline-detection bytes are valid.
    public static let validNewlineDetector = Flags(rawValue: 1 << 0)
    /// Bit 1: a redundant grain directory and tables exist at `rgdOffset`.
    public static let useRedundantGrainDirectory = Flags(rawValue: 1 << 1)
    /// Bit 2: grain table entry 1 means "zeroed grain" (version 2).
    public static let zeroedGrainEntries = Flags(rawValue: 1 << 2)
    /// Bit 16: grains are compressed with `compressAlgorithm`.
    public static let compressed = Flags(rawValue: 1 << 16)
    /// Bit 17: markers are present; grain markers carry their LBA.
    public static let markers = Flags(rawValue: 1 << 17)
    /// Incompatible bits this reader understands.
    public static let knownIncompatible: Flags = [.compressed, .markers]
  }

  /// Offset 4, 4 bytes: 1, 2 or 3.
  public var version: UInt32
  /// Offset 8, 4 bytes.
  public var flags: Flags
  /// Offset 12, 8 bytes: extent size in sectors.
  public var capacitySectors: UInt64
  /// Offset 20, 8 bytes: sectors per grain.
  public var grainSectors: UInt64
  /// Offset 28, 8 bytes: sector of the embedded descriptor, 0 when none.
  public var descriptorOffsetSectors: UInt64
  /// Offset 36, 8 bytes: sectors of the embedded descriptor.
  public var descriptorSizeSectors: UInt64
  /// Offset 44, 4 bytes: entries per grain table, always 512.
  public var numGTEsPerGT: UInt32
  /// Offset 48, 8 bytes: sector of the redundant grain directory.
  public var rgdOffsetSectors: UInt64
  /// Offset 56, 8 bytes: sector of the grain directory, or `gdAtEnd`.
  public var gdOffsetSectors: UInt64
  /// Offset 64, 8 bytes: sectors of metadata; the first grain starts here.
  public var overheadSectors: UInt64
  /// Offset 72, 1 byte.
  public var uncleanShutdown: Bool
  /// Offsets 73..76: the newline-detection bytes as found.
  public var newlineDetector: [UInt8]
  /// Offset 77, 2 bytes: 0 none, 1 deflate (zlib format).
  public var compressAlgorithm: UInt16

  public init(
    version: UInt32 = 1, flags: Flags = [.validNewlineDetector, .useRedundantGrainDirectory],
    capacitySectors: UInt64, grainSectors: UInt64 = 128, descriptorOffsetSectors: UInt64 = 0,
    descriptorSizeSectors: UInt64 = 0, numGTEsPerGT: UInt32 = 512, rgdOffsetSectors: UInt64 = 0,
    gdOffsetSectors: UInt64 = 0, overheadSectors: UInt64 = 0, uncleanShutdown: Bool = false,
    compressAlgorithm: UInt16 = 0
  ) {
    self.version = version
    self.flags = flags
    self.capacitySectors = capacitySectors
    self.grainSectors = grainSectors
    self.descriptorOffsetSectors = descriptorOffsetSectors
    self.descriptorSizeSectors = descriptorSizeSectors
    self.numGTEsPerGT = numGTEsPerGT
    self.rgdOffsetSectors = rgdOffsetSectors
    self.gdOffsetSectors = gdOffsetSectors
    self.overheadSectors = overheadSectors
    self.uncleanShutdown = uncleanShutdown
    self.newlineDetector = SparseExtentHeader.newlineBytes
    self.compressAlgorithm = compressAlgorithm
  }

  /// Whether `bytes` start with the KDMV magic.
  public static func hasMagic(_ bytes: [UInt8]) -> Bool {
    bytes.count >= 4 && bytes[0] == 0x4B && bytes[1] == 0x44 && bytes[2] == 0x4D && bytes[3] == 0x56
  }

  /// Parses the 512-byte header (or footer) found at file offset `baseOffset`. Checks only
  /// that every field is present and the magic is right; `validate` checks the values.
  public init(parsing bytes: [UInt8], baseOffset: UInt64 = 0) throws {
    let r = ByteReader(bytes, baseOffset: baseOffset)
    let magic = try r.u32(0, "magicNumber")
    guard magic == SparseExtentHeader.magic else {
      throw FormatError(
        .badMagic, offset: baseOffset,
        "sparse extent header: expected magic KDMV (0x564d444b), found 0x\(String(magic, radix: 16))")
    }
    version = try r.u32(4, "version")
    flags = Flags(rawValue: try r.u32(8, "flags"))
    capacitySectors = try r.u64(12, "capacity")
    grainSectors = try r.u64(20, "grainSize")
    descriptorOffsetSectors = try r.u64(28, "descriptorOffset")
    descriptorSizeSectors = try r.u64(36, "descriptorSize")
    numGTEsPerGT = try r.u32(44, "numGTEsPerGT")
    rgdOffsetSectors = try r.u64(48, "rgdOffset")
    gdOffsetSectors = try r.u64(56, "gdOffset")
    overheadSectors = try r.u64(64, "overHead")
    uncleanShutdown = try r.u8(72, "uncleanShutdown") != 0
    newlineDetector = Array(try r.slice(73, 4, "newline detection bytes"))
    compressAlgorithm = try r.u16(77, "compressAlgorithm")
  }

  /// The 512 bytes of this header.
  public func serialized() -> [UInt8] {
    var w = ByteWriter(count: SparseExtentHeader.size)
    w.u32(0, SparseExtentHeader.magic)
    w.u32(4, version)
    w.u32(8, flags.rawValue)
    w.u64(12, capacitySectors)
    w.u64(20, grainSectors)
    w.u64(28, descriptorOffsetSectors)
    w.u64(36, descriptorSizeSectors)
    w.u32(44, numGTEsPerGT)
    w.u64(48, rgdOffsetSectors)
    w.u64(56, gdOffsetSectors)
    w.u64(64, overheadSectors)
    w.u8(72, uncleanShutdown ? 1 : 0)
    for (i, b) in newlineDetector.prefix(4).enumerated() { w.u8(73 + i, b) }
    w.u16(77, compressAlgorithm)
    return w.bytes
  }

  /// Whether grains are stored compressed (qemu decides by `compressAlgorithm` alone).
  public var isCompressed: Bool { compressAlgorithm == 1 }
  /// Whether grain table entry 1 means a zeroed grain.
  public var hasZeroedGrainEntries: Bool { flags.contains(.zeroedGrainEntries) }
  /// Whether compressed grains start with a 12-byte grain marker.
  public var hasMarkers: Bool { flags.contains(.markers) }
  /// Whether the grain directory lives at the end, found through the footer.
  public var grainDirectoryAtEnd: Bool { gdOffsetSectors == SparseExtentHeader.gdAtEnd }
  /// Whether the newline-detection bytes are damaged while flag bit 0 says they are valid.
  public var newlinesDamaged: Bool {
    flags.contains(.validNewlineDetector) && newlineDetector != SparseExtentHeader.newlineBytes
  }

  /// Checks every value against the format's rules, the toolkit's caps and `fileSize`.
  /// Call it on the effective header (the footer, when the header says `gdAtEnd`).
  /// Returns the layout of the grain directory and tables.
  public func validate(fileSize: UInt64, baseOffset: UInt64 = 0) throws -> SparseLayout {
    func fail(_ kind: FormatError.Kind, _ field: Int, _ message: String) -> FormatError {
      FormatError(kind, offset: baseOffset + UInt64(field), message)
    }
    guard (1...3).contains(version) else {
      throw fail(.unsupportedVersion, 4, "sparse extent version \(version); versions 1 to 3 are supported")
    }
    let incompatible = flags.rawValue & 0xFFFF_0000
    if incompatible & ~Flags.knownIncompatible.rawValue != 0 {
      throw fail(
        .invalidHeader, 8,
        "unknown incompatible flags 0x\(String(incompatible, radix: 16)) in flags 0x\(String(flags.rawValue, radix: 16))"
      )
    }
    if flags.contains(.markers) && !flags.contains(.compressed) {
      throw fail(.invalidHeader, 8, "flags 0x\(String(flags.rawValue, radix: 16)) set markers without compression")
    }
    guard compressAlgorithm <= 1 else {
      throw fail(.invalidHeader, 77, "compressAlgorithm \(compressAlgorithm); expected 0 (none) or 1 (deflate)")
    }
    guard grainSectors != 0 else {
      throw fail(.invalidGrainSize, 20, "grain size is 0 sectors")
    }
    guard grainSectors & (grainSectors - 1) == 0 else {
      throw fail(.invalidGrainSize, 20, "grain size \(grainSectors) sectors is not a power of two")
    }
    guard grainSectors <= Limits.maxGrainSectors else {
      throw fail(
        .invalidGrainSize, 20,
        "grain size \(grainSectors) sectors is larger than the cap of \(Limits.maxGrainSectors)")
    }
    guard numGTEsPerGT == 512 else {
      throw fail(.invalidTableSize, 44, "grain table size \(numGTEsPerGT) entries; expected 512")
    }
    guard capacitySectors <= Limits.maxCapacitySectors else {
      throw fail(.capacityOverflow, 12, "capacity \(capacitySectors) sectors overflows a 64-bit byte size")
    }
    let layout = SparseLayout(capacitySectors: capacitySectors, grainSectors: grainSectors)
    guard layout.grainTableCount <= Limits.maxGrainDirectoryEntries else {
      throw fail(
        .capacityOverflow, 12,
        "capacity \(capacitySectors) sectors needs \(layout.grainTableCount) grain directory entries; the cap is \(Limits.maxGrainDirectoryEntries)"
      )
    }
    if descriptorOffsetSectors != 0 {
      guard descriptorSizeSectors <= Limits.maxDescriptorBytes / 512 else {
        throw fail(
          .descriptorTooLarge, 36,
          "embedded descriptor of \(descriptorSizeSectors) sectors is larger than the cap of 1 MiB")
      }
      try checkRange(
        "embedded descriptor", field: 28, sector: descriptorOffsetSectors,
        bytes: descriptorSizeSectors * 512, fileSize: fileSize, baseOffset: baseOffset, allowShort: true)
    }
    if !grainDirectoryAtEnd {
      guard gdOffsetSectors != 0 else {
        throw fail(.invalidHeader, 56, "grain directory offset is 0")
      }
      try checkRange(
        "grain directory (\(layout.grainTableCount) entries)", field: 56, sector: gdOffsetSectors,
        bytes: layout.grainDirectoryBytes, fileSize: fileSize, baseOffset: baseOffset)
    }
    if flags.contains(.useRedundantGrainDirectory) && rgdOffsetSectors != 0
      && rgdOffsetSectors != SparseExtentHeader.gdAtEnd
    {
      try checkRange(
        "redundant grain directory (\(layout.grainTableCount) entries)", field: 48,
        sector: rgdOffsetSectors, bytes: layout.grainDirectoryBytes, fileSize: fileSize,
        baseOffset: baseOffset)
    }
    let (overheadBytes, o) = overheadSectors.multipliedReportingOverflow(by: 512)
    if o || overheadBytes > fileSize {
      throw fail(
        .truncated, 64,
        "file truncated: overHead says grains start at sector \(overheadSectors), the file is \(fileSize) bytes")
    }
    return layout
  }

  private func checkRange(
    _ what: String, field: Int, sector: UInt64, bytes: UInt64, fileSize: UInt64, baseOffset: UInt64,
    allowShort: Bool = false
  ) throws {
    let (start, o1) = sector.multipliedReportingOverflow(by: 512)
    let (end, o2) = start.addingReportingOverflow(bytes)
    if o1 || o2 || (allowShort ? start >= fileSize : end > fileSize) {
      throw FormatError(
        .offsetPastEnd, offset: baseOffset + UInt64(field),
        "\(what) at sector \(sector) ends past the end of the file (\(fileSize) bytes)")
    }
  }
}

/// Sizes of the grain directory and tables of a hosted sparse extent.
public struct SparseLayout: Equatable, Sendable {
  public let capacitySectors: UInt64
  public let grainSectors: UInt64
  /// Entries in one grain table.
  public static let entriesPerTable: UInt64 = 512

  public init(capacitySectors: UInt64, grainSectors: UInt64) {
    self.capacitySectors = capacitySectors
    self.grainSectors = grainSectors
  }

  /// Sectors covered by one grain table.
  public var sectorsPerTable: UInt64 { SparseLayout.entriesPerTable * grainSectors }
  /// Grains needed to cover the capacity (the last may be partial).
  public var grainCount: UInt64 { capacitySectors / grainSectors + (capacitySectors % grainSectors == 0 ? 0 : 1) }
  /// Grain tables, and so grain directory entries.
  public var grainTableCount: UInt64 {
    grainCount / SparseLayout.entriesPerTable + (grainCount % SparseLayout.entriesPerTable == 0 ? 0 : 1)
  }
  /// Bytes of the grain directory's entries.
  public var grainDirectoryBytes: UInt64 { grainTableCount * 4 }
  /// Sectors of the grain directory, rounded up.
  public var grainDirectorySectors: UInt64 { (grainDirectoryBytes + 511) / 512 }
  /// Bytes of one grain table.
  public static let tableBytes: UInt64 = entriesPerTable * 4

  /// Where a new hosted sparse extent puts its metadata (qemu's and VMware's order, notes
  /// §1.7 and Appendix A), in sectors: the descriptor from sector 1, then the redundant
  /// directory and its tables, then the directory and its tables; `overhead` rounds the end
  /// up to a grain. Callers check `metadataEnd` against the u32 sector range of entries.
  public func hostedPlacement(descriptorSectors: UInt64) -> (
    rgd: UInt64, gd: UInt64, metadataEnd: UInt64, overhead: UInt64
  ) {
    let tableSectors = SparseLayout.tableBytes / 512
    let rgd = 1 + descriptorSectors
    let gd = rgd + grainDirectorySectors + grainTableCount * tableSectors
    let metadataEnd = gd + grainDirectorySectors + grainTableCount * tableSectors
    let overhead = (metadataEnd + grainSectors - 1) / grainSectors * grainSectors
    return (rgd, gd, metadataEnd, overhead)
  }
}
