// The transports' log: retries, reconnects and faults, at a level, to a file. A log file that
// cannot be written is reported once on stderr and never fails an operation.

import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// The process-wide transport log (off until configured).
public final class TransportLog: Sendable {
  public enum Level: Int, Sendable, Comparable, CaseIterable {
    case off = 0, error, warning, info, debug
    public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    public var name: String { String(describing: self) }
  }

  public static let shared = TransportLog()

  private struct State {
    var level: Level = .off
    var path: String? = nil
    var reportedFailure = false
  }
  private let state = Mutex(State())

  /// Sets the level and the file (nil: stderr).
  public func configure(level: Level, file: String?) {
    state.withLock {
      $0.level = level
      $0.path = file
      $0.reportedFailure = false
    }
  }

  public var level: Level { state.withLock { $0.level } }

  /// Writes `message` when `level` is enabled.
  public func log(_ level: Level, _ message: @autoclosure () -> String) {
    let (enabled, path) = state.withLock { ($0.level >= level && level != .off, $0.path) }
    guard enabled else { return }
    let line = "vmdk-toolkit \(level.name): \(message())\n"
    guard let path else {
      _ = line.withCString { write(2, $0, strlen($0)) }
      return
    }
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    if fd < 0 {
      let err = String(cString: strerror(errno))
      let first = state.withLock { s -> Bool in
        defer { s.reportedFailure = true }
        return !s.reportedFailure
      }
      if first {
        _ = "vmdk-toolkit: cannot write the log file \(path): \(err); log lines for it are dropped\n".withCString {
          write(2, $0, strlen($0))
        }
      }
      return
    }
    defer { _ = close(fd) }
    _ = line.withCString { write(fd, $0, strlen($0)) }
  }
}
