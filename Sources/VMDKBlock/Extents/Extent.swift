// The extent interface: one piece of a link's sector address space, backed by a flat file, a
// sparse file with grain tables, a COWD or seSparse redo log, or nothing (ZERO). Each extent
// answers block status for its own sectors from its tables and reads the sectors it holds.

import VMDKFormat
import VMDKTransport

/// What one layer says about a run of sectors.
public enum LayerStatus: Sendable, Equatable {
  /// Allocated in this layer with data to read.
  case data
  /// Allocated in this layer, known to read as zeros (a hole in a flat file).
  case dataZero
  /// Reads as zeros without falling through (zeroed grain, ZERO extent).
  case zero
  /// Not allocated in this layer: falls through to the parent, or zeros at the bottom.
  case unallocated
}

/// A run of sectors with one status, extent-relative, and where its bytes are.
struct ExtentRun {
  var start: UInt64
  var count: UInt64
  var status: LayerStatus
  /// Byte offset of `start`'s data in the extent's file, when stored uncompressed.
  var hostOffset: UInt64?
  /// For a compressed grain: the byte offset of its marker (or data) in the file.
  var compressedAt: UInt64?
}

/// One extent of a link.
protocol Extent: AnyObject, Sendable {
  /// The descriptor's line for this extent.
  var line: ExtentDescription { get }
  /// Sectors this extent contributes to the link.
  var sectors: UInt64 { get }
  /// The file behind the extent, if any.
  var store: (any ByteStore)? { get }
  /// Calls `body` with merged runs covering `[start, start+count)` (extent-relative sectors).
  func mapRuns(start: UInt64, count: UInt64, _ body: (ExtentRun) throws -> Void) throws
  /// Reads the run's sectors (status `.data` or `.dataZero`) into `buffer` (count*512 bytes).
  func read(_ run: ExtentRun, into buffer: UnsafeMutableRawBufferPointer) throws
  /// How the extent stores its sectors.
  var format: ExtentFormat { get }
  /// In-place writes, when the extent takes them (Abilities.swift).
  var writable: (any WritableExtent)? { get }
  /// The metadata check, when the extent has metadata or a size to check.
  var checkable: (any CheckableExtent)? { get }
  /// What maintenance can rewrite, grow or truncate.
  var maintainable: MaintainableExtent? { get }
}

extension Extent {
  var writable: (any WritableExtent)? { nil }
  var checkable: (any CheckableExtent)? { nil }
  var maintainable: MaintainableExtent? { nil }
}

/// Throws the VMDKError for a format error in `file`.
func wrap<T>(_ file: String, _ body: () throws -> T) throws -> T {
  do {
    return try body()
  } catch let e as FormatError {
    throw VMDKError(e, file: file)
  }
}

extension VMDKError {
  /// The public error for a format error found in `file`.
  public init(_ e: FormatError, file: String) {
    let code: Code
    switch e.kind {
    case .truncated: code = .truncated
    case .badMagic: code = .badMagic
    case .unsupportedVersion: code = .unsupportedVersion
    case .invalidGrainSize: code = .invalidGrainSize
    case .invalidTableSize: code = .invalidTableSize
    case .offsetPastEnd: code = .offsetPastEnd
    case .capacityOverflow: code = .capacityOverflow
    case .descriptorTooLarge: code = .descriptorTooLarge
    case .invalidDescriptor: code = .invalidDescriptor
    case .corruptCompressedData: code = .corruptCompressedData
    case .compressedGrainTooLarge: code = .compressedGrainTooLarge
    case .invalidMarker: code = .invalidMarker
    case .invalidHeader: code = .invalidHeader
    case .invalidTable: code = .invalidTable
    }
    self.init(code, e.message, file: file, offset: e.offset, underlying: e)
  }
}
