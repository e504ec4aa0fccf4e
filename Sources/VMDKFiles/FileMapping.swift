// A file system's optional ability to say where a file's bytes lie on its volume (NTFS runs,
// ext extents and block maps), and the way from there to the disk's host files: a reader
// can then move those bytes without copying them (vmdk-mount splices them to the kernel).
// Only answered from metadata; no file data is read.
import VMDKBlock

/// One piece of a file's bytes as its volume holds them, in order.
public enum VolumePiece: Sendable, Equatable {
  /// `length` bytes of the volume from byte `offset`.
  case volume(offset: UInt64, length: Int)
  /// `length` bytes that read as zeros (a hole, an uninitialised tail).
  case zero(length: Int)

  public var length: Int {
    switch self {
    case .volume(_, let n), .zero(let n): n
    }
  }
}

/// Where files' bytes lie on the volume (FileSystem.mapping).
public protocol FileMapping: Sendable {
  /// The volume the pieces are of.
  var volume: any VolumeReader { get }
  /// The pieces of the regular file `id`'s bytes `[offset, offset+length)`, cut at the end
  /// of the file (none at or past it): what `read` would fill, in order. nil when the bytes
  /// are not plain bytes of the volume (resident, inline, compressed or encrypted data), or
  /// would take more than `maxPieces` pieces: then read them.
  func volumePieces(_ id: FileID, at offset: UInt64, length: Int, maxPieces: Int) throws -> [VolumePiece]?
}

extension FileMapping {
  /// The pieces of a file's bytes on the disk's host files (Disk.hostPieces), through the
  /// volume's place on its disk; nil when any step cannot tell or the pieces are too many.
  public func hostPieces(_ id: FileID, at offset: UInt64, length: Int, maxPieces: Int = Disk.maxHostPieces) throws
    -> [HostPiece]?
  {
    guard let (disk, start) = volume.diskRange else { return nil }
    guard let pieces = try volumePieces(id, at: offset, length: length, maxPieces: maxPieces) else { return nil }
    var out: [HostPiece] = []
    for p in pieces {
      switch p {
      case .zero(let n):
        if case .zero(let m) = out.last {
          out[out.count - 1] = .zero(length: m + n)
        } else {
          out.append(.zero(length: n))
        }
      case .volume(let at, let n):
        try checkRange(at, n, size: volume.size, name: volume.name)
        let (diskAt, overflow) = start.addingReportingOverflow(at)
        guard !overflow, let host = try disk.hostPieces(offset: diskAt, length: n, maxPieces: maxPieces) else {
          return nil
        }
        for h in host {
          if let last = out.last, let merged = Self.merge(last, h) {
            out[out.count - 1] = merged
          } else {
            out.append(h)
          }
        }
      }
      if out.count > maxPieces { return nil }
    }
    return out
  }

  static func merge(_ a: HostPiece, _ b: HostPiece) -> HostPiece? {
    switch (a, b) {
    case (.zero(let m), .zero(let n)): return .zero(length: m + n)
    case (.read(let m), .read(let n)): return .read(length: m + n)
    case (.file(let fa, let oa, let m), .file(let fb, let ob, let n)) where fa == fb && oa &+ UInt64(m) == ob:
      return .file(descriptor: fa, offset: oa, length: m + n)
    default: return nil
    }
  }
}

/// Gathers volume pieces, merging neighbours, up to a cap.
struct VolumePieceList {
  let maxPieces: Int
  var out: [VolumePiece] = []
  /// False once a piece did not fit under the cap.
  var fits = true

  mutating func add(_ p: VolumePiece) {
    guard p.length > 0, fits else { return }
    if let last = out.last {
      switch (last, p) {
      case (.zero(let m), .zero(let n)):
        out[out.count - 1] = .zero(length: m + n)
        return
      case (.volume(let a, let m), .volume(let b, let n)) where a &+ UInt64(m) == b:
        out[out.count - 1] = .volume(offset: a, length: m + n)
        return
      default: break
      }
    }
    guard out.count < maxPieces else {
      fits = false
      return
    }
    out.append(p)
  }
}
