// Repair (VixDiskLib_CheckRepair with repair on): fixes what `check` finds in the top link's
// hosted sparse extents, in place and in a crash-safe order (a copied table is written and
// flushed before the directory entry that names it):
// - a grain directory entry that is damaged (past the end, inside the header, descriptor or a
//   directory) or missing is rebuilt from the other copy: the sane copy's table is copied to
//   the end of the file and the damaged entry pointed at it;
// - grain table entries that differ from their redundant copy take the sane copy's value;
//   when both are sane, the one that holds something, else the primary's (writers write the
//   primary first);
// - entries that point past the end of the file (or into the metadata) are set to 0; what
//   they held becomes unreadable (reads from the parent, or zeros) and is reported;
// - leaked space: a leaked tail is cut off; leaks between grains are reclaimed by
//   defragmenting (a rewrite through a temporary file, as `compact`).
// What it cannot repair (grains that overlap, damaged compressed grains) is reported, and the
// repair fails (exit 1) with that part left as it was.

import Foundation
import VMDKFormat
import VMDKTransport

/// What `repair` did and what it could not do.
public struct RepairReport: Sendable {
  /// One line per change made.
  public var fixed: [String] = []
  /// One line per virtual range whose data became unreadable (its entry pointed past the end).
  public var lost: [String] = []
  /// What was left as it was.
  public var unrepaired: [String] = []
  /// Leaked bytes reclaimed.
  public var reclaimedBytes: UInt64 = 0
  /// Whether the disk is clean now.
  public var isClean: Bool { unrepaired.isEmpty }
}

extension Disk {
  /// Repairs the disk at `path` (its top link). Throws only when it cannot be opened or
  /// written; what it cannot repair is in the report's `unrepaired`.
  public static func repair(_ path: String, options: OpenOptions = OpenOptions()) throws -> RepairReport {
    var report = RepairReport()
    do {
      let disk = try Maintenance.openLocked(path, options: options, parents: false)
      defer { try? disk.close() }
      for (i, extent) in disk.top.extents.enumerated() {
        switch extent.reader.maintainable {
        case .sparse(let sparse):
          guard let path = extent.path else { continue }
          var repair = try SparseRepair(extent: sparse, path: path, base: extent.startSector)
          try repair.run(into: &report)
        case .flat(let flat):
          let needed = flat.baseBytes + flat.sectors * 512
          if try flat.file.size() < needed, let p = extent.path {
            try LocalFile(path: p, writable: true).truncate(to: needed)
            report.fixed.append("\(p): flat extent extended to \(needed) bytes (the added part reads as zeros)")
          }
        case nil:
          if extent.format == .stream {
            report.unrepaired.append("extent \(i + 1) is streamOptimized: not repaired")
          }
        }
      }
    }
    // Leaks between grains: a defragment rewrite (the locks are taken again).
    let again = try Disk.open(
      path,
      options: {
        var o = options
        o.singleLink = true
        return o
      }())
    let check = try again.check()
    if check.problems.isEmpty && check.leakedBytes > 0 {
      let r = try Disk.defragment(path, options: options)
      report.reclaimedBytes += check.leakedBytes
      report.fixed.append(
        "rewrote the sparse extents without \(check.leakedBytes) leaked bytes (\(r.bytesBefore) → \(r.bytesAfter) bytes)"
      )
    }
    let after = try Disk.open(
      path,
      options: {
        var o = options
        o.singleLink = true
        return o
      }()
    ).check()
    for p in after.problems where !report.unrepaired.contains(where: { $0.hasPrefix(p.file + ": " + p.kind) }) {
      report.unrepaired.append("\(p.file): \(p.kind): \(p.message)")
    }
    if after.problems.isEmpty && after.leakedBytes > 0 {
      report.unrepaired.append("\(after.leakedBytes) leaked bytes remain")
    }
    return report
  }
}

/// The in-place repair of one hosted sparse extent, on its raw bytes.
private struct SparseRepair {
  let extent: SparseExtent
  let path: String
  /// The extent's first sector in the link.
  let base: UInt64
  let file: LocalFile
  let header: SparseExtentHeader
  let tables: Int
  let grainBytes: UInt64
  var size: UInt64

  init(extent: SparseExtent, path: String, base: UInt64) throws {
    self.extent = extent
    self.path = path
    self.base = base
    file = try LocalFile(path: path, writable: true)
    header = extent.scheme.header
    tables = Int(extent.scheme.directoryEntries)
    grainBytes = header.grainSectors * 512
    size = try file.size()
  }

  /// Byte ranges no table or grain may overlap: header, embedded descriptor, both directories.
  var fixedMetadata: [(UInt64, UInt64)] {
    let gdBytes = UInt64(tables) * 4
    var r: [(UInt64, UInt64)] = [(0, 512)]
    if header.descriptorOffsetSectors != 0 {
      r.append(
        (header.descriptorOffsetSectors * 512, (header.descriptorOffsetSectors + header.descriptorSizeSectors) * 512))
    }
    r.append((header.gdOffsetSectors * 512, header.gdOffsetSectors * 512 + gdBytes))
    if hasRedundant { r.append((header.rgdOffsetSectors * 512, header.rgdOffsetSectors * 512 + gdBytes)) }
    return r
  }

  var hasRedundant: Bool { header.flags.contains(.useRedundantGrainDirectory) && header.rgdOffsetSectors != 0 }

  func tableIsSane(_ e: UInt32) -> Bool {
    if e == 0 { return true }
    let s = UInt64(e) * 512
    let end = s + SparseLayout.tableBytes
    guard end <= size else { return false }
    return !fixedMetadata.contains { s < $0.1 && $0.0 < end }
  }

  func grainIsSane(_ e: UInt32) -> Bool {
    if e == 0 || (e == 1 && header.hasZeroedGrainEntries) { return true }
    let s = UInt64(e) * 512
    return s >= header.overheadSectors * 512 && s + grainBytes <= size
  }

  func readEntries(at offset: UInt64, count: Int) throws -> [UInt32] {
    let bytes = try file.readExactly(at: offset, count: count * 4, what: "grain directory")
    return GrainEntries.decode(bytes, width: 4, count: count).map { UInt32(truncatingIfNeeded: $0) }
  }

  func writeEntry(_ v: UInt32, at offset: UInt64) throws {
    try file.write(at: offset, from: withUnsafeBytes(of: v.littleEndian) { Array($0) })
  }

  /// Copies the table at sector `from` to a new table at the end of the file; returns its sector.
  mutating func copyTable(from: UInt32) throws -> UInt32 {
    let bytes = try file.readExactly(at: UInt64(from) * 512, count: Int(SparseLayout.tableBytes), what: "grain table")
    let at = (size + 511) / 512 * 512
    try file.write(at: at, from: bytes)
    size = at + SparseLayout.tableBytes
    try file.flush()
    return UInt32(at / 512)
  }

  /// Virtual byte range of grain `entry` of table `t`.
  func virtualRange(table t: Int, entry: Int) -> String {
    let grain = UInt64(t) * SparseLayout.entriesPerTable + UInt64(entry)
    let start = (base + grain * header.grainSectors) * 512
    return "bytes \(start)..<\(start + grainBytes)"
  }

  mutating func run(into report: inout RepairReport) throws {
    let name = path
    // The newline-detection bytes (damaged by a text-mode transfer): the grains may be too,
    // but the header can be put right.
    if header.newlinesDamaged {
      try file.write(at: 73, from: SparseExtentHeader.newlineBytes)
      report.fixed.append("\(name): newline-detection bytes restored (the data may still be damaged by the transfer)")
    }
    let gdAt = header.gdOffsetSectors * 512
    let rgdAt = header.rgdOffsetSectors * 512
    guard gdAt + UInt64(tables) * 4 <= size, !hasRedundant || rgdAt + UInt64(tables) * 4 <= size else {
      report.unrepaired.append("\(name): the grain directory lies past the end of the file; not repaired")
      return
    }
    var gd = try readEntries(at: gdAt, count: tables)
    var rgd = hasRedundant ? try readEntries(at: rgdAt, count: tables) : []
    // 1. The directories.
    for i in 0..<tables {
      let g = gd[i]
      let gs = tableIsSane(g)
      guard hasRedundant else {
        if !gs {
          try writeEntry(0, at: gdAt + UInt64(i) * 4)
          gd[i] = 0
          report.fixed.append(
            "\(name): grain directory entry \(i) (\(g)) pointed past the end or into metadata; cleared")
          report.lost.append("\(name): grain table \(i) was lost: its grains now read from the parent or as zeros")
        }
        continue
      }
      let r = rgd[i]
      let rs = tableIsSane(r)
      if g == 0 && r == 0 { continue }
      if gs && rs && g != 0 && r != 0 && g != r { continue }
      if g != 0 && gs && (r == 0 || !rs || r == g) {
        let copy = try copyTable(from: g)
        try writeEntry(copy, at: rgdAt + UInt64(i) * 4)
        rgd[i] = copy
        report.fixed.append("\(name): redundant grain directory entry \(i) (\(r)) rebuilt from the grain directory")
      } else if r != 0 && rs && (g == 0 || !gs) {
        let copy = try copyTable(from: r)
        try writeEntry(copy, at: gdAt + UInt64(i) * 4)
        gd[i] = copy
        report.fixed.append("\(name): grain directory entry \(i) (\(g)) rebuilt from its redundant copy")
      } else {
        // Both insane (or one zero, the other insane).
        try writeEntry(0, at: gdAt + UInt64(i) * 4)
        try writeEntry(0, at: rgdAt + UInt64(i) * 4)
        gd[i] = 0
        rgd[i] = 0
        report.fixed.append(
          "\(name): grain directory entry \(i) cleared: neither copy (\(g), \(r)) points at a table inside the file")
        if g != 0 || r != 0 {
          report.lost.append("\(name): grain table \(i) was lost: its grains now read from the parent or as zeros")
        }
      }
    }
    try file.flush()
    // 2. The tables: entries against their redundant copy and against the file's end.
    let grainsInExtent = (extent.sectors + header.grainSectors - 1) / header.grainSectors
    for i in 0..<tables where gd[i] != 0 {
      let firstGrain = UInt64(i) * SparseLayout.entriesPerTable
      guard firstGrain < grainsInExtent else { continue }
      let used = Int(min(SparseLayout.entriesPerTable, grainsInExtent - firstGrain))
      let gtAt = UInt64(gd[i]) * 512
      let rgtAt = hasRedundant ? UInt64(rgd[i]) * 512 : 0
      let gt = try readEntries(at: gtAt, count: used)
      let rgt = hasRedundant ? try readEntries(at: rgtAt, count: used) : gt
      for j in 0..<used {
        let a = gt[j]
        let b = rgt[j]
        let sa = grainIsSane(a)
        let sb = grainIsSane(b)
        // A sane entry that holds something wins over one that is empty: writers write the
        // primary table first, so an empty redundant entry is a write that did not finish,
        // and an empty primary one next to a sane redundant entry is damage.
        let chosen: UInt32 = sa && a != 0 ? a : (sb && b != 0 ? b : (sa ? a : (sb ? b : 0)))
        if chosen != a { try writeEntry(chosen, at: gtAt + UInt64(j) * 4) }
        if hasRedundant && chosen != b { try writeEntry(chosen, at: rgtAt + UInt64(j) * 4) }
        if chosen != a || (hasRedundant && chosen != b) {
          report.fixed.append("\(name): grain table \(i) entry \(j): \(a) / redundant \(b) → \(chosen)")
        }
        if chosen == 0 && (a != 0 || b != 0) {
          report.lost.append(
            "\(name): \(virtualRange(table: i, entry: j)) pointed past the end of the file or into metadata; now reads from the parent or as zeros"
          )
        }
      }
    }
    try file.flush()
    // 3. A leaked tail: everything after the last table or grain.
    var end = header.overheadSectors * 512
    for i in 0..<tables {
      for t in (hasRedundant ? [gd[i], rgd[i]] : [gd[i]]) where t != 0 {
        end = max(end, UInt64(t) * 512 + SparseLayout.tableBytes)
      }
    }
    for i in 0..<tables where gd[i] != 0 {
      let firstGrain = UInt64(i) * SparseLayout.entriesPerTable
      guard firstGrain < grainsInExtent else { continue }
      let used = Int(min(SparseLayout.entriesPerTable, grainsInExtent - firstGrain))
      for e in try readEntries(at: UInt64(gd[i]) * 512, count: used)
      where e > 1 || (e == 1 && !header.hasZeroedGrainEntries) {
        end = max(end, UInt64(e) * 512 + grainBytes)
      }
    }
    let cut = (end + 511) / 512 * 512
    if size > cut {
      try file.truncate(to: cut)
      report.fixed.append("\(name): leaked tail of \(size - cut) bytes cut off")
      report.reclaimedBytes += size - cut
      size = cut
    }
    try file.flush()
  }
}
