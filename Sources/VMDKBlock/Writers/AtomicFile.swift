// The one temp-file-then-rename of the toolkit: every writer and rewrite (new images,
// descriptor replacements, sparse rewrites for compact, defragment and resize, the change
// tracking file) makes its file as `.NAME.tmp-PID-RANDOM` in the destination's folder, fills
// it, flushes it, and renames it over the final name only on success. On any failure (a
// thrown error, a cancellation, a writer dropped without commit) the temporary file is
// removed and the final name is untouched. `vmdk-disk cleanup` recognises the name (the PID
// tells a dead writer's file from a live one's).

import Foundation
import VMDKTransport

/// A file under a temporary name next to `finalPath`, renamed into place by `commit`.
final class AtomicFile: @unchecked Sendable {
  /// The name the file gets on commit (through a symbolic link: the file it names).
  let finalPath: String
  /// `.NAME.tmp-PID-RANDOM` in the final name's folder.
  let tempPath: String
  /// The open temporary file.
  let file: LocalFile
  private let lock = NSLock()
  private var finished = false

  /// Creates the temporary file for `path`. `followLinks`: a symbolic link at `path` keeps
  /// pointing where it did and the file it names is replaced. `keepMode`: the new file gets
  /// the mode of the file it replaces.
  init(for path: String, followLinks: Bool = true, keepMode: Bool = true) throws {
    let target = followLinks ? (PathResolver.realPath(path) ?? path) : path
    finalPath = target
    tempPath = Self.temporaryName(for: target)
    file = try LocalFile.create(path: tempPath)
    if keepMode {
      var st = stat()
      if stat(target, &st) == 0 { _ = fchmod(file.fileDescriptor, st.st_mode & 0o7777) }
    }
  }

  /// Removed unless committed: a writer dropped half-way leaves nothing.
  deinit { abort() }

  /// `.NAME.tmp-PID-RANDOM` next to `path` (what `Disk.cleanup` looks for).
  static func temporaryName(for path: String) -> String {
    let folder = (path as NSString).deletingLastPathComponent
    let name = (path as NSString).lastPathComponent
    let rnd = String(UInt32.random(in: 0...UInt32.max), radix: 16)
    return (folder.isEmpty ? "." : folder) + "/.\(name).tmp-\(getpid())-\(rnd)"
  }

  /// Flushes the file (when `flush`), renames it over the final name, and syncs the folder
  /// (when `syncFolder`). A failure removes the temporary file and throws.
  func commit(flush: Bool = true, syncFolder: Bool = true) throws {
    do {
      if flush { try file.flush() }
      guard rename(tempPath, finalPath) == 0 else {
        let err = String(cString: strerror(errno))
        throw VMDKError(.fileAccess, "cannot rename \(tempPath) into place: \(err)", file: finalPath)
      }
    } catch {
      abort()
      throw error
    }
    lock.withLock { finished = true }
    if syncFolder { Self.syncFolder(of: finalPath) }
  }

  /// Removes the temporary file (nothing after a commit; safe more than once).
  func abort() {
    let remove = lock.withLock { () -> Bool in
      defer { finished = true }
      return !finished
    }
    if remove { unlink(tempPath) }
  }

  /// Whether `commit` or `abort` ran.
  var isFinished: Bool { lock.withLock { finished } }

  /// fsync of the folder holding `path`, so that a rename there is durable.
  static func syncFolder(of path: String) { syncDirectory((path as NSString).deletingLastPathComponent) }

  /// fsync of a folder.
  static func syncDirectory(_ folder: String) {
    let fd = open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY)
    if fd >= 0 {
      fsync(fd)
      close(fd)
    }
  }

  /// Writes a new `path` with `body` and renames it into place; on any error thrown by
  /// `body`, the flush or the rename, the temporary file is removed and `path` is untouched.
  @discardableResult
  static func replace<T>(
    _ path: String, followLinks: Bool = true, keepMode: Bool = true, _ body: (LocalFile) throws -> T
  ) throws -> T {
    let out = try AtomicFile(for: path, followLinks: followLinks, keepMode: keepMode)
    do {
      let result = try body(out.file)
      try out.commit()
      return result
    } catch {
      out.abort()
      throw error
    }
  }
}
