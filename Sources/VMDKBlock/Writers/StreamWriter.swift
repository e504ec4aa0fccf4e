// The streamOptimized writer, in VMware's ovftool layout (notes §2.3 A, §8): header with the
// grain directory "at end", embedded descriptor, then the non-zero grains in LBA order as grain
// markers, a grain table after each 512-grain region that holds grains, and at the end the
// grain directory, the footer and the end-of-stream marker. The file is written front to back
// only, so it could go to a pipe; grains are compressed in parallel (GrainCompressor).

import Foundation
import VMDKFormat
import VMDKTransport

/// Writes a streamOptimized image, one file.
public final class StreamWriter: ImageWriter {
  public let capacityBytes: UInt64
  /// The header at sector 0; the footer is the same with the real `gdOffset`.
  public let header: SparseExtentHeader

  private let file: LocalFile
  private let files: OutputFiles
  private let grainBytes: UInt64
  private let layout: SparseLayout
  /// Set at the end of `init` (it calls back into `self`), so nil only while `init` runs.
  private var compressor: GrainCompressor?
  /// The grain being filled: its number and its input slot.
  private var current: (index: UInt64, slot: UnsafeMutableRawBufferPointer)?
  /// End of the last write (virtual byte): writes only go forward.
  private var writtenUpTo: UInt64 = 0
  /// Next free sector of the file.
  private var fileSectors: UInt64
  /// The non-zero grain directory entries, in increasing index order (tables are written in
  /// region order): memory follows the regions that hold data, not the capacity.
  private var directory: [(index: UInt64, sector: UInt32)] = []
  /// The grain table of region `tableIndex`, while its grains are written.
  private var table = [UInt32](repeating: 0, count: Int(SparseLayout.entriesPerTable))
  private var tableIndex: UInt64?
  private var failure: (any Error)?
  private var done = false

  /// Makes the image's file through `files` (a temporary name until `commit`), and writes the
  /// header, the descriptor and the rest of the first `overHead` sectors at once. When this
  /// throws after the file was made, `files.abort()` removes it.
  /// - Parameter threads: compression threads; nil for every core, 0 for the calling thread only.
  public init(
    path: String, options: CreateOptions, files: OutputFiles, threads: Int? = nil,
    engine: DeflateEngine = .libdeflate
  ) throws {
    try options.validate()
    guard options.type == .streamOptimized else {
      throw VMDKError(
        .invalidArgument, "the stream writer writes streamOptimized, not \(options.type.rawValue)", file: path)
    }
    capacityBytes = options.capacityBytes
    let sectors = options.capacitySectors
    layout = SparseLayout(capacitySectors: sectors, grainSectors: options.grainSectors)
    grainBytes = options.grainSectors * 512
    guard layout.grainTableCount <= Limits.maxGrainDirectoryEntries else {
      throw VMDKError(
        .invalidArgument,
        "capacity \(options.capacityBytes) bytes needs \(layout.grainTableCount) grain directory entries; readers accept at most \(Limits.maxGrainDirectoryEntries)",
        file: path)
    }

    let name = URL(fileURLWithPath: path).lastPathComponent
    let extent = ExtentDescription(access: .readWrite, sectors: sectors, kind: .sparse, fileName: name)
    let descriptor = try options.descriptor(
      createType: DiskType.streamOptimized.rawValue, extents: [extent], cid: options.cid ?? CreateOptions.randomCID())
    let text = Array(descriptor.serialized().utf8)
    let descriptorSectors = UInt64(text.count + 511) / 512
    // VMware's 128 sectors, more when the descriptor does not fit (rounded to 128 again).
    let overhead = max(128, (1 + descriptorSectors + 127) / 128 * 128)
    header = SparseExtentHeader(
      version: 3, flags: [.validNewlineDetector, .compressed, .markers], capacitySectors: sectors,
      grainSectors: options.grainSectors, descriptorOffsetSectors: 1, descriptorSizeSectors: descriptorSectors,
      numGTEsPerGT: UInt32(SparseLayout.entriesPerTable), rgdOffsetSectors: 0,
      gdOffsetSectors: SparseExtentHeader.gdAtEnd,
      overheadSectors: overhead, compressAlgorithm: 1)
    fileSectors = overhead

    file = try files.create(path)
    self.files = files
    var head = [UInt8](repeating: 0, count: Int(overhead * 512))
    head.replaceSubrange(0..<512, with: header.serialized())
    head.replaceSubrange(512..<(512 + text.count), with: text)
    try head.withUnsafeBytes { try file.write(at: 0, from: $0) }

    compressor = GrainCompressor(
      grainSectors: options.grainSectors, level: options.compressionLevel,
      threads: threads ?? GrainCompressor.defaultThreads, engine: engine
    ) { [unowned self] batch in try self.store(batch) }
  }

  deinit { compressor?.shutdown() }

  public func write(at offset: UInt64, _ data: UnsafeRawBufferPointer) throws {
    if let failure { throw failure }
    guard !done else { throw VMDKError(.invalidArgument, "write after commit or abort", file: file.name) }
    let end = offset + UInt64(data.count)
    guard offset >= writtenUpTo else {
      throw VMDKError(
        .invalidArgument,
        "write at \(offset) goes back: a stream is written forward, the last write ended at \(writtenUpTo)",
        file: file.name, offset: offset)
    }
    guard end <= layout.capacitySectors * 512, end >= offset else {
      throw VMDKError(
        .outOfRange, "write of \(data.count) bytes at \(offset) goes past the end of the disk (\(capacityBytes) bytes)",
        file: file.name, offset: offset)
    }
    do {
      var pos = offset
      var from = 0
      while pos < end {
        let g = pos / grainBytes
        let within = Int(pos % grainBytes)
        let n = Int(min(grainBytes - UInt64(within), end - pos))
        let slot: UnsafeMutableRawBufferPointer
        if let c = current, c.index == g {
          slot = c.slot
        } else {
          slot = try liveCompressor().slot(for: g)
          current = (g, slot)
          // Bytes not written read as zeros, and the last grain is padded with zeros.
          if !(within == 0 && n == Int(grainBytes)) {
            slot.initializeMemory(as: UInt8.self, repeating: 0)
          }
        }
        UnsafeMutableRawBufferPointer(rebasing: slot[within..<(within + n)]).copyMemory(
          from: UnsafeRawBufferPointer(rebasing: data[from..<(from + n)]))
        pos += UInt64(n)
        from += n
      }
      writtenUpTo = end
    } catch {
      failure = error
      throw error
    }
  }

  public func commit() throws {
    if let failure { throw failure }
    guard !done else { throw VMDKError(.invalidArgument, "commit after commit or abort", file: file.name) }
    do {
      let compressor = try liveCompressor()
      try compressor.finish()
      try flushTable()
      try writeTail()
      compressor.shutdown()
      try files.commit()
      done = true
    } catch {
      failure = error
      throw error
    }
  }

  private func liveCompressor() throws -> GrainCompressor {
    guard let compressor else { throw VMDKError(.failure, "the writer has no compressor", file: file.name) }
    return compressor
  }

  public func abort() {
    compressor?.shutdown()
    done = true
    files.abort()
  }

  // MARK: Layout

  /// Writes a compressed batch: grain records in order, a grain table whenever a region ends.
  /// Runs on the writer's thread (GrainCompressor's emit). Records are compacted in place in
  /// the batch's output buffer and written with as few writes as the tables allow.
  private func store(_ batch: GrainBatch) throws {
    let out = batch.output.baseAddress!
    var used = 0
    func writePending() throws {
      guard used > 0 else { return }
      let at = (fileSectors - UInt64(used / 512)) * 512
      try file.write(at: at, from: UnsafeRawBufferPointer(start: out, count: used))
      used = 0
    }
    for i in 0..<batch.count {
      let n = batch.recordBytes[i]
      guard n > 0 else { continue }
      let g = batch.grainIndex[i]
      let region = g / SparseLayout.entriesPerTable
      if region != tableIndex {
        try writePending()
        try flushTable()
        tableIndex = region
      }
      guard fileSectors <= UInt64(UInt32.max) else {
        throw VMDKError(
          .diskFull, "the stream reaches sector \(fileSectors): grain table entries cannot point past 2 TiB",
          file: file.name)
      }
      table[Int(g % SparseLayout.entriesPerTable)] = UInt32(fileSectors)
      // Moves down or stays: a record never outgrows its slot, so `used` <= its slot's start.
      memmove(out + used, out + i * batch.recordCapacity, n)
      used += n
      fileSectors += UInt64(n / 512)
    }
    try writePending()
  }

  /// Writes the grain table of the current region (GT marker + 4 sectors) and points the
  /// grain directory at it.
  private func flushTable() throws {
    guard let index = tableIndex else { return }
    let tableSectors = SparseLayout.tableBytes / 512
    var bytes = StreamMarker(value: tableSectors, size: 0, type: StreamMarker.MetadataType.grainTable.rawValue)
      .serialized()
    bytes.reserveCapacity(512 + Int(SparseLayout.tableBytes))
    for e in table { withUnsafeBytes(of: e.littleEndian) { bytes.append(contentsOf: $0) } }
    guard fileSectors + 1 <= UInt64(UInt32.max) else {
      throw VMDKError(
        .diskFull, "the stream reaches sector \(fileSectors): past what a grain directory can name", file: file.name)
    }
    directory.append((index, UInt32(fileSectors + 1)))
    try bytes.withUnsafeBytes { try file.write(at: fileSectors * 512, from: $0) }
    fileSectors += 1 + tableSectors
    for i in table.indices { table[i] = 0 }
    tableIndex = nil
  }

  /// GD marker + grain directory, footer marker + footer, end-of-stream marker. The
  /// directory goes out in pieces of at most `tailChunkBytes` (a 1 PiB disk has a 128 MiB one).
  private func writeTail() throws {
    let gdSectors = layout.grainDirectorySectors
    let gdStart = fileSectors + 1
    var bytes = StreamMarker(value: gdSectors, size: 0, type: StreamMarker.MetadataType.grainDirectory.rawValue)
      .serialized()
    let entries = layout.grainTableCount
    let chunkEntries = UInt64(StreamWriter.tailChunkBytes / 4)
    var next = directory.startIndex
    var first: UInt64 = 0
    var at = fileSectors * 512
    while first < entries {
      let count = min(chunkEntries, entries - first)
      var chunk = [UInt8](repeating: 0, count: Int(count) * 4)
      while next < directory.endIndex, directory[next].index < first + count {
        let (index, sector) = directory[next]
        let o = Int(index - first) * 4
        withUnsafeBytes(of: sector.littleEndian) { chunk.replaceSubrange(o..<(o + 4), with: $0) }
        next += 1
      }
      bytes += chunk
      if first + count == entries {
        bytes += [UInt8](repeating: 0, count: Int(gdSectors * 512 - entries * 4))
      } else {
        try bytes.withUnsafeBytes { try file.write(at: at, from: $0) }
        at += UInt64(bytes.count)
        bytes = []
      }
      first += count
    }
    var footer = header
    footer.gdOffsetSectors = gdStart
    bytes += StreamMarker(value: 1, size: 0, type: StreamMarker.MetadataType.footer.rawValue).serialized()
    bytes += footer.serialized()
    bytes += StreamMarker(value: 0, size: 0, type: StreamMarker.MetadataType.endOfStream.rawValue).serialized()
    try bytes.withUnsafeBytes { try file.write(at: at, from: $0) }
    fileSectors = (at + UInt64(bytes.count)) / 512
  }

  /// Largest single write of the grain directory.
  static let tailChunkBytes = 1 << 20
}
