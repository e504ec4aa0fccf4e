// Rebasing a snapshot onto another parent (qemu-img rebase's two modes).
//
// Safe: wherever the child holds nothing, it shows its old parent chain; the new parent may
// read differently there. Those ranges are compared (only where either side holds data: two
// unallocated or zero ranges read the same) and every sector that differs is copied from the
// old chain into the child, so that the child's visible content stays the same. Then its
// descriptor names the new parent (parentFileNameHint relative to the child's folder, and the
// new parent's CID as parentCID). No new parent: the child becomes a disk of its own, with
// everything its old parent chain provided copied into it.
//
// Unsafe: only the descriptor changes (VixDiskLib_Attach's job); the content may change, so
// the capacities must be equal. This is also how a chain whose old parent is gone is relinked.
//
// The descriptor goes through the same rewrite as the CID (DescriptorRewrite.swift).

import Foundation
import VMDKFormat
import VMDKTransport

/// What a rebase did.
public struct RebaseResult: Sendable, Equatable {
  /// Bytes compared between the old chain and the new parent.
  public var comparedBytes: UInt64 = 0
  /// Bytes copied from the old chain into the child (where the two differed).
  public var copiedBytes: UInt64 = 0
}

extension Disk {
  /// Makes `newParentPath` (nil: none) the parent of the snapshot at `childPath`. Safe mode
  /// (the default) keeps what the child reads; `unsafe` only relinks. `options` open the
  /// chains. Refuses with `invalidArgument` when the new parent is the child or lies above
  /// it (a loop), when the capacities differ in unsafe mode, or when the new parent has no
  /// CID; `notSupported` when the child is not hosted sparse (only those can have a parent);
  /// `hasSnapshots` when snapshots sit on the child and its content would be written.
  @discardableResult
  public static func rebase(
    _ childPath: String, onto newParentPath: String?, unsafe: Bool = false, options: OpenOptions = OpenOptions(),
    chunkBytes: Int = 4 << 20
  ) throws -> RebaseResult {
    var result = RebaseResult()
    // The new parent: locked (no writer changes its CID meanwhile) and opened with its chain.
    var newParent: Disk? = nil
    var newLock: FileLock? = nil
    defer { withExtendedLifetime(newLock) {} }
    if let newParentPath {
      if fileID(newParentPath) == fileID(childPath) {
        throw VMDKError(.invalidArgument, "a disk cannot be its own parent", file: childPath)
      }
      newLock = try lockIfWritable(newParentPath)
      var o = options
      o.writable = false
      o.singleLink = false
      let p = try Disk.open(newParentPath, options: o)
      let childID = fileID(childPath)
      if p.links.contains(where: { fileID($0.path) == childID }) {
        throw VMDKError(
          .invalidArgument, "\(newParentPath) is a snapshot of the child: the chain would loop", file: childPath)
      }
      guard p.top.kind == .vmdk, p.top.hasDescriptor, p.top.descriptor.cid != nil else {
        throw VMDKError(
          .invalidArgument, "the new parent must be a VMDK with a descriptor and a CID (\(p.top.createType) is not)",
          file: newParentPath)
      }
      newParent = p
    }
    var co = options
    co.writable = true
    // Unsafe: the old parent need not be there (relinking a broken chain).
    co.singleLink = unsafe
    if unsafe { co.ignoreCIDMismatch = true }
    // Unsafe writes no content; safe writes into the child under the guard.
    co.allowWritingUnderSnapshots = unsafe
    let child = try Disk.open(childPath, options: co)
    defer { try? child.close() }
    if newParent != nil {
      guard child.top.kind == .vmdk, child.top.extents.allSatisfy({ $0.format == .sparse }) else {
        throw VMDKError(
          .notSupported, "only hosted sparse disks can have a parent (\(child.top.createType) cannot)", file: childPath)
      }
    }
    if unsafe, let newParent, newParent.capacityBytes != child.capacityBytes {
      throw VMDKError(
        .invalidArgument,
        "an unsafe rebase keeps the child's grains only: the new parent's capacity (\(newParent.capacityBytes) bytes) must equal the child's (\(child.capacityBytes) bytes)",
        file: childPath)
    }
    if !unsafe {
      try child.copyDifferences(from: newParent, chunkBytes: chunkBytes, into: &result)
    }
    let hint = newParentPath.map { relativeHint(from: childPath, to: $0) }
    if let hint, hint.contains(where: { $0 == "\"" || $0.isNewline }) {
      throw VMDKError(.invalidArgument, "the parent's path \(hint.debugDescription) cannot go in a descriptor")
    }
    let cid = newParent?.top.descriptor.cid
    try child.rewriteDescriptor { d in
      if let hint, let cid {
        d.setHeader("parentCID", Descriptor.formatCID(cid))
        d.setHeader("parentFileNameHint", hint, quoted: true)
      } else {
        d.setHeader("parentCID", Descriptor.formatCID(Descriptor.noParentCID))
        d.removeHeader("parentFileNameHint")
      }
    }
    try child.close()
    return result
  }

  /// Safe rebase's copy: for every range the top link does not hold, where the chain below it
  /// reads differently from `newParent` (zeros when nil), writes the chain's bytes into the
  /// top link. Works a window at a time: the maps first, then the copies.
  func copyDifferences(from newParent: Disk?, chunkBytes: Int, into result: inout RebaseResult) throws {
    let window: UInt64 = 1 << 30
    let newCapacity = newParent?.capacityBytes ?? 0
    var old = [UInt8](repeating: 0, count: chunkBytes)
    var new = [UInt8](repeating: 0, count: chunkBytes)
    var at: UInt64 = 0
    while at < capacityBytes {
      let end = min(capacityBytes, at + window)
      // Ranges the child does not hold, and where the old chain below holds non-zero data.
      var notHeld: [(UInt64, UInt64)] = []
      var interesting: [(UInt64, UInt64)] = []
      try blockStatus(offset: at, length: end - at) { s in
        guard !(s.present && s.depth == 0) else { return }
        notHeld.append((s.start, s.start + s.length))
        if s.data && !s.zero { interesting.append((s.start, s.start + s.length)) }
      }
      if let newParent, at < newCapacity {
        try newParent.blockStatus(offset: at, length: min(end, newCapacity) - at) { s in
          if s.data && !s.zero { interesting.append((s.start, s.start + s.length)) }
        }
      }
      let ranges = Intervals.intersect(notHeld, Intervals.union(interesting))
      for (s, e) in ranges {
        var p = s
        while p < e {
          let n = Int(min(UInt64(chunkBytes), e - p))
          try old.withUnsafeMutableBytes { o in
            try readSectors(
              level: 1, start: p / 512, count: UInt64(n) / 512, into: UnsafeMutableRawBufferPointer(rebasing: o[0..<n]))
          }
          // The new parent's bytes; zeros past its end (and with no parent).
          let inNew = p < newCapacity ? Int(min(UInt64(n), newCapacity - p)) : 0
          new.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) }
          if let newParent, inNew > 0 {
            try new.withUnsafeMutableBytes {
              try newParent.read(at: p, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<inNew]))
            }
          }
          result.comparedBytes += UInt64(n)
          // Runs of differing sectors, each written once.
          var i = 0
          while i < n {
            var j = i
            while j < n && !sectorsEqual(old, new, j) { j += 512 }
            if j > i {
              try old.withUnsafeBytes { try write(at: p + UInt64(i), UnsafeRawBufferPointer(rebasing: $0[i..<j])) }
              result.copiedBytes += UInt64(j - i)
              i = j
            } else {
              i += 512
            }
          }
          p += UInt64(n)
        }
      }
      at = end
    }
  }
}

private func sectorsEqual(_ a: [UInt8], _ b: [UInt8], _ at: Int) -> Bool {
  a.withUnsafeBytes { pa in
    b.withUnsafeBytes { pb in memcmp(pa.baseAddress! + at, pb.baseAddress! + at, 512) == 0 }
  }
}

/// Sorted half-open byte ranges.
enum Intervals {
  /// Sorts and merges overlapping or touching ranges.
  static func union(_ ranges: [(UInt64, UInt64)]) -> [(UInt64, UInt64)] {
    var out: [(UInt64, UInt64)] = []
    for r in ranges.sorted(by: { $0.0 < $1.0 }) where r.1 > r.0 {
      if let last = out.last, r.0 <= last.1 {
        out[out.count - 1].1 = max(last.1, r.1)
      } else {
        out.append(r)
      }
    }
    return out
  }

  /// The ranges in both lists (each sorted and merged).
  static func intersect(_ a: [(UInt64, UInt64)], _ b: [(UInt64, UInt64)]) -> [(UInt64, UInt64)] {
    let a = union(a)
    var out: [(UInt64, UInt64)] = []
    var i = 0
    var j = 0
    while i < a.count && j < b.count {
      let lo = max(a[i].0, b[j].0)
      let hi = min(a[i].1, b[j].1)
      if lo < hi { out.append((lo, hi)) }
      if a[i].1 < b[j].1 { i += 1 } else { j += 1 }
    }
    return out
  }
}
