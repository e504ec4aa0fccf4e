// Cleanup: the temporary files our writers leave when a process dies before its commit or
// abort. Writers (OutputFiles) and the maintenance rewrites name them `.NAME.tmp-PID-RANDOM`
// next to the image; one whose PID no longer exists (kill(pid, 0) fails with ESRCH) is
// removed. A live PID's file is kept: it may be an image being written right now (a PID
// reused by an unrelated process keeps a stale file too; that is the safe side). Lock files:
// the toolkit makes none. Its locks are open file description locks on the disk files
// themselves (FileLock.swift), which the kernel drops with the process, so a dead writer
// leaves no lock to clean. The descriptor writer's `.NAME.cid-RANDOM.tmp` files carry no PID
// and are only listed, not removed.

import Foundation
import VMDKTransport

/// What cleanup found in one pass.
public struct CleanupResult: Sendable, Equatable {
  /// Temporary files removed (their writer's PID is dead).
  public var removed: [String] = []
  /// Temporary files kept because their writer is alive.
  public var keptLive: [String] = []
  /// Files that look like ours but carry no PID (kept).
  public var unknown: [String] = []
}

public enum Cleanup {
  /// The PID in a writer's temporary name `.NAME.tmp-PID-RANDOM`, or nil for other names.
  public static func writerPID(inTemporaryName name: String) -> Int32? {
    guard name.hasPrefix("."), let r = name.range(of: ".tmp-", options: .backwards) else { return nil }
    let parts = name[r.upperBound...].split(separator: "-", omittingEmptySubsequences: false)
    guard parts.count == 2, let pid = Int32(parts[0]), pid > 0, !parts[1].isEmpty,
      parts[1].allSatisfy({ $0.isHexDigit })
    else { return nil }
    return pid
  }

  /// Whether process `pid` exists (EPERM: it exists, owned by someone else).
  public static func isAlive(_ pid: Int32) -> Bool {
    if kill(pid, 0) == 0 { return true }
    return errno != ESRCH
  }

  /// Removes the dead writers' temporary files in `folders` (not recursive).
  public static func run(folders: [String]) throws -> CleanupResult {
    for folder in folders { try Maintenance.requireLocal(folder) }
    var result = CleanupResult()
    for folder in folders {
      let names: [String]
      do {
        names = try FileManager.default.contentsOfDirectory(atPath: folder)
      } catch {
        throw VMDKError(.fileNotFound, "cannot list the folder: \(error.localizedDescription)", file: folder)
      }
      for name in names.sorted() {
        let p = (folder as NSString).appendingPathComponent(name)
        if let pid = writerPID(inTemporaryName: name) {
          if isAlive(pid) {
            result.keptLive.append(p)
          } else if unlink(p) == 0 {
            result.removed.append(p)
          } else if errno != ENOENT {
            throw VMDKError(.fileAccess, "cannot remove: \(String(cString: strerror(errno)))", file: p)
          }
        } else if name.hasPrefix("."), name.hasSuffix(".tmp"), name.contains(".cid-") {
          result.unknown.append(p)
        }
      }
    }
    return result
  }
}
