// Resize (vmware-vdiskmanager -x, qemu-img resize): the top link's capacity changes. Parents
// are not touched, and a disk that a child in its folder names as parent is refused (its
// content would change under the child). Growing a child leaves the area past its parent's
// end reading as zeros; shrinking a link that has a parent is refused (the parent still holds
// data past the new end, which a later commit would have to drop).
//
// A sparse extent whose grain directories have room for the new table count grows in place
// (SparseGrowInPlace.swift); otherwise, and when it shrinks, it is rewritten through a
// temporary file (header capacity, grain directory of the new size, embedded descriptor),
// flushed and renamed over the original. Flat extent files are grown or cut with ftruncate.
// Split types grow their last extent up to 2 GiB, then get extents added (named like the last
// one, `-s002`, `-f003`, ...); shrinking removes or cuts them. The descriptor's extent lines,
// `ddb.geometry.*` and the CID (the content changed) are written last, through a temporary
// file and a rename (or, embedded, as the last step of the rewrite or in-place grow).
// Shrinking is refused, VixDiskLib's CANTSHRINK, when data is stored past the new end.

import Foundation
import VMDKFormat
import VMDKTransport

/// What a resize did.
public struct ResizeResult: Sendable, Equatable {
  public var oldCapacitySectors: UInt64
  public var newCapacitySectors: UInt64
  /// Extent files made, and removed.
  public var extentsAdded: [String] = []
  public var extentsRemoved: [String] = []
  /// Whether a sparse extent grew in place (its directories had room) rather than through a copy.
  public var grewInPlace = false
}

extension Disk {
  /// Resizes the disk at `path` to `newCapacityBytes` (rounded up to a sector). Shrinking needs
  /// `allowShrink` and nothing allocated past the new end (`invalidArgument` otherwise).
  public static func resize(
    _ path: String, to newCapacityBytes: UInt64, allowShrink: Bool = false, options: OpenOptions = OpenOptions()
  ) throws -> ResizeResult {
    let disk = try Maintenance.openLocked(path, options: options, parents: false)
    defer { try? disk.close() }
    return try disk.resizeTop(to: (newCapacityBytes + 511) / 512, allowShrink: allowShrink)
  }

  private enum ExtentPlan {
    case keep
    case remove
    case rewriteSparse(UInt64)
    case truncateFlat(UInt64)
  }

  func resizeTop(to newSectors: UInt64, allowShrink: Bool) throws -> ResizeResult {
    let link = top
    let old = link.capacitySectors
    var result = ResizeResult(oldCapacitySectors: old, newCapacitySectors: newSectors)
    guard newSectors > 0, newSectors <= Limits.maxCapacitySectors else {
      throw VMDKError(.invalidArgument, "new capacity of \(newSectors) sectors is out of range", file: link.path)
    }
    guard newSectors != old else { return result }
    guard link.kind == .vmdk, link.hasDescriptor else {
      throw VMDKError(.notSupported, "resize applies to VMDK disks with a descriptor", file: link.path)
    }
    // A parent's content may not change under its snapshots (the CID changes; VMware refuses too).
    let children = Disk.children(of: link.path)
    if !children.isEmpty {
      throw VMDKError(
        .hasSnapshots,
        "\(children.map(\.path).joined(separator: ", ")) name\(children.count == 1 ? "s" : "") this disk as parent: resize the top of the chain, not a parent",
        file: link.path)
    }
    let shrinking = newSectors < old
    if shrinking {
      guard allowShrink else {
        throw VMDKError(
          .invalidArgument,
          "the new size (\(newSectors * 512) bytes) is smaller than the disk (\(old * 512) bytes); shrinking needs --shrink",
          file: link.path)
      }
      if let hint = link.descriptor.parentFileNameHint, !hint.isEmpty {
        throw VMDKError(
          .invalidArgument,
          "the disk is a snapshot of \(hint): shrinking a child link is refused (its parent keeps data past the new end)",
          file: link.path)
      }
      // CANTSHRINK: data stored past the new end (zeroed grains and holes in flat files read
      // as zeros and may go).
      var allocatedAt: UInt64? = nil
      var flatRuns: [(UInt64, UInt64)] = []
      try link.mapRuns(start: newSectors, count: old - newSectors) { run in
        guard run.status == .data else { return }
        // A flat file's data ranges come from the file system's blocks, larger than a
        // sector: what counts there is a non-zero byte.
        if link.extents[run.extent].format == .flat {
          flatRuns.append((run.start, run.count))
        } else if allocatedAt == nil {
          allocatedAt = run.start
        }
      }
      for (start, count) in flatRuns where allocatedAt == nil {
        var s = start
        while s < start + count, allocatedAt == nil {
          let n = min(2048, start + count - s)
          let bytes = try read(at: s * 512, count: Int(n * 512))
          if let i = bytes.firstIndex(where: { $0 != 0 }) { allocatedAt = s + UInt64(i / 512) }
          s += n
        }
      }
      if let at = allocatedAt {
        throw VMDKError(
          .invalidArgument,
          "cannot shrink to \(newSectors * 512) bytes: data is stored at byte \(at * 512), past the new end",
          file: link.path, offset: at * 512)
      }
    }
    for (i, e) in link.extents.enumerated() {
      if e.format == .stream {
        throw VMDKError(
          .notSupported, "resize does not handle streamOptimized extents (convert to monolithicSparse first)",
          file: e.path ?? link.path)
      }
      guard e.reader.maintainable != nil else {
        throw VMDKError(
          .notSupported,
          "resize handles hosted sparse and flat extents; extent \(i + 1) is \(e.format.displayName)",
          file: link.path)
      }
      guard link.extents[i].line.access == .readWrite else {
        throw VMDKError(.fileReadOnly, "extent \(i + 1) is not RW", file: link.path)
      }
    }
    let embedded = link.descriptorLocation == .embedded
    let lines = link.descriptor.extents
    let folder = (link.path as NSString).deletingLastPathComponent
    // The plan: each extent kept, cut, grown or removed; new extents for the rest.
    var plans: [ExtentPlan] = []
    var newLines: [ExtentDescription] = []
    let split = link.descriptor.createTypeKind?.isSplit == true
    // Largest extent of a split type: the first's when there are several, else VMware's 2 GiB.
    let splitSectors: UInt64 = split ? max(lines.count > 1 ? lines[0].sectors : 0, 4_194_304) : UInt64.max
    for (i, line) in lines.enumerated() {
      let start = link.extents[i].startSector
      let isLast = i == lines.count - 1
      var n = line.sectors
      if start >= newSectors {
        plans.append(.remove)
        continue
      }
      if start + n > newSectors {
        n = newSectors - start
      } else if isLast && newSectors > start + n {
        n = min(newSectors - start, max(n, splitSectors == .max ? newSectors - start : splitSectors))
      }
      var l = line
      l.sectors = n
      newLines.append(l)
      if n == line.sectors {
        plans.append(.keep)
      } else if link.extents[i].hostedSparse != nil {
        plans.append(.rewriteSparse(n))
      } else {
        plans.append(.truncateFlat(n))
      }
    }
    // New extents past the last one (split types).
    var created: [(path: String, sectors: UInt64, sparse: Bool)] = []
    var covered = newLines.reduce(0) { $0 + $1.sectors }
    if covered < newSectors {
      guard let last = lines.last, let lastName = last.fileName else {
        throw VMDKError(.invalidDescriptor, "the descriptor has no extent to grow", file: link.path)
      }
      var name = lastName
      while covered < newSectors {
        name = try Self.nextExtentName(after: name, file: link.path)
        let n = min(splitSectors, newSectors - covered)
        var l = last
        l.sectors = n
        l.fileName = name
        l.offsetSectors = 0
        newLines.append(l)
        let p = folder.isEmpty ? name : folder + "/" + name
        if FileManager.default.fileExists(atPath: p) {
          throw VMDKError(.fileExists, "a new extent would replace an existing file", file: p)
        }
        created.append((p, n, last.kind == .sparse))
        covered += n
      }
    }
    var d = link.descriptor
    d.setExtents(newLines)
    let adapter = d.ddb("ddb.adapterType") ?? "lsilogic"
    let g = DiskGeometry.vmware(capacitySectors: newSectors, adapterType: adapter)
    d.setDDB("ddb.geometry.cylinders", String(g.cylinders))
    if d.ddb("ddb.geometry.heads") != nil || d.ddb("ddb.geometry.sectors") != nil {
      d.setDDB("ddb.geometry.heads", String(g.heads))
      d.setDDB("ddb.geometry.sectors", String(g.sectors))
    }
    d.setHeader("CID", Descriptor.formatCID(LinkWriter.freshCID(replacing: link.descriptor.cid)))
    let text = Array(d.serialized().utf8)

    // 1. Every new file, complete and flushed, under a temporary name.
    var rewrites: [SparseExtentRewriter] = []
    var newFlat: [AtomicFile] = []
    defer {
      for r in rewrites { r.abort() }
      for f in newFlat { f.abort() }
    }
    var inPlace: [(index: Int, sectors: UInt64, descriptor: [UInt8]?)] = []
    for (i, plan) in plans.enumerated() {
      guard case .rewriteSparse(let n) = plan else { continue }
      let isDescriptorFile = embedded && i == 0
      if try canGrowSparseInPlace(i, to: n, descriptor: isDescriptorFile ? text : nil) {
        inPlace.append((i, n, isDescriptorFile ? text : nil))
        continue
      }
      let (out, _) = try rewriteSparseExtent(
        i, capacitySectors: n, dropZeroGrains: false, descriptor: isDescriptorFile ? text : nil)
      rewrites.append(out)
    }
    let template = link.extents.compactMap(\.sparseHeader).first
    for c in created {
      if c.sparse, let template {
        let out = try SparseExtentRewriter(
          replacing: c.path, template: template, capacitySectors: c.sectors, descriptor: nil, minDescriptorSectors: 0)
        try out.finish()
        rewrites.append(out)
      } else {
        let f = try AtomicFile(for: c.path, followLinks: false, keepMode: false)
        newFlat.append(f)
        try f.file.truncate(to: c.sectors * 512)
        try f.file.flush()
      }
    }
    // 2. Flat files that grow.
    for (i, plan) in plans.enumerated() {
      guard case .truncateFlat(let n) = plan, let flat = link.extents[i].flatFile, let flatPath = link.extents[i].path
      else { continue }
      let size = flat.baseBytes + n * 512
      if size > (try flat.file.size()) {
        try LocalFile(path: flatPath, writable: true).truncate(to: size)
      }
    }
    // 2b. Sparse extents whose directories have room grow in place (SparseGrowInPlace.swift).
    for g in inPlace { try growSparseInPlace(g.index, to: g.sectors, descriptor: g.descriptor) }
    result.grewInPlace = !inPlace.isEmpty
    // 3. Renames: rewritten and new extents (a monolithicSparse file carries its descriptor).
    for r in rewrites { try r.commit() }
    for f in newFlat { try f.commit(flush: false) }
    rewrites = []
    newFlat = []
    result.extentsAdded = created.map(\.path)
    // 4. The descriptor (when it has its own file).
    if !embedded {
      try Maintenance.replaceFile(link.path, with: text)
    }
    // 5. What the new descriptor no longer needs: flat files cut, extents removed.
    for (i, plan) in plans.enumerated() {
      switch plan {
      case .truncateFlat(let n):
        if let flat = link.extents[i].flatFile, let flatPath = link.extents[i].path,
          flat.baseBytes + n * 512 < (try flat.file.size())
        {
          try LocalFile(path: flatPath, writable: true).truncate(to: flat.baseBytes + n * 512)
        }
      case .remove:
        if let p = link.extents[i].path {
          unlink(p)
          result.extentsRemoved.append(p)
        }
      default: break
      }
    }
    return result
  }

  /// `disk-s002.vmdk` after `disk-s001.vmdk` (also `-f`); else `NAME-s002.vmdk`-style names.
  static func nextExtentName(after name: String, file: String) throws -> String {
    let dot = name.lastIndex(of: ".") ?? name.endIndex
    let stem = name[..<dot]
    let ext = name[dot...]
    var digits = ""
    var i = stem.endIndex
    while i > stem.startIndex, stem[stem.index(before: i)].isNumber {
      i = stem.index(before: i)
      digits = String(stem[i]) + digits
    }
    if !digits.isEmpty, i > stem.index(stem.startIndex, offsetBy: 1, limitedBy: stem.endIndex) ?? stem.endIndex,
      let n = Int(digits)
    {
      let m = String(n + 1)
      return String(stem[..<i]) + String(repeating: "0", count: max(0, digits.count - m.count)) + m + ext
    }
    throw VMDKError(
      .notSupported, "cannot derive the name of a new extent from \(name) (expected NAME-s001.vmdk or NAME-f001.vmdk)",
      file: file)
  }
}
