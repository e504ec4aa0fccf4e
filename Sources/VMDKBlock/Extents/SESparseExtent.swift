// ESXi seSparse extents, read-only: u64 directory and table entries whose top nibble is a type.
// Decoding follows qemu's reader, the only public one; type 1 ("unmapped") reads as zeros.

import VMDKFormat
import VMDKTransport

struct SESparseScheme: GrainScheme {
  let header: SESparseConstHeader
  var grainSectors: UInt64 { header.grainSectors }
  var entriesPerTable: UInt64 { SESparseConstHeader.entriesPerTable }
  var directoryEntries: UInt64 { header.grainDirectoryEntries }
  var directoryOffset: UInt64 { header.grainDirOffset * 512 }
  var entryBytes: Int { 8 }
  var hasMarkers: Bool { false }
  var format: ExtentFormat { .seSparse }

  func check(_ extent: SESparseExtent, into report: inout CheckReport) throws {
    try extent.checkTables(
      metadataEnd: header.grainsOffset * 512, compressedEnd: nil, into: &report, countLeaks: false)
  }

  func tableOffset(gde: UInt64, at: UInt64, fileSize: UInt64) throws -> UInt64? {
    guard gde != 0 else { return nil }
    guard gde & 0xFFFF_FFFF_0000_0000 == 0x1000_0000_0000_0000 else {
      throw FormatError(
        .invalidTable, offset: at, "seSparse grain directory entry 0x\(String(gde, radix: 16)) has an unknown type")
    }
    let index = gde & 0xFFFF_FFFF
    let sector = header.grainTablesOffset + index * header.grainTableSizeSectors
    let offset = sector * 512
    guard sector <= Limits.maxCapacitySectors, offset + header.grainTableSizeSectors * 512 <= fileSize else {
      throw FormatError(
        .offsetPastEnd, offset: at,
        "seSparse grain table \(index) at sector \(sector) is past the end of the file (\(fileSize) bytes)")
    }
    return offset
  }

  func grain(gte: UInt64, at: UInt64, fileSize: UInt64) throws -> GrainLocation {
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
      let (sector, o1) = index.multipliedReportingOverflow(by: header.grainSectors)
      let (absolute, o2) = header.grainsOffset.addingReportingOverflow(sector)
      let (offset, o3) = absolute.multipliedReportingOverflow(by: 512)
      guard !o1, !o2, !o3, offset < fileSize else {
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

typealias SESparseExtent = GrainTableExtent<SESparseScheme>

enum SESparseExtentOpener {
  static func open(line: ExtentDescription, file: any ByteStore, cache: TableCache) throws -> (
    SESparseExtent, SESparseConstHeader
  ) {
    let fileSize = try file.size()
    let bytes = try file.readUpTo(at: 0, count: 512)
    let header = try wrap(file.name) { try SESparseConstHeader(parsing: bytes, fileSize: fileSize) }
    let volatileAt = header.volatileHeaderOffset * 512
    let vol = try file.readExactly(at: volatileAt, count: 512, what: "seSparse volatile header")
    try wrap(file.name) { try SESparseVolatileHeader.validate(vol, baseOffset: volatileAt) }
    let extent = SESparseExtent(
      line: line, file: file, fileSize: fileSize, scheme: SESparseScheme(header: header), cache: cache)
    return (extent, header)
  }
}
