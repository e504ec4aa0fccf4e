// Hosted sparse and streamOptimized extents ("KDMV"): opening (header, footer, checks) and the
// scheme their grain tables are read through.

import VMDKFormat
import VMDKTransport

/// The KDMV scheme: 512-entry tables of u32 sector numbers, decoded by SparseEntryDecoder.
struct SparseScheme: GrainScheme {
  let header: SparseExtentHeader
  let layout: SparseLayout
  var grainSectors: UInt64 { header.grainSectors }
  var entriesPerTable: UInt64 { SparseLayout.entriesPerTable }
  var directoryEntries: UInt64 { layout.grainTableCount }
  var directoryOffset: UInt64 { header.gdOffsetSectors * 512 }
  var decoder: SparseEntryDecoder { SparseEntryDecoder(header: header) }
  var hasMarkers: Bool { header.hasMarkers }
  var format: ExtentFormat { header.isCompressed ? .stream : .sparse }

  func check(_ extent: SparseExtent, into report: inout CheckReport) throws {
    try extent.checkSparse(header, into: &report)
  }
  static func writable(_ extent: SparseExtent) -> (any WritableExtent)? { extent }
  static func maintainable(_ extent: SparseExtent) -> MaintainableExtent? {
    extent.acceptsInPlaceWrites ? .sparse(extent) : nil
  }
}

typealias SparseExtent = GrainTableExtent<SparseScheme>

extension GrainTableExtent: WritableExtent where Scheme == SparseScheme {
  var appendOnlyStream: SparseExtent? { !acceptsInPlaceWrites && scheme.header.hasMarkers ? self : nil }
}

/// What opening a KDMV file found: the effective header (the footer when the header says the
/// directory is at the end), the layout, and the header as it is at sector 0.
struct OpenedSparseHeader {
  let header: SparseExtentHeader
  let headerAtZero: SparseExtentHeader
  let layout: SparseLayout
  let fileSize: UInt64
}

enum SparseExtentOpener {
  /// Reads and checks the header (and footer) of a KDMV file.
  static func readHeader(_ file: any ByteStore) throws -> OpenedSparseHeader {
    let fileSize = try file.size()
    let bytes = try file.readUpTo(at: 0, count: SparseExtentHeader.size)
    return try wrap(file.name) {
      let atZero = try SparseExtentHeader(parsing: bytes)
      var effective = atZero
      var headerOffset: UInt64 = 0
      if atZero.grainDirectoryAtEnd {
        let tailCount = Int(min(UInt64(StreamFooter.tailBytes), fileSize))
        let tail = try file.readUpTo(at: fileSize - UInt64(tailCount), count: tailCount)
        effective = try StreamFooter.parse(tail: tail, fileSize: fileSize)
        // The footer's header is the second-to-last sector (before the end-of-stream marker).
        headerOffset = fileSize - 1024
      }
      let layout = try effective.validate(fileSize: fileSize, baseOffset: headerOffset)
      return OpenedSparseHeader(header: effective, headerAtZero: atZero, layout: layout, fileSize: fileSize)
    }
  }

  static func open(line: ExtentDescription, file: any ByteStore, cache: TableCache) throws -> (
    SparseExtent, OpenedSparseHeader
  ) {
    let opened = try readHeader(file)
    let scheme = SparseScheme(header: opened.header, layout: opened.layout)
    let extent = SparseExtent(line: line, file: file, fileSize: opened.fileSize, scheme: scheme, cache: cache)
    return (extent, opened)
  }
}
