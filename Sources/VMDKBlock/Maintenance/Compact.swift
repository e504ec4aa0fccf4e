// Compact and defragment (vmware-vdiskmanager -k and -d): every hosted sparse extent of the
// top link is rewritten into a temporary file with the same descriptor (DDB, CID, uuid,
// parentCID and parent hint untouched) and its grains in LBA order, flushed, and renamed over
// the original. Compact also leaves out all-zero grains, except where the parent links have
// data under them: there a zero grain hides the parent and stays (as a zeroed-grain entry
// when the header allows it, else as data). The virtual content never changes.

import Foundation
import VMDKFormat
import VMDKTransport

/// What compact or defragment did.
public struct CompactResult: Sendable, Equatable {
  /// Bytes of the sparse extent files before and after.
  public var bytesBefore: UInt64 = 0
  public var bytesAfter: UInt64 = 0
  /// Grains stored as data afterwards.
  public var grainsStored: UInt64 = 0
  /// All-zero grains (or zeroed-grain entries) left out or turned into zeroed-grain entries.
  public var zeroGrainsDropped: UInt64 = 0
}

extension Disk {
  /// Compacts the disk at `path`: drops all-zero grains that hide nothing and every byte no
  /// grain table points at. The disk is locked while it changes; on failure it is untouched.
  public static func compact(_ path: String, options: OpenOptions = OpenOptions()) throws -> CompactResult {
    try rewriteSparse(path, options: options, dropZeroGrains: true, what: "compact")
  }

  /// Defragments the disk at `path`: rewrites its sparse extents with the grains in virtual
  /// disk order (and no unreferenced space); zero grains are kept.
  public static func defragment(_ path: String, options: OpenOptions = OpenOptions()) throws -> CompactResult {
    try rewriteSparse(path, options: options, dropZeroGrains: false, what: "defragment")
  }

  static func rewriteSparse(_ path: String, options: OpenOptions, dropZeroGrains: Bool, what: String) throws
    -> CompactResult
  {
    // The parents are needed to know which zero grains hide data.
    let disk = try Maintenance.openLocked(path, options: options, parents: dropZeroGrains)
    defer { try? disk.close() }
    try disk.requireRewritableSparse(what)
    return try disk.rewriteSparseExtents(dropZeroGrains: dropZeroGrains)
  }

  /// Rewrites every sparse extent of the (locked) top link: all temporary files are made and
  /// flushed first, then renamed over the originals.
  func rewriteSparseExtents(dropZeroGrains: Bool) throws -> CompactResult {
    var result = CompactResult()
    var made: [SparseExtentRewriter] = []
    defer { for m in made { m.abort() } }
    for (i, extent) in top.extents.enumerated() {
      guard let sparse = extent.hostedSparse, let p = extent.path else { continue }
      result.bytesBefore += try sparse.file.size()
      let embedded =
        top.descriptorLocation == .embedded && (PathResolver.realPath(p) == PathResolver.realPath(top.path))
      let (out, dropped) = try rewriteSparseExtent(
        i, capacitySectors: sparse.scheme.header.capacitySectors, dropZeroGrains: dropZeroGrains,
        descriptor: embedded ? Maintenance.descriptorText(of: top) : nil)
      made.append(out)
      result.zeroGrainsDropped += dropped
      result.grainsStored += out.grainsStored
      result.bytesAfter += try out.file.size()
    }
    for m in made { try m.commit() }
    made = []
    return result
  }
}
