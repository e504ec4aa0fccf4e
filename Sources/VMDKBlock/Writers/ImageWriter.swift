// Writing a new image: the interface every writer (flat, sparse, stream, raw) gives the
// converter, and the set of temporary files a writer owns until it commits.

import Foundation
import VMDKFormat
import VMDKTransport

/// A new image being written front to back. Offsets only grow: each `write` starts at or
/// after the end of the previous one. Bytes never written read as zeros. Nothing is visible
/// under the final name until `commit()`; `abort()` removes every file made so far.
public protocol ImageWriter: AnyObject {
  /// The virtual size in bytes.
  var capacityBytes: UInt64 { get }
  /// Writes `data` (a multiple of 512 bytes, except for the last bytes of the disk) at
  /// virtual byte `offset` (a multiple of 512).
  func write(at offset: UInt64, _ data: UnsafeRawBufferPointer) throws
  /// Writes the metadata, flushes every file to stable storage and renames each into place
  /// (extents first, the descriptor last).
  func commit() throws
  /// Removes every temporary file. Safe after a failure and more than once.
  func abort()
}

/// Temporary files of a new image: each is made as `.NAME.tmp-PID-RANDOM` next to its
/// final name and renamed when the image is complete.
public final class OutputFiles: @unchecked Sendable {
  public struct Entry {
    public let finalPath: String
    public let tempPath: String
    public let file: LocalFile
  }
  private let lock = NSLock()
  private var entries: [Entry] = []
  private var committed = false
  /// Replace existing files (`--force`); otherwise an existing final name is refused.
  public let overwrite: Bool

  /// Flush each file to stable storage before the rename (the default). Off, a power cut
  /// soon after the rename can leave a complete-looking image with missing data, which is
  /// what `qemu-img convert` risks by default (its target cache mode is "unsafe").
  public let flush: Bool

  public init(overwrite: Bool = false, flush: Bool = true) {
    self.overwrite = overwrite
    self.flush = flush
  }

  /// Every temporary path made so far (for a signal handler that must clean up).
  public var temporaryPaths: [String] { lock.withLock { entries.map(\.tempPath) } }

  /// Makes the temporary file for `finalPath`.
  public func create(_ finalPath: String) throws -> LocalFile {
    if !overwrite && FileManager.default.fileExists(atPath: finalPath) {
      throw VMDKError(.fileExists, "the output exists; use --force to replace it", file: finalPath)
    }
    let url = URL(fileURLWithPath: finalPath)
    let dir = url.deletingLastPathComponent().path
    let name = url.lastPathComponent
    let temp = "\(dir)/.\(name).tmp-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    let file = try LocalFile.create(path: temp)
    file.streamsWriteback = flush
    lock.withLock { entries.append(Entry(finalPath: finalPath, tempPath: temp, file: file)) }
    return file
  }

  /// Flushes every file, then renames each into place in the order made: make the
  /// descriptor's file last so that it appears only when its extents are there.
  public func commit() throws {
    let list = lock.withLock { entries }
    if flush { for e in list { try e.file.flush() } }
    for e in list {
      if !overwrite && FileManager.default.fileExists(atPath: e.finalPath) {
        throw VMDKError(.fileExists, "the output appeared while it was written; not replaced", file: e.finalPath)
      }
      guard rename(e.tempPath, e.finalPath) == 0 else {
        let err = String(cString: strerror(errno))
        throw VMDKError(.fileAccess, "cannot rename \(e.tempPath) into place: \(err)", file: e.finalPath)
      }
    }
    // Make the renames durable: fsync the folders.
    let folders = flush ? Set(list.map { URL(fileURLWithPath: $0.finalPath).deletingLastPathComponent().path }) : []
    for dir in folders {
      let fd = open(dir, O_RDONLY | O_DIRECTORY)
      if fd >= 0 {
        fsync(fd)
        close(fd)
      }
    }
    lock.withLock { committed = true }
  }

  /// Removes the temporary files (nothing after a commit).
  public func abort() {
    let list = lock.withLock { committed ? [] : entries }
    for e in list { unlink(e.tempPath) }
    lock.withLock { entries = [] }
  }
}
