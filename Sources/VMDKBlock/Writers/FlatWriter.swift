// The writer of images whose data sits in plain files at its virtual offset: raw (one file, no
// descriptor), monolithicFlat, twoGbMaxExtentFlat, and ESXi's vmfs (preallocated) and
// vmfsThin. Files are sized first (holes), data is written where it belongs, and all-zero
// grain-sized blocks are not written at all, so they stay holes.

import Foundation
import VMDKFormat
import VMDKTransport

/// Writes raw, monolithicFlat, twoGbMaxExtentFlat, vmfs and vmfsThin images.
public final class FlatWriter: ImageWriter {
  /// One data file and the virtual bytes it holds.
  private struct Extent {
    let file: LocalFile
    /// Virtual byte where the extent starts.
    let startBytes: UInt64
    let sizeBytes: UInt64
  }

  public let capacityBytes: UInt64
  private let type: DiskType
  private let files: OutputFiles
  private var extents: [Extent] = []
  /// The descriptor's file and text (nil for raw).
  private var descriptor: (file: LocalFile, text: String)? = nil
  /// Size of the blocks tested for zeros: the grain size of the options.
  private let blockBytes: UInt64
  private var sequence: SequentialWrites
  private let staged = StagedWriter()
  private var committed = false
  private var failed = false

  /// Creates the files of a new image at `path` (the descriptor's path; the data file's for
  /// raw). Throws `fileExists` when one exists and `overwrite` is off.
  public init(path: String, options: CreateOptions, overwrite: Bool = false) throws {
    try options.validate()
    let flatTypes: [DiskType] = [.raw, .monolithicFlat, .twoGbMaxExtentFlat, .vmfs, .vmfsThin]
    guard flatTypes.contains(options.type) else {
      throw VMDKError(.invalidArgument, "\(options.type.rawValue) is not a flat type", file: path)
    }
    type = options.type
    let capacity = options.capacitySectors * 512
    capacityBytes = capacity
    blockBytes = options.grainSectors * 512
    sequence = SequentialWrites(limitBytes: capacity)
    files = OutputFiles(overwrite: overwrite, flush: options.flushBeforeRename)
    do {
      try makeFiles(path: path, options: options)
    } catch {
      files.abort()
      throw error
    }
  }

  private func makeFiles(path: String, options: CreateOptions) throws {
    let name = OutputName(path)
    let capacity = capacityBytes
    var pieces: [(path: String, start: UInt64, size: UInt64)] = []
    switch type {
    case .raw:
      pieces = [(path, 0, capacity)]
    case .monolithicFlat, .vmfs, .vmfsThin:
      pieces = [(name.extentPath("-flat"), 0, capacity)]
    case .twoGbMaxExtentFlat:
      var start: UInt64 = 0
      while start < capacity {
        let size = min(options.splitSizeBytes, capacity - start)
        pieces.append((name.extentPath(OutputName.splitSuffix("f", pieces.count)), start, size))
        start += size
      }
    default:
      throw VMDKError(.invalidArgument, "\(type.rawValue) is not a flat type", file: path)
    }
    for p in pieces {
      let file = try files.create(p.path)
      if type == .vmfs {
        try preallocate(file, bytes: p.size)
      } else {
        try file.truncate(to: p.size)
      }
      extents.append(Extent(file: file, startBytes: p.start, sizeBytes: p.size))
    }
    guard type != .raw else { return }
    let kind: ExtentDescription.Kind = (type == .vmfs || type == .vmfsThin) ? .vmfs : .flat
    let lines = zip(pieces, extents).map { p, e in
      // qemu refuses an offset on a VMFS extent line ("Invalid extent line"); ESXi writes none.
      ExtentDescription(
        sectors: e.sizeBytes / 512, kind: kind, fileName: OutputName.baseName(p.path), hasOffset: kind == .flat)
    }
    var options = options
    if type == .vmfsThin && !options.diskDatabase.contains(where: { $0.key == "ddb.thinProvisioned" }) {
      // ESXi marks its thin disks so (with createType "vmfs"); say it for readers that look.
      options.diskDatabase.append((key: "ddb.thinProvisioned", value: "1"))
    }
    let text = try options.descriptor(
      createType: type.rawValue, extents: lines, cid: options.cid ?? CreateOptions.randomCID()
    ).serialized()
    // The descriptor is made last so that it is renamed into place last.
    descriptor = (try files.create(path), text)
  }

  deinit {
    // A writer dropped without commit leaves no temporary files behind.
    if !committed { files.abort() }
  }

  public func write(at offset: UInt64, _ data: UnsafeRawBufferPointer) throws {
    guard !committed else { throw VMDKError(.invalidArgument, "write after commit", offset: offset) }
    try sequence.accept(offset: offset, count: data.count, file: extents[0].file.name)
    guard let base = data.baseAddress else { return }
    do {
      // Blocks (grain-aligned, clipped to the data) that are all zeros are skipped; each run
      // of other blocks goes out in one piece.
      var done = 0
      var runStart = 0
      while done < data.count {
        let pos = offset + UInt64(done)
        let n = Int(min((pos / blockBytes + 1) * blockBytes - pos, UInt64(data.count - done)))
        if isAllZero(base + done, n) {
          if runStart < done {
            try store(
              at: offset + UInt64(runStart), UnsafeRawBufferPointer(start: base + runStart, count: done - runStart))
          }
          runStart = done + n
        }
        done += n
      }
      if runStart < done {
        try store(at: offset + UInt64(runStart), UnsafeRawBufferPointer(start: base + runStart, count: done - runStart))
      }
    } catch {
      failed = true
      throw error
    }
  }

  /// Writes bytes at virtual `offset`, split at extent boundaries.
  private func store(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
    var pos = offset
    var done = 0
    // Extents are equal-sized except the last: find the first by division.
    var k = extents.count == 1 ? 0 : Int(offset / extents[0].sizeBytes)
    while done < bytes.count {
      let e = extents[k]
      let n = Int(min(UInt64(bytes.count - done), e.startBytes + e.sizeBytes - pos))
      try staged.write(e.file, at: pos - e.startBytes, UnsafeRawBufferPointer(rebasing: bytes[done..<(done + n)]))
      pos += UInt64(n)
      done += n
      k += 1
    }
  }

  public func commit() throws {
    guard !committed else { return }
    guard !failed else {
      throw VMDKError(.failure, "a write failed; the image is incomplete", file: descriptor?.file.name)
    }
    try staged.flush()
    if let d = descriptor {
      let bytes = Array(d.text.utf8)
      try bytes.withUnsafeBytes { try d.file.write(at: 0, from: $0) }
    }
    try files.commit()
    committed = true
  }

  public func abort() {
    guard !committed else { return }
    files.abort()
  }
}
