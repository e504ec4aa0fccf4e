// ESX vmfsSparse ("COWD") redo-log extents, read-only: 4096-entry tables of u32 sector numbers.

import VMDKFormat
import VMDKTransport

struct COWDScheme: GrainScheme {
  let header: COWDHeader
  var grainSectors: UInt64 { UInt64(header.grainSectors) }
  var entriesPerTable: UInt64 { COWDHeader.entriesPerTable }
  var directoryEntries: UInt64 { UInt64(header.numGDEntries) }
  var directoryOffset: UInt64 { UInt64(header.gdOffsetSectors) * 512 }
  var decoder: COWDEntryDecoder { COWDEntryDecoder() }
  var hasMarkers: Bool { false }
  var format: ExtentFormat { .cowd }

  func check(_ extent: COWDExtent, into report: inout CheckReport) throws {
    try extent.checkTables(
      metadataEnd: UInt64(header.gdOffsetSectors) * 512, compressedEnd: nil, into: &report, countLeaks: false)
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
