// Growing a hosted sparse extent in place, when its grain tables already cover the new size
// (the last table's span reaches past the old end: up to 32 MiB of 64 KiB grains). The tail
// of the old last grain is zeroed (it was outside the disk and may hold anything), then the
// header's capacity is written, then the embedded descriptor: a crash between two steps leaves
// the old content readable (at worst a header that says more than the descriptor, which
// resize can be run again to fix). Anything else is rewritten through a temporary file
// (Resize.swift).

import VMDKFormat
import VMDKTransport

extension Disk {
  /// Whether the top link's sparse extent `index` can grow to `newSectors` in place, with
  /// `descriptor` (the embedded text, when the file carries it) fitting its area.
  func canGrowSparseInPlace(_ index: Int, to newSectors: UInt64, descriptor: [UInt8]?) throws -> Bool {
    guard let sparse = top.extents[index].hostedSparse else { return false }
    let h = sparse.scheme.header
    guard newSectors > h.capacitySectors, h.capacitySectors == sparse.sectors,
      h.flags.contains(.useRedundantGrainDirectory), h.rgdOffsetSectors != 0
    else { return false }
    if let descriptor {
      guard h.descriptorOffsetSectors != 0, UInt64(descriptor.count) <= h.descriptorSizeSectors * 512 else {
        return false
      }
    }
    let old = SparseLayout(capacitySectors: h.capacitySectors, grainSectors: h.grainSectors)
    let new = SparseLayout(capacitySectors: newSectors, grainSectors: h.grainSectors)
    // Only while the grain tables there cover the new size. New tables appended to the file
    // would leave, once the writer appends a grain at the next grain boundary, a gap that
    // check() counts as leaked; the rewrite lays them out with the other tables instead.
    guard new.grainTableCount == old.grainTableCount else { return false }
    let usedInLast = Int(old.grainCount - (old.grainTableCount - 1) * SparseLayout.entriesPerTable)
    if usedInLast < Int(SparseLayout.entriesPerTable), let (table, _) = try sparse.grainTable(old.grainTableCount - 1) {
      guard table[usedInLast...].allSatisfy({ $0 == 0 }) else { return false }
      if h.rgdOffsetSectors != 0 {
        let r = try sparse.file.readExactly(
          at: h.rgdOffsetSectors * 512 + (old.grainTableCount - 1) * 4, count: 4, what: "redundant grain directory")
        let rgde = UInt64(r[0]) | UInt64(r[1]) << 8 | UInt64(r[2]) << 16 | UInt64(r[3]) << 24
        if rgde != 0 {
          let bytes = try sparse.file.readExactly(
            at: rgde * 512 + UInt64(usedInLast) * 4, count: (Int(SparseLayout.entriesPerTable) - usedInLast) * 4,
            what: "redundant grain table")
          guard bytes.allSatisfy({ $0 == 0 }) else { return false }
        }
      }
    }
    return true
  }

  /// Grows the top link's sparse extent `index` to `newSectors` in place (checked by
  /// `canGrowSparseInPlace`), writing `descriptor` into its embedded area last when given.
  func growSparseInPlace(_ index: Int, to newSectors: UInt64, descriptor: [UInt8]?) throws {
    // canGrowSparseInPlace said yes: a hosted sparse extent with a path.
    guard let sparse = top.extents[index].hostedSparse, let path = top.extents[index].path else {
      throw VMDKError(.notSupported, "extent \(index + 1) is not a hosted sparse extent", file: top.path)
    }
    let file = try LocalFile(path: path, writable: true)
    var h = sparse.scheme.header
    let old = SparseLayout(capacitySectors: h.capacitySectors, grainSectors: h.grainSectors)
    // The old last grain's sectors past the old end must read as zeros now that they count.
    if h.capacitySectors % h.grainSectors != 0 {
      let lastGrain = old.grainCount - 1
      try sparse.mapRuns(start: lastGrain * h.grainSectors, count: h.capacitySectors - lastGrain * h.grainSectors) {
        run in
        guard run.status == .data, let at = run.hostOffset else { return }
        let tailStart = at + run.count * 512
        let grainEnd = at - (run.start - lastGrain * h.grainSectors) * 512 + h.grainSectors * 512
        if tailStart < grainEnd {
          try file.write(at: tailStart, from: [UInt8](repeating: 0, count: Int(grainEnd - tailStart)))
        }
      }
    }
    h.capacitySectors = newSectors
    try h.serialized().withUnsafeBytes { try file.write(at: 0, from: $0) }
    try file.flush()
    if let descriptor {
      var area = descriptor
      area.append(contentsOf: repeatElement(0, count: Int(h.descriptorSizeSectors * 512) - descriptor.count))
      try file.write(at: h.descriptorOffsetSectors * 512, from: area)
      try file.flush()
    }
  }
}
