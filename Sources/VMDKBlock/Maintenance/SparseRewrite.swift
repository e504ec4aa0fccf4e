// Rewriting one hosted sparse extent (KDMV) into a new file: what compact, defragment, resize
// and repair share. The new file has VMware's layout (header, [embedded descriptor], RGD, every
// redundant table, GD, every table, padding to a grain, then the grains in LBA order), made as
// `.NAME.tmp-PID-RANDOM` next to the original by AtomicFile (so `vmdk-disk cleanup` recognises
// it), flushed, and only then renamed over the original by the caller.

import Foundation
import VMDKFormat
import VMDKTransport

/// What a grain of the rewritten extent holds.
enum RewriteGrain {
  /// Entry 0: reads from the parent (or zeros).
  case unallocated
  /// Entry 1 (only with the zeroed-grain flag): reads as zeros, hides the parent.
  case zero
  /// Stored data.
  case data
}

/// A new KDMV file being written front to back.
final class SparseExtentRewriter {
  /// The new file under its temporary name (removed unless committed).
  private let output: AtomicFile
  var finalPath: String { output.finalPath }
  var file: LocalFile { output.file }
  let header: SparseExtentHeader
  private let layout: SparseLayout
  private let redundantTablesSector: UInt64
  private let tablesSector: UInt64
  private var nextGrainSector: UInt64
  private var tableIndex: UInt64 = 0
  private var table: [UInt32]
  private var tableUsed = false
  private let staged = StagedWriter()
  /// Grains stored as data.
  private(set) var grainsStored: UInt64 = 0

  /// Makes the temporary file for a new extent of `capacitySectors` that keeps `template`'s
  /// grain size, version and zeroed-grain flag; `descriptor` is embedded at sector 1 when given
  /// (with at least `minDescriptorSectors` of room, as the original had).
  init(
    replacing finalPath: String, template: SparseExtentHeader, capacitySectors: UInt64, descriptor: [UInt8]?,
    minDescriptorSectors: UInt64
  ) throws {
    let grain = template.grainSectors
    layout = SparseLayout(capacitySectors: capacitySectors, grainSectors: grain)
    let tables = layout.grainTableCount
    guard tables <= Limits.maxGrainDirectoryEntries else {
      throw VMDKError(
        .invalidArgument,
        "\(capacitySectors) sectors at \(grain) sectors a grain need \(tables) grain tables; readers take at most \(Limits.maxGrainDirectoryEntries)",
        file: finalPath)
    }
    let descriptorSectors: UInt64 =
      descriptor.map { max(minDescriptorSectors, (UInt64($0.count) + 511) / 512) } ?? 0
    let gdSectors = layout.grainDirectorySectors
    let (rgd, gd, metadataEnd, overhead) = layout.hostedPlacement(descriptorSectors: descriptorSectors)
    guard metadataEnd <= UInt64(UInt32.max) else {
      throw VMDKError(
        .invalidArgument, "the grain tables would pass the 2 TiB a sparse extent can address", file: finalPath)
    }
    var flags: SparseExtentHeader.Flags = [.validNewlineDetector, .useRedundantGrainDirectory]
    if template.hasZeroedGrainEntries { flags.insert(.zeroedGrainEntries) }
    header = SparseExtentHeader(
      version: template.version, flags: flags, capacitySectors: capacitySectors, grainSectors: grain,
      descriptorOffsetSectors: descriptorSectors == 0 ? 0 : 1, descriptorSizeSectors: descriptorSectors,
      numGTEsPerGT: UInt32(SparseLayout.entriesPerTable), rgdOffsetSectors: rgd, gdOffsetSectors: gd,
      overheadSectors: overhead)
    redundantTablesSector = rgd + gdSectors
    tablesSector = gd + gdSectors
    nextGrainSector = overhead
    table = [UInt32](repeating: 0, count: Int(SparseLayout.entriesPerTable))
    // The caller resolved symbolic links already.
    output = try AtomicFile(for: finalPath, followLinks: false)
    let file = output.file
    // Written front to back and flushed before the rename: start writeback as it goes.
    file.streamsWriteback = true
    do {
      try file.truncate(to: overhead * 512)
      if let descriptor {
        var area = descriptor
        area.append(contentsOf: repeatElement(0, count: Int(descriptorSectors * 512) - descriptor.count))
        try file.write(at: 512, from: area)
      }
    } catch {
      output.abort()
      throw error
    }
  }

  var grainBytes: Int { Int(header.grainSectors * 512) }

  /// Adds grain `index` (grains must come in increasing order). For `.data`, `bytes` is the
  /// grain (one grain long).
  func add(grain index: UInt64, _ kind: RewriteGrain, _ bytes: UnsafeRawBufferPointer? = nil) throws {
    let t = index / SparseLayout.entriesPerTable
    if t != tableIndex {
      try flushTable()
      tableIndex = t
    }
    switch kind {
    case .unallocated: return
    case .zero:
      // Invariant: callers add zero grains only when the new header has zeroed-grain entries
      // (the rewrite's options decide it, never the file's contents).
      precondition(header.hasZeroedGrainEntries)
      table[Int(index % SparseLayout.entriesPerTable)] = 1
    case .data:
      let sector = nextGrainSector
      guard sector + header.grainSectors <= UInt64(UInt32.max) + 1 else {
        throw VMDKError(
          .diskFull, "the extent file would pass the 2 TiB that grain table entries can address", file: finalPath)
      }
      guard let bytes else {
        throw VMDKError(.failure, "grain \(index): a data grain without its bytes", file: finalPath)
      }
      try staged.write(file, at: sector * 512, bytes)
      table[Int(index % SparseLayout.entriesPerTable)] = UInt32(sector)
      nextGrainSector += header.grainSectors
      grainsStored += 1
    }
    tableUsed = true
  }

  private func flushTable() throws {
    guard tableUsed else { return }
    let le = table.map { $0.littleEndian }
    let tableSectors = SparseLayout.tableBytes / 512
    try le.withUnsafeBytes {
      try file.write(at: (redundantTablesSector + tableIndex * tableSectors) * 512, from: $0)
      try file.write(at: (tablesSector + tableIndex * tableSectors) * 512, from: $0)
    }
    for i in table.indices { table[i] = 0 }
    tableUsed = false
  }

  /// Writes the tables, directories and header and flushes the file (not yet renamed).
  func finish() throws {
    try staged.flush()
    try flushTable()
    let tableSectors = SparseLayout.tableBytes / 512
    for (dir, tables) in [(header.rgdOffsetSectors, redundantTablesSector), (header.gdOffsetSectors, tablesSector)] {
      let entries = (0..<layout.grainTableCount).map { UInt32(tables + $0 * tableSectors).littleEndian }
      try entries.withUnsafeBytes { try file.write(at: dir * 512, from: $0) }
    }
    try header.serialized().withUnsafeBytes { try file.write(at: 0, from: $0) }
    if nextGrainSector * 512 > (try file.size()) { try file.truncate(to: nextGrainSector * 512) }
    try file.flush()
  }

  /// Renames the finished file over its final name.
  func commit() throws {
    // `finish` flushed the file.
    try output.commit(flush: false)
  }

  /// Removes the temporary file.
  func abort() { output.abort() }
}

/// Helpers every maintenance operation shares.
enum Maintenance {
  /// Throws `notSupported` unless `location` is a local path: the maintenance operations make,
  /// rename and delete files, which a network location (an NBD export is a whole raw disk;
  /// HTTP is read-only) does not have.
  static func requireLocal(_ location: String) throws {
    let parsed = try DiskLocation(parsing: location)
    guard case .file = parsed else {
      throw VMDKError(
        .notSupported,
        "this operation works on local disk files, not on a disk reached over \(parsed.transport)", file: location)
    }
  }

  /// rename(2), by a name that `Disk.rename` does not hide.
  static func renameFile(_ from: String, _ to: String) -> Int32 { rename(from, to) }

  /// fsync of the folder holding `path`, so that a rename there is durable.
  static func syncFolder(of path: String) { AtomicFile.syncFolder(of: path) }

  /// link(2), by a name that `Disk.top` (a DiskLink) does not hide.
  static func hardLink(_ from: String, _ to: String) -> Int32 { link(from, to) }

  /// Replaces `path` with `bytes`: a temporary file next to it, flushed, renamed over it
  /// (through a symbolic link, the file it names is replaced); see AtomicFile.
  static func replaceFile(_ path: String, with bytes: [UInt8]) throws {
    try AtomicFile.replace(path) { try $0.write(at: 0, from: bytes) }
  }

  /// Opens `path` writable, single link or with its parents, which locks the top link's files.
  /// The restore guard is not applied: these operations keep the content and the CID
  /// (compact, defragment), point the children at the new name (rename), or decide about
  /// children themselves (delete, resize).
  static func openLocked(_ path: String, options: OpenOptions, parents: Bool) throws -> Disk {
    try requireLocal(path)
    var o = options
    o.writable = true
    o.allowWritingUnderSnapshots = true
    if !parents { o.singleLink = true }
    return try Disk.open(path, options: o)
  }

  /// The link's descriptor as text (it round-trips unknown keys, comments and order), to embed
  /// in a rewritten monolithicSparse file.
  static func descriptorText(of link: DiskLink) -> [UInt8] { Array(link.descriptor.serialized().utf8) }
}

extension Disk {
  /// Rewrites the top link's sparse extent `index` into a new file (not yet renamed).
  ///
  /// - `capacitySectors`: the new extent's sectors (grains past it are left out).
  /// - `dropZeroGrains`: all-zero grains are left out when nothing under them (the parent
  ///   links) reads as anything but zeros; otherwise they stay (as a zeroed-grain entry when
  ///   the header allows it, else as a grain of zeros), so that they keep hiding the parent.
  /// - `descriptor`: the text to embed (monolithicSparse), nil for an extent without one.
  func rewriteSparseExtent(
    _ index: Int, capacitySectors: UInt64, dropZeroGrains: Bool, descriptor: [UInt8]?
  ) throws -> (SparseExtentRewriter, dropped: UInt64) {
    let link = top
    guard let sparse = link.extents[index].hostedSparse, let path = link.extents[index].path,
      let header = link.extents[index].sparseHeader
    else {
      throw VMDKError(.notSupported, "extent \(index + 1) is not a hosted sparse extent", file: top.path)
    }
    let extentBase = link.extents[index].startSector
    let out = try SparseExtentRewriter(
      replacing: PathResolver.realPath(path) ?? path, template: header, capacitySectors: capacitySectors,
      descriptor: descriptor, minDescriptorSectors: header.descriptorSizeSectors)
    var dropped: UInt64 = 0
    do {
      let grainSectors = header.grainSectors
      let grainBytes = Int(grainSectors * 512)
      // Grains are read a run at a time, up to `chunkGrains` grains per read (one pread for
      // uncompressed grains that lie together in the file), and handed to the rewriter in order.
      let chunkGrains = max(1, (4 << 20) / grainBytes)
      var chunk = [UInt8](repeating: 0, count: chunkGrains * grainBytes)
      var below = [UInt8](repeating: 0, count: grainBytes)
      let limit = min(sparse.sectors, capacitySectors)
      // Whether the links under this one read as anything but zeros in `inside` sectors at `start`.
      func parentHasData(_ start: UInt64, _ inside: UInt64) throws -> Bool {
        guard links.count > 1 else { return false }
        let n = Int(inside * 512)
        try below.withUnsafeMutableBytes {
          try readSectors(
            level: 1, start: extentBase + start, count: inside, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])
          )
        }
        return !below.withUnsafeBytes { isAllZero(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
      }
      func addGrain(_ g: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
        let start = g * grainSectors
        let inside = min(grainSectors, limit - start)
        if dropZeroGrains && isAllZero(bytes) {
          if try !parentHasData(start, inside) {
            dropped += 1
            return try out.add(grain: g, .unallocated)
          }
          if header.hasZeroedGrainEntries {
            dropped += 1
            return try out.add(grain: g, .zero)
          }
        }
        try out.add(grain: g, .data, bytes)
      }
      try sparse.mapRuns(start: 0, count: limit) { run in
        switch run.status {
        case .unallocated:
          return
        case .zero:
          var g = run.start / grainSectors
          while g * grainSectors < run.start + run.count {
            let start = g * grainSectors
            if dropZeroGrains, try !parentHasData(start, min(grainSectors, limit - start)) {
              dropped += 1
              try out.add(grain: g, .unallocated)
            } else {
              try out.add(grain: g, .zero)
            }
            g += 1
          }
        case .data, .dataZero:
          // Runs of a sparse extent start on a grain; the last grain may be partial.
          var at = run.start
          let end = run.start + run.count
          while at < end {
            let n = min(end - at, UInt64(chunkGrains) * grainSectors)
            var piece = run
            piece.start = at
            piece.count = n
            if let host = run.hostOffset { piece.hostOffset = host + (at - run.start) * 512 }
            let bytes = Int(n * 512)
            let grains = (bytes + grainBytes - 1) / grainBytes
            try chunk.withUnsafeMutableBytes { buf in
              // A partial last grain reads as zeros past the extent's end.
              UnsafeMutableRawBufferPointer(rebasing: buf[bytes..<(grains * grainBytes)])
                .initializeMemory(as: UInt8.self, repeating: 0)
              try sparse.read(piece, into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<bytes]))
            }
            try chunk.withUnsafeBytes { buf in
              for k in 0..<grains {
                let grain = UnsafeRawBufferPointer(rebasing: buf[(k * grainBytes)..<((k + 1) * grainBytes)])
                try addGrain(at / grainSectors + UInt64(k), grain)
              }
            }
            at += n
          }
        }
      }
      try out.finish()
    } catch {
      out.abort()
      throw error
    }
    return (out, dropped)
  }

  /// Throws unless every extent of the top link is a hosted sparse extent that can be
  /// rewritten (not streamOptimized) or a flat one.
  func requireRewritableSparse(_ what: String) throws {
    var any = false
    for (i, e) in top.extents.enumerated() {
      switch (e.format, e.reader.maintainable) {
      case (.stream, _):
        throw VMDKError(
          .notSupported, "\(what) does not handle streamOptimized extents (convert to monolithicSparse first)",
          file: e.path ?? top.path)
      case (_, .sparse): any = true
      case (_, .flat), (.zero, _): break
      default:
        throw VMDKError(
          .notSupported, "\(what) handles hosted sparse and flat extents; extent \(i + 1) is \(e.format.displayName)",
          file: top.path)
      }
    }
    guard any else {
      throw VMDKError(.notSupported, "\(what) applies to sparse disks; this disk has no sparse extent", file: top.path)
    }
  }
}
