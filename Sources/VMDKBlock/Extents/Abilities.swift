// What an extent can do beyond reading, as small abilities the extent hands out itself: the
// block layer asks `extent.writable`, `extent.checkable` or `extent.maintainable` instead of
// testing for concrete classes, so a new kind of extent states its abilities in one place.

import VMDKFormat
import VMDKTransport

/// How an extent stores its sectors (`vmdk-inspect info` prints the raw value).
public enum ExtentFormat: String, Sendable, CaseIterable {
  /// A hosted sparse (KDMV) extent.
  case sparse
  /// A streamOptimized (compressed KDMV) extent.
  case stream
  /// An ESX vmfsSparse redo log.
  case cowd
  /// An ESX seSparse extent.
  case seSparse = "sesparse"
  /// A FLAT or VMFS extent: sectors at an offset of a file.
  case flat
  /// A raw image (or an NBD export): the file is the disk.
  case raw
  /// A ZERO extent: no file, reads as zeros.
  case zero
  /// A raw device mapping: reading needs the device.
  case device
  /// A NOACCESS extent.
  case noAccess = "noaccess"

  /// The name VMware's documentation gives it, for messages.
  public var displayName: String {
    switch self {
    case .sparse: "hosted sparse"
    case .stream: "streamOptimized"
    case .cowd: "vmfsSparse (COWD)"
    case .seSparse: "seSparse"
    case .flat: "flat"
    case .raw: "raw"
    case .zero: "ZERO"
    case .device: "raw device mapping"
    case .noAccess: "NOACCESS"
    }
  }
}

/// An extent that takes writes in place: a flat file, a hosted sparse extent (a
/// streamOptimized one only as the single extent of a disk without parent, by appending).
protocol WritableExtent: Extent {
  /// Writes whole sectors at the extent-relative sector `start`. `underneath` reads the
  /// layers below (extent-relative sectors) for the rest of a grain that is newly allocated.
  func writeSectors(
    start: UInt64, _ data: UnsafeRawBufferPointer, stop: SparseWriteStop,
    underneath: (_ start: UInt64, _ count: UInt64, _ into: UnsafeMutableRawBufferPointer) throws -> Void
  ) throws
  /// The streamOptimized extent this is, when it takes sequential appends only.
  var appendOnlyStream: SparseExtent? { get }
}

extension WritableExtent {
  var appendOnlyStream: SparseExtent? { nil }
}

/// An extent whose metadata `Disk.check()` walks: directories, tables, grains, file sizes.
protocol CheckableExtent: Extent {
  func check(into report: inout CheckReport) throws
}

/// What maintenance (resize, compact, defragment, repair) can work on: a hosted sparse extent
/// it rewrites, grows in place or mends, or a flat file it truncates or extends. Every other
/// extent (streamOptimized, COWD, seSparse, ZERO, devices) has none.
enum MaintainableExtent {
  case sparse(SparseExtent)
  case flat(FlatExtent)
}

extension ExtentInfo {
  /// The hosted sparse extent maintenance rewrites, grows or mends (not streamOptimized).
  var hostedSparse: SparseExtent? {
    if case .sparse(let s) = reader.maintainable { return s }
    return nil
  }
  /// The flat file maintenance truncates or extends.
  var flatFile: FlatExtent? {
    if case .flat(let f) = reader.maintainable { return f }
    return nil
  }
}

/// What a grain-table scheme adds to the extent that reads through it.
extension GrainScheme {
  static func writable(_ extent: GrainTableExtent<Self>) -> (any WritableExtent)? { nil }
  static func maintainable(_ extent: GrainTableExtent<Self>) -> MaintainableExtent? { nil }
}
