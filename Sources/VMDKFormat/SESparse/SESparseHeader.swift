// The ESXi seSparse extent's constant header (sector 0) and volatile header. No public VMware
// specification exists; the constants are the ones qemu checks and a real ESXi file confirms.
// All fields are u64; offsets and sizes are in sectors.

/// A parsed seSparse constant header.
public struct SESparseConstHeader: Equatable, Sendable {
  public static let magic: UInt64 = 0x0000_0000_CAFE_BABE
  public static let expectedVersion: UInt64 = 0x0000_0002_0000_0001
  /// Entries in one grain table (32 KiB of u64).
  public static let entriesPerTable: UInt64 = 4096

  public var capacitySectors: UInt64
  public var grainSectors: UInt64
  public var grainTableSizeSectors: UInt64
  public var volatileHeaderOffset: UInt64
  public var journalHeaderOffset: UInt64
  public var grainDirOffset: UInt64
  public var grainDirSize: UInt64
  public var grainTablesOffset: UInt64
  public var grainTablesSize: UInt64
  public var freeBitmapOffset: UInt64
  public var backmapOffset: UInt64
  public var grainsOffset: UInt64
  public var grainsSize: UInt64

  public static func hasMagic(_ bytes: [UInt8]) -> Bool {
    guard bytes.count >= 8 else { return false }
    return (try? ByteReader(bytes).u64(0, "magic")) == magic
  }

  /// Parses and checks the constant header (qemu's strict checks) against `fileSize`.
  public init(parsing bytes: [UInt8], fileSize: UInt64) throws {
    let r = ByteReader(bytes)
    func fail(_ kind: FormatError.Kind, _ field: Int, _ m: String) -> FormatError {
      FormatError(kind, offset: UInt64(field), "seSparse header: \(m)")
    }
    let magic = try r.u64(0, "magic")
    guard magic == SESparseConstHeader.magic else {
      throw fail(.badMagic, 0, "expected magic 0xcafebabe, found 0x\(String(magic, radix: 16))")
    }
    let version = try r.u64(8, "version")
    guard version == SESparseConstHeader.expectedVersion else {
      throw fail(.unsupportedVersion, 8, "version 0x\(String(version, radix: 16)); expected 0x200000001")
    }
    capacitySectors = try r.u64(16, "capacity")
    grainSectors = try r.u64(24, "grain_size")
    guard grainSectors == 8 else { throw fail(.invalidGrainSize, 24, "grain size \(grainSectors); expected 8") }
    grainTableSizeSectors = try r.u64(32, "grain_table_size")
    guard grainTableSizeSectors == 64 else {
      throw fail(.invalidTableSize, 32, "grain table size \(grainTableSizeSectors) sectors; expected 64")
    }
    let flags = try r.u64(40, "flags")
    guard flags == 0 else { throw fail(.invalidHeader, 40, "flags 0x\(String(flags, radix: 16)); expected 0") }
    for off in stride(from: 48, to: 80, by: 8) where try r.u64(off, "reserved") != 0 {
      throw fail(.invalidHeader, off, "reserved field is not zero")
    }
    volatileHeaderOffset = try r.u64(80, "volatile_header_offset")
    journalHeaderOffset = try r.u64(96, "journal_header_offset")
    grainDirOffset = try r.u64(128, "grain_dir_offset")
    grainDirSize = try r.u64(136, "grain_dir_size")
    grainTablesOffset = try r.u64(144, "grain_tables_offset")
    grainTablesSize = try r.u64(152, "grain_tables_size")
    freeBitmapOffset = try r.u64(160, "free_bitmap_offset")
    backmapOffset = try r.u64(176, "backmap_offset")
    grainsOffset = try r.u64(192, "grains_offset")
    grainsSize = try r.u64(200, "grains_size")
    for off in stride(from: 208, to: 512, by: 8) where try r.u64(off, "pad") != 0 {
      throw fail(.invalidHeader, off, "padding is not zero")
    }
    guard capacitySectors <= Limits.maxCapacitySectors else {
      throw fail(.capacityOverflow, 16, "capacity \(capacitySectors) sectors overflows")
    }
    let gdEntries = grainDirSize.multipliedReportingOverflow(by: 64)
    guard !gdEntries.overflow, gdEntries.partialValue <= Limits.maxGrainDirectoryEntries else {
      throw fail(.capacityOverflow, 136, "grain directory of \(grainDirSize) sectors is larger than the cap")
    }
    let needed =
      (capacitySectors + SESparseConstHeader.entriesPerTable * 8 - 1) / (SESparseConstHeader.entriesPerTable * 8)
    guard gdEntries.partialValue >= needed else {
      throw fail(
        .invalidHeader, 136,
        "grain directory of \(gdEntries.partialValue) entries cannot cover \(capacitySectors) sectors")
    }
    for (field, off, size) in [
      ("volatile header", 80, UInt64(1)), ("grain directory", 128, grainDirSize),
    ] {
      let start = (field == "volatile header" ? volatileHeaderOffset : grainDirOffset)
      let (b, o1) = start.multipliedReportingOverflow(by: 512)
      let (e, o2) = b.addingReportingOverflow(size * 512)
      if o1 || o2 || e > fileSize {
        throw fail(.offsetPastEnd, off, "\(field) at sector \(start) ends past the end of the file (\(fileSize) bytes)")
      }
    }
    guard grainTablesOffset <= Limits.maxCapacitySectors, grainsOffset <= Limits.maxCapacitySectors,
      grainsSize <= Limits.maxCapacitySectors, grainTablesSize <= Limits.maxCapacitySectors
    else {
      throw fail(.offsetPastEnd, 144, "table or grain area offsets overflow")
    }
  }

  /// Entries in the grain directory.
  public var grainDirectoryEntries: UInt64 { grainDirSize * 512 / 8 }
  /// Sectors covered by one grain table.
  public var sectorsPerTable: UInt64 { SESparseConstHeader.entriesPerTable * grainSectors }
}

/// Checks the seSparse volatile header: magic 0xcafecafe and no journal to replay.
public enum SESparseVolatileHeader {
  public static let magic: UInt64 = 0x0000_0000_CAFE_CAFE

  public static func validate(_ bytes: [UInt8], baseOffset: UInt64) throws {
    let r = ByteReader(bytes, baseOffset: baseOffset)
    let magic = try r.u64(0, "volatile magic")
    guard magic == SESparseVolatileHeader.magic else {
      throw FormatError(
        .badMagic, offset: baseOffset,
        "seSparse volatile header: expected magic 0xcafecafe, found 0x\(String(magic, radix: 16))")
    }
    let replay = try r.u64(24, "replay_journal")
    guard replay == 0 else {
      throw FormatError(
        .invalidHeader, offset: baseOffset + 24,
        "seSparse image is dirty: its journal needs replaying, which is not supported")
    }
  }
}
