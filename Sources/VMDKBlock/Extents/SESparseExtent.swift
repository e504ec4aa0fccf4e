// ESXi seSparse extents, read-only: u64 directory and table entries whose top nibble is a type,
// decoded by SESparseEntryDecoder (VMDKFormat).

import VMDKFormat
import VMDKTransport

struct SESparseScheme: GrainScheme {
  let header: SESparseConstHeader
  var grainSectors: UInt64 { header.grainSectors }
  var entriesPerTable: UInt64 { SESparseConstHeader.entriesPerTable }
  var directoryEntries: UInt64 { header.grainDirectoryEntries }
  var directoryOffset: UInt64 { header.grainDirOffset * 512 }
  var decoder: SESparseEntryDecoder { SESparseEntryDecoder(header: header) }
  var hasMarkers: Bool { false }
  var format: ExtentFormat { .seSparse }

  func check(_ extent: SESparseExtent, into report: inout CheckReport) throws {
    try extent.checkTables(
      metadataEnd: header.grainsOffset * 512, compressedEnd: nil, into: &report, countLeaks: false)
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
