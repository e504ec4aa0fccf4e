// The writer of hosted sparse images: monolithicSparse (one KDMV file with the descriptor
// embedded at sector 1) and twoGbMaxExtentSparse (a descriptor file and KDMV extents
// `name-s001.vmdk`, ... without descriptor fields, RGD at sector 1). The layout is VMware's
// and qemu's (notes §1.7, Appendix A): header, [descriptor], RGD, every RGT, GD, every GT,
// padding to a grain, then grains appended in LBA order. All-zero grains are not stored.
//
// Memory stays bounded whatever the capacity: writes arrive in increasing offset order, so
// only the grain table being filled is held (2 KiB) and written, both copies, once writes pass
// its 512-grain span; tables that stay empty are never written and remain holes in the file.
// The directories are a formula (every table is preallocated) and are streamed out at commit.

import Foundation
import VMDKFormat
import VMDKTransport

/// Writes monolithicSparse and twoGbMaxExtentSparse images.
public final class SparseWriter: ImageWriter {
  /// One KDMV file and where its tables go.
  private struct Extent {
    let file: LocalFile
    let header: SparseExtentHeader
    let layout: SparseLayout
    /// Sector of the first redundant grain table (right after the RGD).
    let redundantTablesSector: UInt64
    /// Sector of the first grain table (right after the GD).
    let tablesSector: UInt64
    /// Where the next grain goes, in sectors.
    var nextGrainSector: UInt64
  }

  public let capacityBytes: UInt64
  private let files: OutputFiles
  private var extents: [Extent] = []
  private let grainSectors: UInt64
  private let grainBytes: Int
  /// Grains in every extent but the last: a split type's extent size, or all the disk's grains.
  private let grainsPerExtent: UInt64
  /// The embedded descriptor (monolithicSparse), written at sector 1 of the only extent.
  private var embeddedDescriptor: [UInt8] = []
  /// The descriptor's own file (twoGbMaxExtentSparse).
  private var descriptorFile: (file: LocalFile, text: [UInt8])? = nil

  /// The grain table being filled: its extent, its index there, its 512 entries (little-endian).
  private var tableExtent = 0
  private var tableIndex: UInt64 = 0
  private var tableUsed = false
  private let table: UnsafeMutableBufferPointer<UInt32>

  /// The grain being filled by writes smaller than a grain: its global index and bytes.
  private var pendingGrain: UInt64? = nil
  private let pending: UnsafeMutableRawPointer

  private var sequence: SequentialWrites
  private let staged = StagedWriter()
  private var committed = false
  private var failed = false

  /// Creates the files of a new sparse image at `path`. Throws `fileExists` when one exists
  /// and `overwrite` is off, `invalidArgument` when the options do not fit the format.
  public init(path: String, options: CreateOptions, overwrite: Bool = false) throws {
    try options.validate()
    guard options.type == .monolithicSparse || options.type == .twoGbMaxExtentSparse else {
      throw VMDKError(.invalidArgument, "\(options.type.rawValue) is not a hosted sparse type", file: path)
    }
    grainSectors = options.grainSectors
    grainBytes = Int(options.grainSectors * 512)
    let capacitySectors = options.capacitySectors
    capacityBytes = capacitySectors * 512
    sequence = SequentialWrites(limitBytes: capacityBytes)
    files = OutputFiles(overwrite: overwrite, flush: options.flushBeforeRename)
    // Allocated once the options passed, so that a refusal leaks nothing.
    pending = UnsafeMutableRawPointer.allocate(byteCount: Int(options.grainSectors * 512), alignment: 4096)
    table = .allocate(capacity: Int(SparseLayout.entriesPerTable))
    table.initialize(repeating: 0)
    let split = options.type == .twoGbMaxExtentSparse
    grainsPerExtent =
      split
      ? options.splitSizeBytes / 512 / options.grainSectors
      : SparseLayout(capacitySectors: capacitySectors, grainSectors: options.grainSectors).grainCount
    do {
      try makeFiles(path: path, options: options, split: split)
    } catch {
      files.abort()
      throw error
    }
  }

  deinit {
    // A writer dropped without commit leaves no temporary files behind.
    if !committed { files.abort() }
    table.deallocate()
    pending.deallocate()
  }

  private func makeFiles(path: String, options: CreateOptions, split: Bool) throws {
    let name = OutputName(path)
    let capacity = options.capacitySectors
    var pieces: [(path: String, sectors: UInt64)] = []
    if split {
      let splitSectors = options.splitSizeBytes / 512
      var start: UInt64 = 0
      while start < capacity {
        let n = min(splitSectors, capacity - start)
        pieces.append((name.extentPath(OutputName.splitSuffix("s", pieces.count)), n))
        start += n
      }
    } else {
      pieces = [(path, capacity)]
    }
    let lines = pieces.map {
      ExtentDescription(sectors: $0.sectors, kind: .sparse, fileName: OutputName.baseName($0.path))
    }
    let text = Array(
      try options.descriptor(
        createType: options.type.rawValue, extents: lines, cid: options.cid ?? CreateOptions.randomCID()
      ).serialized().utf8)
    guard UInt64(text.count) <= Limits.maxDescriptorBytes else {
      throw VMDKError(
        .invalidArgument, "the descriptor is \(text.count) bytes; readers take at most \(Limits.maxDescriptorBytes)",
        file: path)
    }
    if !split { embeddedDescriptor = text }
    for p in pieces {
      // VMware's 20 sectors, more when the text needs them (a large kept disk database).
      let descriptorSectors = split ? 0 : max(20, (UInt64(text.count) + 511) / 512)
      let extent = try Self.layOut(
        capacitySectors: p.sectors, grainSectors: grainSectors, descriptorSectors: descriptorSectors,
        zeroedGrains: options.zeroedGrains, path: p.path)
      let file = try files.create(p.path)
      // Tables and directories are holes until written; unused tables stay holes.
      try file.truncate(to: extent.header.overheadSectors * 512)
      extents.append(
        Extent(
          file: file, header: extent.header, layout: extent.layout,
          redundantTablesSector: extent.redundantTablesSector, tablesSector: extent.tablesSector,
          nextGrainSector: extent.header.overheadSectors))
    }
    if split {
      // Made last, so renamed into place last.
      descriptorFile = (try files.create(path), text)
    }
  }

  /// The header and table positions of one extent (notes §1.7).
  private static func layOut(
    capacitySectors: UInt64, grainSectors: UInt64, descriptorSectors: UInt64, zeroedGrains: Bool, path: String
  ) throws -> (header: SparseExtentHeader, layout: SparseLayout, redundantTablesSector: UInt64, tablesSector: UInt64) {
    let layout = SparseLayout(capacitySectors: capacitySectors, grainSectors: grainSectors)
    let tables = layout.grainTableCount
    guard tables <= Limits.maxGrainDirectoryEntries else {
      throw VMDKError(
        .invalidArgument,
        "\(capacitySectors) sectors at \(grainSectors) sectors a grain need \(tables) grain tables; readers take at most \(Limits.maxGrainDirectoryEntries): use larger grains",
        file: path)
    }
    let gdSectors = layout.grainDirectorySectors
    let (rgd, gd, metadataEnd, overhead) = layout.hostedPlacement(descriptorSectors: descriptorSectors)
    // Directory entries are u32 sectors: every table must lie below 2 TiB.
    guard metadataEnd <= UInt64(UInt32.max) else {
      throw VMDKError(.invalidArgument, "the grain tables would pass the 2 TiB a sparse extent can address", file: path)
    }
    var flags: SparseExtentHeader.Flags = [.validNewlineDetector, .useRedundantGrainDirectory]
    if zeroedGrains { flags.insert(.zeroedGrainEntries) }
    let header = SparseExtentHeader(
      version: zeroedGrains ? 2 : 1, flags: flags, capacitySectors: capacitySectors, grainSectors: grainSectors,
      descriptorOffsetSectors: descriptorSectors == 0 ? 0 : 1, descriptorSizeSectors: descriptorSectors,
      numGTEsPerGT: UInt32(SparseLayout.entriesPerTable), rgdOffsetSectors: rgd, gdOffsetSectors: gd,
      overheadSectors: overhead)
    return (header, layout, rgd + gdSectors, gd + gdSectors)
  }

  // MARK: Writing

  public func write(at offset: UInt64, _ data: UnsafeRawBufferPointer) throws {
    guard !committed else { throw VMDKError(.invalidArgument, "write after commit", offset: offset) }
    try sequence.accept(offset: offset, count: data.count, file: extents[0].file.name)
    guard let base = data.baseAddress else { return }
    do {
      let gb = UInt64(grainBytes)
      var pos = offset
      var done = 0
      while done < data.count {
        let grain = pos / gb
        let inGrain = Int(pos % gb)
        let left = data.count - done
        if inGrain == 0 && left >= grainBytes {
          // Whole grains straight from the caller's buffer, in runs of non-zero grains.
          try flushPendingGrain()
          let n = left / grainBytes
          var runStart: Int? = nil
          for i in 0..<n {
            let zero = isAllZero(base + done + i * grainBytes, grainBytes)
            if zero, let first = runStart {
              try storeGrains(from: grain + UInt64(first), count: UInt64(i - first), base + done + first * grainBytes)
              runStart = nil
            } else if !zero && runStart == nil {
              runStart = i
            }
          }
          if let first = runStart {
            try storeGrains(from: grain + UInt64(first), count: UInt64(n - first), base + done + first * grainBytes)
          }
          pos += UInt64(n * grainBytes)
          done += n * grainBytes
        } else {
          // Part of a grain: gather it; it is stored when complete or at commit.
          if pendingGrain != grain {
            try flushPendingGrain()
            pendingGrain = grain
            pending.initializeMemory(as: UInt8.self, repeating: 0, count: grainBytes)
          }
          let m = min(grainBytes - inGrain, left)
          (pending + inGrain).copyMemory(from: base + done, byteCount: m)
          pos += UInt64(m)
          done += m
          if inGrain + m == grainBytes { try flushPendingGrain() }
        }
      }
    } catch {
      failed = true
      throw error
    }
  }

  /// Stores the gathered partial grain unless it is all zeros.
  private func flushPendingGrain() throws {
    guard let grain = pendingGrain else { return }
    pendingGrain = nil
    if !isAllZero(pending, grainBytes) {
      try storeGrains(from: grain, count: 1, UnsafeRawPointer(pending))
    }
  }

  /// Appends `count` consecutive non-zero grains starting at global grain `first`, from
  /// `bytes`, and points their table entries at them.
  private func storeGrains(from first: UInt64, count: UInt64, _ bytes: UnsafeRawPointer) throws {
    var grain = first
    var left = count
    var p = bytes
    while left > 0 {
      let k = Int(grain / grainsPerExtent)
      let local = grain - UInt64(k) * grainsPerExtent
      let n = min(left, grainsPerExtent - local)
      let sector = extents[k].nextGrainSector
      // Entries are u32 sectors: an extent file cannot pass 2 TiB.
      guard sector + n * grainSectors <= UInt64(UInt32.max) + 1 else {
        throw VMDKError(
          .diskFull, "the extent file would pass the 2 TiB that grain table entries can address",
          file: extents[k].file.name, offset: sector * 512)
      }
      for i in 0..<n {
        try setEntry(extent: k, grain: local + i, sector: UInt32(sector + i * grainSectors))
      }
      let byteCount = Int(n) * grainBytes
      try staged.write(extents[k].file, at: sector * 512, UnsafeRawBufferPointer(start: p, count: byteCount))
      extents[k].nextGrainSector = sector + n * grainSectors
      p += byteCount
      grain += n
      left -= n
    }
  }

  /// Sets the entry of `grain` (within extent `extent`), first writing out the table being
  /// filled when the grain belongs to another.
  @inline(__always)
  private func setEntry(extent: Int, grain: UInt64, sector: UInt32) throws {
    let t = grain / SparseLayout.entriesPerTable
    if t != tableIndex || extent != tableExtent {
      try flushTable()
      tableExtent = extent
      tableIndex = t
    }
    table[Int(grain % SparseLayout.entriesPerTable)] = sector.littleEndian
    tableUsed = true
  }

  /// Writes the table being filled, both copies, unless it is empty (then it stays a hole).
  private func flushTable() throws {
    guard tableUsed else { return }
    let e = extents[tableExtent]
    let tableSectors = SparseLayout.tableBytes / 512
    let bytes = UnsafeRawBufferPointer(table)
    try e.file.write(at: (e.redundantTablesSector + tableIndex * tableSectors) * 512, from: bytes)
    try e.file.write(at: (e.tablesSector + tableIndex * tableSectors) * 512, from: bytes)
    table.update(repeating: 0)
    tableUsed = false
  }

  // MARK: Commit

  public func commit() throws {
    guard !committed else { return }
    guard !failed else {
      throw VMDKError(.failure, "a write failed; the image is incomplete", file: extents.first?.file.name)
    }
    do {
      try flushPendingGrain()
      try staged.flush()
      try flushTable()
      for e in extents {
        try writeDirectory(e.file, at: e.header.rgdOffsetSectors, tablesAt: e.redundantTablesSector, e.layout)
        try writeDirectory(e.file, at: e.header.gdOffsetSectors, tablesAt: e.tablesSector, e.layout)
        try e.header.serialized().withUnsafeBytes { try e.file.write(at: 0, from: $0) }
      }
      if !embeddedDescriptor.isEmpty {
        try embeddedDescriptor.withUnsafeBytes { try extents[0].file.write(at: 512, from: $0) }
      }
      if let d = descriptorFile {
        try d.text.withUnsafeBytes { try d.file.write(at: 0, from: $0) }
      }
      try files.commit()
    } catch {
      failed = true
      throw error
    }
    committed = true
  }

  /// Writes a grain directory at sector `directory`: entry i is the sector of table i, every
  /// table preallocated 4 sectors apart from `tables`. Streamed in bounded chunks (a 60 TiB
  /// disk has 8 MiB of directory).
  private func writeDirectory(_ file: LocalFile, at directory: UInt64, tablesAt tables: UInt64, _ layout: SparseLayout)
    throws
  {
    let count = layout.grainTableCount
    let chunk: UInt64 = 64 * 1024
    let tableSectors = SparseLayout.tableBytes / 512
    var buffer = [UInt32](repeating: 0, count: Int(min(chunk, count)))
    var i: UInt64 = 0
    while i < count {
      let n = min(chunk, count - i)
      for j in 0..<n {
        buffer[Int(j)] = UInt32(tables + (i + j) * tableSectors).littleEndian
      }
      try buffer.withUnsafeBytes {
        try file.write(at: directory * 512 + i * 4, from: UnsafeRawBufferPointer(rebasing: $0.prefix(Int(n) * 4)))
      }
      i += n
    }
  }

  public func abort() {
    guard !committed else { return }
    files.abort()
  }
}
