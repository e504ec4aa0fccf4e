// Disk+Allocated: the two questions a backup asks before it reads anything. Which ranges hold
// data (VixDiskLib_QueryAllocatedBlocks, in chunks), and which ranges were written since a
// snapshot was taken (the links above that ancestor). Both come from block status, the grain
// tables and the file system's holes; no data is read. Runs are merged as the walk produces
// them, so the cost is one pass over the grain tables in use, and memory is the answer.

import VMDKFormat
import VMDKTransport

extension Disk {
  /// The smallest chunk QueryAllocatedBlocks accepts: 128 sectors (64 KiB), VixDiskLib's
  /// `VIXDISKLIB_MIN_CHUNK_SIZE`.
  public static let minChunkSectors: UInt64 = 128
  /// The largest chunk accepted: 2^54 sectors, so that a chunk's size in bytes (2^63) fits a
  /// UInt64. VixDiskLib stops at 131072 sectors (64 MiB) per chunk and 512 Ki chunks per call;
  /// we answer any window in one call, so neither cap is needed here.
  public static let maxChunkSectors: UInt64 = 1 << 54

  /// The allocated ranges of `[offset, offset + length)` in whole chunks of `chunkSectors`
  /// sectors, as VixDiskLib_QueryAllocatedBlocks reports them, but in bytes: each range starts
  /// on a chunk boundary and ends on one or at the end of the disk; adjacent chunks are merged;
  /// gaps are holes.
  ///
  /// A range is allocated when the link that answers for it (the topmost link that has it)
  /// stores it as data: block status `present && data`. That includes stored ranges known to
  /// read as zeros (`allocated-zero`: a hole inside a flat extent's file), because the disk
  /// has them allocated, as VixDiskLib reports a flat disk whole. Ranges no link has, ZERO
  /// extents and zeroed-grain entries (GTE 1) are not allocated: they read as zeros without
  /// any stored data. A zeroed grain in a child hides its parent's data, as reading does.
  ///
  /// - Parameters:
  ///   - chunkSectors: a power of two from `minChunkSectors` (128) to `maxChunkSectors`;
  ///     anything else throws `invalidArgument`.
  ///   - topOnly: only the top link's allocation (VixDiskLib's SINGLE_LINK view); by default
  ///     the whole chain's.
  ///   - offset: the first byte asked about; a multiple of the chunk.
  ///   - length: bytes asked about (default: to the end); a multiple of the chunk, or reaching
  ///     the end of the disk (a last partial chunk may be asked for whole).
  /// - Throws: `invalidArgument` for a bad chunk size or an unaligned window, `outOfRange` for
  ///   a window past the end of the disk, and any error reading the grain tables.
  public func allocatedBlocks(
    chunkSectors: UInt64 = 128, topOnly: Bool = false, offset: UInt64 = 0, length: UInt64? = nil
  ) throws -> [ChangedArea] {
    guard chunkSectors >= Self.minChunkSectors, chunkSectors <= Self.maxChunkSectors,
      chunkSectors & (chunkSectors - 1) == 0
    else {
      throw VMDKError(
        .invalidArgument,
        "chunk size of \(chunkSectors) sectors: expected a power of two from \(Self.minChunkSectors) to 2^54 sectors",
        file: top.path)
    }
    let chunkBytes = chunkSectors * 512
    guard offset % chunkBytes == 0 else {
      throw VMDKError(
        .invalidArgument, "offset \(offset) is not a multiple of the chunk (\(chunkBytes) bytes)", file: top.path,
        offset: offset)
    }
    guard offset <= capacityBytes else {
      throw VMDKError(
        .outOfRange, "offset \(offset) is past the end of the disk (\(capacityBytes) bytes)", file: top.path,
        offset: offset)
    }
    var end = capacityBytes
    if let length {
      let (e, overflow) = offset.addingReportingOverflow(length)
      let lastChunkEnd = Self.roundUp(capacityBytes, chunkBytes, limit: UInt64.max)
      guard !overflow, e <= lastChunkEnd else {
        throw VMDKError(
          .outOfRange,
          "\(length) bytes at \(offset) go past the end of the disk (\(capacityBytes) bytes)", file: top.path,
          offset: offset)
      }
      guard length % chunkBytes == 0 || e >= capacityBytes else {
        throw VMDKError(
          .invalidArgument,
          "length \(length) is not a multiple of the chunk (\(chunkBytes) bytes) and does not reach the end of the disk",
          file: top.path, offset: offset)
      }
      end = min(e, capacityBytes)
    }
    var merger = RangeMerger(unitBytes: chunkBytes, limitBytes: end)
    guard end > offset else { return [] }
    try walk(levels: topOnly ? 1 : links.count, start: offset / 512, count: (end - offset + 511) / 512) {
      start, count, status in
      if status == .data || status == .dataZero { merger.add(start * 512, (start + count) * 512) }
    }
    return merger.ranges
  }

  /// The byte ranges written since the snapshot that made link `ancestor` the parent of the
  /// link above it: every range some link above it (index `0..<ancestor`) has, whether as
  /// data, as zeros (a zeroed grain, a ZERO extent) or as a hole of a flat file: each of them
  /// hides what the ancestor and its parents say. Exact (grains, or sectors in flat extents;
  /// no chunks), merged.
  ///
  /// Ranges past the end of a shorter ancestor (a disk grown after the snapshot) that no link
  /// above has are not reported: nothing was written there; they read as zeros.
  ///
  /// - Parameter ancestor: the index of a link below the top (`1..<links.count`).
  /// - Throws: `invalidArgument` for any other index, and any error reading the grain tables.
  public func changedBlocks(sinceAncestor ancestor: Int) throws -> [ChangedArea] {
    guard ancestor >= 1, ancestor < links.count else {
      throw VMDKError(
        .invalidArgument,
        ancestor == 0
          ? "link 0 is the top link \(top.path), not an ancestor: name a link below it"
          : "link \(ancestor) is not an ancestor of \(top.path): the chain has \(links.count) link(s)",
        file: top.path)
    }
    var merger = RangeMerger(unitBytes: 512, limitBytes: capacityBytes)
    try walk(levels: ancestor, start: 0, count: capacitySectors) { start, count, status in
      if status != .unallocated { merger.add(start * 512, (start + count) * 512) }
    }
    return merger.ranges
  }

  /// The byte ranges written above the ancestor link at `path`: see
  /// `changedBlocks(sinceAncestor:)` with its index.
  ///
  /// `path` names a link as the chain resolved it: the same file (symlinks followed) as a
  /// link's path, given relative to the current folder or absolute, or relative to the top
  /// link's folder as a `parentFileNameHint` would name it.
  /// - Throws: `invalidArgument` naming `path` when it is not a link below the top.
  public func changedBlocks(sinceAncestor path: String) throws -> [ChangedArea] {
    guard let index = linkIndex(of: path) else {
      let chain = links.map(\.path).joined(separator: ", ")
      let hint = links.count == 1 ? " (the disk was opened as a single link)" : ""
      throw VMDKError(
        .invalidArgument, "not a link of the chain of \(top.path)\(hint); the chain is: \(chain)",
        file: path)
    }
    guard index > 0 else {
      throw VMDKError(
        .invalidArgument, "the top link of the chain, not an ancestor: name a link below it", file: path)
    }
    return try changedBlocks(sinceAncestor: index)
  }

  /// The index of the link at `path` (0 is the top), or nil when no link is that file.
  public func linkIndex(of path: String) -> Int? {
    if let i = links.firstIndex(where: { $0.path == path }) { return i }
    var candidates = [path]
    if !path.hasPrefix("/") {
      let folder = PathResolver.folder(of: top.path)
      candidates.append(folder == "/" ? "/" + path : folder + "/" + path)
    }
    let linkPaths = links.map { PathResolver.realPath($0.path) }
    for candidate in candidates {
      guard let real = PathResolver.realPath(candidate) else { continue }
      if let i = linkPaths.firstIndex(of: real) { return i }
    }
    return nil
  }

  // MARK: The walk

  /// Calls `body` with runs covering `[start, start+count)` in address order, each with the
  /// status the topmost of links `0..<levels` gives it; ranges unallocated in all of them come
  /// as `.unallocated`. Like `blockStatus`, but without building `BlockStatus` values and
  /// without descending below `levels`.
  func walk(
    levels: Int, start: UInt64, count: UInt64, _ body: (UInt64, UInt64, LayerStatus) throws -> Void
  ) throws {
    try walk(level: 0, levels: min(levels, links.count), start: start, count: count, body)
  }

  private func walk(
    level: Int, levels: Int, start: UInt64, count: UInt64, _ body: (UInt64, UInt64, LayerStatus) throws -> Void
  ) throws {
    let link = links[level]
    let inLink = start < link.capacitySectors ? min(count, link.capacitySectors - start) : 0
    if inLink > 0 {
      try link.mapRuns(start: start, count: inLink) { run in
        if run.status == .unallocated && level + 1 < levels {
          try walk(level: level + 1, levels: levels, start: run.start, count: run.count, body)
        } else {
          try body(run.start, run.count, run.status)
        }
      }
    }
    // Past the end of a shorter link: nothing below has it either.
    if inLink < count { try body(start + inLink, count - inLink, .unallocated) }
  }

  /// `value` rounded up to a multiple of `unit`, or `limit` when that is smaller (or overflows).
  static func roundUp(_ value: UInt64, _ unit: UInt64, limit: UInt64) -> UInt64 {
    let down = value - value % unit
    guard down != value else { return min(value, limit) }
    let (up, overflow) = down.addingReportingOverflow(unit)
    return overflow ? limit : min(up, limit)
  }
}

/// Collects byte ranges that arrive in increasing order, rounds each out to `unitBytes` (the
/// end clipped to `limitBytes`), and merges the ones that touch or overlap.
struct RangeMerger {
  let unitBytes: UInt64
  let limitBytes: UInt64
  private(set) var ranges: [ChangedArea] = []

  init(unitBytes: UInt64, limitBytes: UInt64) {
    self.unitBytes = unitBytes
    self.limitBytes = limitBytes
  }

  mutating func add(_ startBytes: UInt64, _ endBytes: UInt64) {
    let start = startBytes - startBytes % unitBytes
    let end = Disk.roundUp(min(endBytes, limitBytes), unitBytes, limit: limitBytes)
    guard end > start else { return }
    if let last = ranges.last, start <= last.start + last.length {
      let lastEnd = last.start + last.length
      if end > lastEnd { ranges[ranges.count - 1].length = end - last.start }
      return
    }
    ranges.append(ChangedArea(start: start, length: end - start))
  }
}
