// Where the bytes of a range of the disk lie: pieces of the links' local files, zeros, or
// bytes that must be read the normal way (compressed grains, remote stores). Answered from the
// grain tables, falling through unallocated runs to the parents; no data is read. A caller
// can then move the file pieces without copying them (splice), as vmdk-mount does.
import VMDKTransport

/// One piece of a range of the disk, in order.
public enum HostPiece: Sendable, Equatable {
  /// `length` bytes of the local file open as `descriptor` (a link's file), from byte `offset`.
  case file(descriptor: Int32, offset: UInt64, length: Int)
  /// `length` bytes that read as zeros.
  case zero(length: Int)
  /// `length` bytes that only `Disk.read` gives (a compressed grain, a remote store, an
  /// extent that cannot be read).
  case read(length: Int)

  public var length: Int {
    switch self {
    case .file(_, _, let n), .zero(let n), .read(let n): n
    }
  }
}

extension Disk {
  /// Most pieces one `hostPieces` call returns by default: a request for 1 MiB of a file
  /// scattered in 4 KiB bits is better read than described.
  public static let maxHostPieces = 256

  /// Too many pieces: ends the walk.
  private struct TooManyPieces: Error {}

  /// The pieces of the disk's bytes `[offset, offset+length)`, in order, summing to
  /// `length`; nil when they would be more than `maxPieces`, or when the disk is open for
  /// writing (a later write could move the bytes under the caller). Neighbouring pieces of
  /// one file are merged. A piece is checked against its file's current size: what lies past
  /// the end reads as zeros (as `read` gives), so a caller never reads beyond a file.
  public func hostPieces(offset: UInt64, length: Int, maxPieces: Int = Disk.maxHostPieces) throws -> [HostPiece]? {
    guard writer == nil else { return nil }
    try checkOpen()
    let count = UInt64(length)
    guard length >= 0, offset <= capacityBytes, count <= capacityBytes - offset else {
      throw VMDKError(
        .outOfRange, "pieces of \(length) bytes at \(offset) go past the end of the disk (\(capacityBytes) bytes)",
        file: top.path, offset: offset)
    }
    guard length > 0 else { return [] }
    var walk = PieceWalk(low: offset, high: offset + count, maxPieces: maxPieces)
    let first = offset / 512
    let last = (offset + count + 511) / 512
    do {
      try ioLock.reading { try pieces(level: 0, start: first, count: last - first, &walk) }
    } catch is TooManyPieces {
      return nil
    }
    return walk.out
  }

  /// The pieces being gathered, clipped to the bytes asked for.
  private struct PieceWalk {
    let low: UInt64
    let high: UInt64
    let maxPieces: Int
    var out: [HostPiece] = []
    /// Current sizes of the files met, by (level, extent): one fstat each per call.
    var sizes: [(level: Int, extent: Int, size: UInt64)] = []

    /// Adds the disk bytes `[a, b)` (clipped to the window) as `piece(start, length)`.
    mutating func add(_ a: UInt64, _ b: UInt64, _ piece: (UInt64, Int) -> HostPiece) throws {
      let lo = max(a, low)
      let hi = min(b, high)
      guard lo < hi else { return }
      try append(piece(lo, Int(hi - lo)))
    }

    mutating func append(_ p: HostPiece) throws {
      if let last = out.last {
        switch (last, p) {
        case (.zero(let m), .zero(let n)):
          out[out.count - 1] = .zero(length: m + n)
          return
        case (.read(let m), .read(let n)):
          out[out.count - 1] = .read(length: m + n)
          return
        case (.file(let fa, let oa, let m), .file(let fb, let ob, let n)) where fa == fb && oa + UInt64(m) == ob:
          out[out.count - 1] = .file(descriptor: fa, offset: oa, length: m + n)
          return
        default: break
        }
      }
      guard out.count < maxPieces else { throw TooManyPieces() }
      out.append(p)
    }
  }

  private func pieces(level: Int, start: UInt64, count: UInt64, _ walk: inout PieceWalk) throws {
    guard level < links.count else {
      try walk.add(start * 512, (start + count) * 512) { .zero(length: $1) }
      return
    }
    let link = links[level]
    let inLink = start < link.capacitySectors ? min(count, link.capacitySectors - start) : 0
    if inLink > 0 {
      try link.mapRuns(start: start, count: inLink) { run in
        let a = run.start * 512
        let b = (run.start + run.count) * 512
        switch run.status {
        case .zero, .dataZero:
          try walk.add(a, b) { .zero(length: $1) }
        case .unallocated:
          try pieces(level: level + 1, start: run.start, count: run.count, &walk)
        case .data:
          let store = link.extents[run.extent].reader.store
          guard let host = run.extentRun.hostOffset, let store, let fd = store.spliceDescriptor else {
            try walk.add(a, b) { .read(length: $1) }
            return
          }
          let size: UInt64
          if let known = walk.sizes.first(where: { $0.level == level && $0.extent == run.extent }) {
            size = known.size
          } else {
            size = try store.size()
            walk.sizes.append((level, run.extent, size))
          }
          let lo = max(a, walk.low)
          let hi = min(b, walk.high)
          guard lo < hi else { return }
          let (at, overflow) = host.addingReportingOverflow(lo - a)
          // A table entry pointing past every file: the normal read answers (with its error).
          if overflow {
            try walk.append(.read(length: Int(hi - lo)))
            return
          }
          let n = hi - lo
          let inFile = at < size ? min(n, size - at) : 0
          if inFile > 0 { try walk.append(.file(descriptor: fd, offset: at, length: Int(inFile))) }
          if inFile < n { try walk.append(.zero(length: Int(n - inFile))) }
        }
      }
    }
    if inLink < count {
      // Past the end of a shorter link: zeros, as reads give.
      try walk.add((start + inLink) * 512, (start + count) * 512) { .zero(length: $1) }
    }
  }
}
