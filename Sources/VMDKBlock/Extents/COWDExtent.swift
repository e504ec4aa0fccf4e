// ESX vmfsSparse ("COWD") redo-log extents, read-only: 4096-entry tables of u32 sector numbers.

import VMDKFormat
import VMDKTransport

struct COWDScheme: GrainScheme {
  let header: COWDHeader
  var grainSectors: UInt64 { UInt64(header.grainSectors) }
  var entriesPerTable: UInt64 { COWDHeader.entriesPerTable }
  var directoryEntries: UInt64 { UInt64(header.numGDEntries) }
  var directoryOffset: UInt64 { UInt64(header.gdOffsetSectors) * 512 }
  var entryBytes: Int { 4 }
  var hasMarkers: Bool { false }
  var format: ExtentFormat { .cowd }

  func check(_ extent: COWDExtent, into report: inout CheckReport) throws {
    try extent.checkTables(
      metadataEnd: UInt64(header.gdOffsetSectors) * 512, compressedEnd: nil, into: &report, countLeaks: false)
  }

  func tableOffset(gde: UInt64, at: UInt64, fileSize: UInt64) throws -> UInt64? {
    guard gde != 0 else { return nil }
    let offset = gde * 512
    guard offset + COWDHeader.entriesPerTable * 4 <= fileSize else {
      throw FormatError(
        .offsetPastEnd, offset: at,
        "COWD grain directory entry says its grain table is at sector \(gde), past the end of the file (\(fileSize) bytes)"
      )
    }
    return offset
  }

  func grain(gte: UInt64, at: UInt64, fileSize: UInt64) throws -> GrainLocation {
    guard gte != 0 else { return .unallocated }
    guard gte * 512 < fileSize else {
      throw FormatError(
        .offsetPastEnd, offset: at,
        "COWD grain table entry says its grain is at sector \(gte), past the end of the file (\(fileSize) bytes)")
    }
    return .data(gte * 512)
  }
}

typealias COWDExtent = GrainTableExtent<COWDScheme>

enum COWDExtentOpener {
  static func open(line: ExtentDescription, file: any ByteStore, cache: TableCache) throws -> (COWDExtent, COWDHeader) {
    let fileSize = try file.size()
    let bytes = try file.readUpTo(at: 0, count: COWDHeader.size)
    let header = try wrap(file.name) {
      let h = try COWDHeader(parsing: bytes)
      try h.validate(fileSize: fileSize)
      return h
    }
    let extent = COWDExtent(
      line: line, file: file, fileSize: fileSize, scheme: COWDScheme(header: header), cache: cache)
    return (extent, header)
  }
}
