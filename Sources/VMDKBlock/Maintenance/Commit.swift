// Committing a snapshot: every range the child holds (data, and zeros that hide the parent)
// is written into its parent, through Disk.write on the parent opened writable (locked), so
// that the parent alone reads what the chain read. Like `qemu-img commit` (7.2) on VMDK, the
// child is left as it is, byte for byte: qemu cannot empty a VMDK (the driver has no
// make_empty). The parent's first write gives it a new CID, so the child's parentCID is
// then stale and the child no longer opens on top of it (CID mismatch): it is done with and
// can be deleted. When the child holds nothing, nothing is written and the chain stays valid.

import Foundation
import VMDKFormat
import VMDKTransport

/// What a commit did.
public struct CommitResult: Sendable, Equatable {
  /// The parent written into.
  public var parentPath: String
  /// Bytes of the child's data written into the parent.
  public var dataBytes: UInt64 = 0
  /// Bytes of zeros written where the child hides parent data with zeros.
  public var zeroBytes: UInt64 = 0
}

extension Disk {
  /// Merges the child at `childPath` into its parent (the next link down). `options` open the
  /// chain (CIDs are checked unless `ignoreCIDMismatch`). Refuses with `invalidArgument` when
  /// the child has no parent, `notSupported` when the child is larger than its parent,
  /// `hasSnapshots` when other snapshots sit on the parent (writing would change them),
  /// `alreadyLocked` when the child or the parent is open for writing.
  @discardableResult
  public static func commit(
    _ childPath: String, options: OpenOptions = OpenOptions(), chunkBytes: Int = 4 << 20
  ) throws -> CommitResult {
    // No writer may change the child while it is copied.
    let childLock = try lockIfWritable(childPath)
    defer { withExtendedLifetime(childLock) {} }
    var o = options
    o.writable = false
    o.singleLink = false
    let chain = try Disk.open(childPath, options: o)
    guard chain.links.count >= 2 else {
      throw VMDKError(.invalidArgument, "the disk has no parent to commit into", file: childPath)
    }
    let child = chain.links[0]
    let parentLink = chain.links[1]
    guard parentLink.kind == .vmdk else {
      throw VMDKError(.notSupported, "the parent is not a VMDK (\(parentLink.createType))", file: parentLink.path)
    }
    guard child.capacitySectors <= parentLink.capacitySectors else {
      throw VMDKError(
        .notSupported,
        "the child (\(child.capacitySectors * 512) bytes) is larger than its parent (\(parentLink.capacitySectors * 512) bytes): grow the parent first",
        file: childPath)
    }
    var po = options
    po.writable = true
    po.singleLink = false
    po.allowWritingUnderSnapshots = true
    let parent = try Disk.open(parentLink.path, options: po)
    defer { try? parent.close() }
    // Other snapshots of the parent would read the merged data: refuse, as the guard does.
    let childID = fileID(childPath)
    let others = try RestoreGuard.snapshots(of: parentLink.path, cid: parentLink.descriptor.cid ?? 0)
      .filter { fileID($0) != childID }
    try RestoreGuard.refuse(path: parentLink.path, snapshots: others, doing: "committing \(childPath) into it")

    var single = options
    single.writable = false
    single.singleLink = true
    let childOnly = try Disk.open(childPath, options: single)
    var result = CommitResult(parentPath: parentLink.path)
    var buffer = [UInt8](repeating: 0, count: chunkBytes)
    let zeros = [UInt8](repeating: 0, count: chunkBytes)
    // Ranges first (the child's map does not change), then the copies.
    let runs = try childOnly.blockStatus().filter { $0.present }
    for run in runs {
      var at = run.start
      let end = run.start + run.length
      if run.data && !run.zero {
        while at < end {
          let n = Int(min(UInt64(chunkBytes), end - at))
          try buffer.withUnsafeMutableBytes { b in
            let piece = UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
            try childOnly.read(at: at, into: piece)
            try parent.write(at: at, UnsafeRawBufferPointer(piece))
          }
          result.dataBytes += UInt64(n)
          at += UInt64(n)
        }
      } else {
        // Zeros in the child: write them only where the parent reads something else.
        var nonZero: [(UInt64, UInt64)] = []
        try parent.blockStatus(offset: at, length: end - at) { s in
          if s.data && !s.zero { nonZero.append((s.start, s.start + s.length)) }
        }
        for (s, e) in nonZero {
          var p = s
          while p < e {
            let n = Int(min(UInt64(chunkBytes), e - p))
            try zeros.withUnsafeBytes { try parent.write(at: p, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            result.zeroBytes += UInt64(n)
            p += UInt64(n)
          }
        }
      }
    }
    try parent.close()
    return result
  }

  /// The device and inode of a file, to compare paths.
  static func fileID(_ path: String) -> [UInt64] {
    var st = stat()
    guard stat(path, &st) == 0 else { return [] }
    return [UInt64(st.st_dev), UInt64(st.st_ino)]
  }
}
