// Grain directory and grain table entries of the three grain-mapped formats (KDMV hosted
// sparse and streamOptimized, COWD vmfsSparse, seSparse), decoded as pure values: an entry
// and the size of the file it lives in go in; a table offset, a grain location or a typed
// error at the entry's byte offset come out. The block layer walks the tables (with its cache)
// and reads; every rule about what an entry means lives here.

/// Where a grain is, decoded from its grain table entry.
public enum GrainLocation: Equatable, Sendable {
  case unallocated
  case zero
  /// Uncompressed grain data at this byte offset in the file.
  case data(UInt64)
  /// A compressed grain whose marker (or zlib stream) starts at this byte offset.
  case compressed(UInt64)
}

/// How one format encodes its grain directory and table entries.
public protocol GrainEntryDecoder: Sendable {
  /// Bytes per directory and table entry (4 or 8), little-endian.
  var entryBytes: Int { get }
  /// Byte offset of the grain table that directory entry `gde` (found at byte `at`) names,
  /// or nil when its region has no table. The whole table lies inside `fileSize`.
  func tableOffset(gde: UInt64, at: UInt64, fileSize: UInt64) throws(FormatError) -> UInt64?
  /// Decodes grain table entry `gte`, found at byte `at`. A grain's start lies inside `fileSize`.
  func grain(gte: UInt64, at: UInt64, fileSize: UInt64) throws(FormatError) -> GrainLocation
}

/// Little-endian directory and table entries.
public enum GrainEntries {
  /// The first `count` entries of `width` (4 or 8) bytes in `bytes`; fewer when `bytes` is short.
  public static func decode(_ bytes: UnsafeRawBufferPointer, width: Int, count: Int) -> [UInt64] {
    let n = width > 0 ? min(max(0, count), bytes.count / width) : 0
    return (0..<n).map { i in
      width == 4
        ? UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
        : UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
    }
  }

  /// As above, for a byte array.
  public static func decode(_ bytes: [UInt8], width: Int, count: Int) -> [UInt64] {
    bytes.withUnsafeBytes { decode($0, width: width, count: count) }
  }

  /// A sector number as a byte offset, or nil when that overflows.
  static func byteOffset(sector: UInt64) -> UInt64? {
    let (offset, overflow) = sector.multipliedReportingOverflow(by: 512)
    return overflow ? nil : offset
  }
}

/// KDMV (hosted sparse, streamOptimized): u32 sector numbers; table entry 1 is a zeroed grain
/// when the header has zeroed-grain entries; a compressed image's entries point at grain markers.
public struct SparseEntryDecoder: GrainEntryDecoder {
  public let zeroedGrainEntries: Bool
  public let compressed: Bool
  /// Bytes of one grain table (512 entries of 4 bytes).
  public static let tableBytes: UInt64 = 512 * 4

  public init(zeroedGrainEntries: Bool, compressed: Bool) {
    self.zeroedGrainEntries = zeroedGrainEntries
    self.compressed = compressed
  }

  public init(header: SparseExtentHeader) {
    self.init(zeroedGrainEntries: header.hasZeroedGrainEntries, compressed: header.isCompressed)
  }

  public var entryBytes: Int { 4 }

  public func tableOffset(gde: UInt64, at: UInt64, fileSize: UInt64) throws(FormatError) -> UInt64? {
    guard gde != 0 else { return nil }
    guard let offset = GrainEntries.byteOffset(sector: gde), offset <= fileSize,
      Self.tableBytes <= fileSize - offset
    else {
      throw FormatError(
        .offsetPastEnd, offset: at,
        "grain directory entry says its grain table is at sector \(gde), past the end of the file (\(fileSize) bytes)")
    }
    return offset
  }

  public func grain(gte: UInt64, at: UInt64, fileSize: UInt64) throws(FormatError) -> GrainLocation {
    if gte == 0 { return .unallocated }
    if gte == 1 && zeroedGrainEntries { return .zero }
    guard let offset = GrainEntries.byteOffset(sector: gte), offset < fileSize else {
      throw FormatError(
        .offsetPastEnd, offset: at,
        "grain table entry says its grain is at sector \(gte), past the end of the file (\(fileSize) bytes)")
    }
    return compressed ? .compressed(offset) : .data(offset)
  }
}

/// COWD (ESX vmfsSparse redo logs): u32 sector numbers in 4096-entry tables.
public struct COWDEntryDecoder: GrainEntryDecoder {
  public init() {}

  public var entryBytes: Int { 4 }

  public func tableOffset(gde: UInt64, at: UInt64, fileSize: UInt64) throws(FormatError) -> UInt64? {
    guard gde != 0 else { return nil }
    let tableBytes = COWDHeader.entriesPerTable * 4
    guard let offset = GrainEntries.byteOffset(sector: gde), offset <= fileSize, tableBytes <= fileSize - offset
    else {
      throw FormatError(
        .offsetPastEnd, offset: at,
        "COWD grain directory entry says its grain table is at sector \(gde), past the end of the file (\(fileSize) bytes)"
      )
    }
    return offset
  }

  public func grain(gte: UInt64, at: UInt64, fileSize: UInt64) throws(FormatError) -> GrainLocation {
    guard gte != 0 else { return .unallocated }
    guard let offset = GrainEntries.byteOffset(sector: gte), offset < fileSize else {
      throw FormatError(
        .offsetPastEnd, offset: at,
        "COWD grain table entry says its grain is at sector \(gte), past the end of the file (\(fileSize) bytes)")
    }
    return .data(offset)
  }
}

/// seSparse: u64 entries whose top nibble is a type. Directory entries: 0 none, type 1 a table
/// index. Table entries: 0 unallocated, types 1 (unmapped) and 2 (zero) read as zeros, type 3
/// a grain index whose 12-bit high part sits in bits 48-59 (qemu's reading, the only public one).
public struct SESparseEntryDecoder: GrainEntryDecoder {
  public let grainSectors: UInt64
  public let grainTablesOffsetSectors: UInt64
  public let grainTableSizeSectors: UInt64
  public let grainsOffsetSectors: UInt64

  public init(
    grainSectors: UInt64, grainTablesOffsetSectors: UInt64, grainTableSizeSectors: UInt64,
    grainsOffsetSectors: UInt64
  ) {
    self.grainSectors = grainSectors
    self.grainTablesOffsetSectors = grainTablesOffsetSectors
    self.grainTableSizeSectors = grainTableSizeSectors
    self.grainsOffsetSectors = grainsOffsetSectors
  }

  public init(header: SESparseConstHeader) {
    self.init(
      grainSectors: header.grainSectors, grainTablesOffsetSectors: header.grainTablesOffset,
      grainTableSizeSectors: header.grainTableSizeSectors, grainsOffsetSectors: header.grainsOffset)
  }

  public var entryBytes: Int { 8 }

  public func tableOffset(gde: UInt64, at: UInt64, fileSize: UInt64) throws(FormatError) -> UInt64? {
    guard gde != 0 else { return nil }
    guard gde & 0xFFFF_FFFF_0000_0000 == 0x1000_0000_0000_0000 else {
      throw FormatError(
        .invalidTable, offset: at, "seSparse grain directory entry 0x\(String(gde, radix: 16)) has an unknown type")
    }
    let index = gde & 0xFFFF_FFFF
    let (within, o1) = index.multipliedReportingOverflow(by: grainTableSizeSectors)
    let (sector, o2) = grainTablesOffsetSectors.addingReportingOverflow(within)
    let (tableBytes, o3) = grainTableSizeSectors.multipliedReportingOverflow(by: 512)
    guard !o1, !o2, !o3, let offset = GrainEntries.byteOffset(sector: sector), offset <= fileSize,
      tableBytes <= fileSize - offset
    else {
      throw FormatError(
        .offsetPastEnd, offset: at,
        "seSparse grain table \(index) at sector \(sector) is past the end of the file (\(fileSize) bytes)")
    }
    return offset
  }

  public func grain(gte: UInt64, at: UInt64, fileSize: UInt64) throws(FormatError) -> GrainLocation {
    switch gte >> 60 {
    case 0:
      guard gte == 0 else {
        throw FormatError(
          .invalidTable, offset: at, "seSparse grain table entry 0x\(String(gte, radix: 16)) is invalid")
      }
      return .unallocated
    case 1, 2: return .zero
    case 3:
      let index = ((gte & 0x0FFF_0000_0000_0000) >> 48) | ((gte & 0x0000_FFFF_FFFF_FFFF) << 12)
      let (sector, o1) = index.multipliedReportingOverflow(by: grainSectors)
      let (absolute, o2) = grainsOffsetSectors.addingReportingOverflow(sector)
      guard !o1, !o2, let offset = GrainEntries.byteOffset(sector: absolute), offset < fileSize else {
        throw FormatError(
          .offsetPastEnd, offset: at, "seSparse grain \(index) is past the end of the file (\(fileSize) bytes)")
      }
      return .data(offset)
    default:
      throw FormatError(
        .invalidTable, offset: at, "seSparse grain table entry 0x\(String(gte, radix: 16)) has an unknown type")
    }
  }
}
