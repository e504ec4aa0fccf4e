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
/// final name (AtomicFile) and renamed when the image is complete; removed on any failure.
public final class OutputFiles: @unchecked Sendable {
  private let lock = NSLock()
  private var entries: [AtomicFile] = []
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

  /// Removed unless committed.
  deinit { abort() }

  /// Every temporary path made so far (for a signal handler that must clean up).
  public var temporaryPaths: [String] { lock.withLock { entries.map(\.tempPath) } }

  /// Makes the temporary file for `finalPath`.
  public func create(_ finalPath: String) throws -> LocalFile {
    if !overwrite && FileManager.default.fileExists(atPath: finalPath) {
      throw VMDKError(.fileExists, "the output exists; use --force to replace it", file: finalPath)
    }
    // A new image's files replace what is at their names (with --force), links included.
    let out = try AtomicFile(for: finalPath, followLinks: false, keepMode: false)
    out.file.streamsWriteback = flush
    lock.withLock { entries.append(out) }
    return out.file
  }

  /// Flushes every file, then renames each into place in the order made: make the
  /// descriptor's file last so that it appears only when its extents are there. A failure
  /// removes the files not yet renamed.
  public func commit() throws {
    let list = lock.withLock { entries }
    do {
      if flush { for e in list { try e.file.flush() } }
      for e in list {
        if !overwrite && FileManager.default.fileExists(atPath: e.finalPath) {
          throw VMDKError(.fileExists, "the output appeared while it was written; not replaced", file: e.finalPath)
        }
        try e.commit(flush: false, syncFolder: false)
      }
    } catch {
      abort()
      throw error
    }
    // Make the renames durable: fsync the folders.
    let folders = flush ? Set(list.map { ($0.finalPath as NSString).deletingLastPathComponent }) : []
    for dir in folders { AtomicFile.syncDirectory(dir) }
    lock.withLock { committed = true }
  }

  /// Removes the temporary files (nothing after a commit).
  public func abort() {
    let list = lock.withLock { committed ? [] : entries }
    for e in list { e.abort() }
    lock.withLock { entries = [] }
  }
}
