// The transports' log: retries, reconnects and faults, at a level, to a file or stderr, one
// timestamped line per message. A log file that cannot be written is reported once on stderr
// and never fails an operation: its lines are dropped.

import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// The process-wide transport log (off until configured). Thread-safe: lines from several
/// threads never interleave.
public final class TransportLog: Sendable {
  public enum Level: Int, Sendable, Comparable, CaseIterable {
    case off = 0
    case error, warning, info, debug
    public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    public var name: String { String(describing: self) }
  }

  public static let shared = TransportLog()

  private struct State {
    var level: Level = .off
    var path: String? = nil
    /// The open log file (-1: none open).
    var fd: Int32 = -1
    /// The file was reopened after a failed write; a second failure gives up.
    var reopened = false
    /// The file cannot be written: its lines are dropped until the next `configure`.
    var failed = false
    /// How many times a failure was reported (at most once per `configure`).
    var failureReports = 0
  }
  private let state = Mutex(State())
  /// Where a log file's failure is reported (stderr; a pipe in tests).
  private let reportFD: Int32

  /// A log reporting its file's failure on `reportFD`. The process uses `shared`.
  init(reportFD: Int32 = 2) {
    self.reportFD = reportFD
  }

  deinit {
    state.withLock { if $0.fd >= 0 { _ = close($0.fd) } }
  }

  /// Sets the level and the file (nil: stderr), closing the previous file. The file is opened
  /// (created, appended to) now; a file that cannot be opened is reported once.
  public func configure(level: Level, file: String?) {
    state.withLock { s in
      if s.fd >= 0 { _ = close(s.fd) }
      s = State(level: level, path: file)
      if file != nil, level != .off { openFile(&s) }
    }
  }

  public var level: Level { state.withLock { $0.level } }

  /// How many times a failure of the log file was reported (0 or 1 per `configure`).
  var failureReports: Int { state.withLock { $0.failureReports } }

  /// Writes `message` as one line when `level` is enabled. Never fails.
  public func log(_ level: Level, _ message: @autoclosure () -> String) {
    guard level != .off, state.withLock({ $0.level >= level }) else { return }
    let line = Array("\(Self.timestamp()) vmdk-toolkit \(level.name): \(message())\n".utf8)
    state.withLock { s in
      guard s.path != nil else {
        _ = Self.writeAll(2, line)
        return
      }
      guard !s.failed else { return }
      if s.fd >= 0, Self.writeAll(s.fd, line) { return }
      // The first failed write (a removed or full disk, a closed descriptor): reopen and retry
      // once; then give up on the file.
      let err = errno
      guard !s.reopened else { return fail(&s, err) }
      s.reopened = true
      if s.fd >= 0 { _ = close(s.fd) }
      s.fd = -1
      openFile(&s)
      if s.fd >= 0, !Self.writeAll(s.fd, line) { fail(&s, errno) }
    }
  }

  // MARK: The file

  /// Opens (creates, appends to) the file; reports a failure.
  private func openFile(_ s: inout State) {
    guard let path = s.path else { return }
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return fail(&s, errno) }
    s.fd = fd
  }

  /// Gives up on the file: closes it and reports why, the first time only.
  private func fail(_ s: inout State, _ err: Int32) {
    if s.fd >= 0 { _ = close(s.fd) }
    s.fd = -1
    s.failed = true
    guard s.failureReports == 0 else { return }
    s.failureReports += 1
    let reason = String(cString: strerror(err))
    let text = "vmdk-toolkit: cannot write the log file \(s.path ?? ""): \(reason); its log lines are dropped\n"
    _ = Self.writeAll(reportFD, Array(text.utf8))
  }

  /// Writes all of `bytes` to `fd` (EINTR retried); false on an error or a write of nothing.
  private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { buffer in
      var done = 0
      while done < buffer.count {
        let n = write(fd, buffer.baseAddress! + done, buffer.count - done)
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return false }
        done += n
      }
      return true
    }
  }

  /// The current UTC time as `2026-11-26T03:30:00.123Z`.
  private static func timestamp() -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var fields = tm()
    var seconds = now.tv_sec
    gmtime_r(&seconds, &fields)
    var text = [CChar](repeating: 0, count: 32)
    let count = strftime(&text, text.count, "%Y-%m-%dT%H:%M:%S", &fields)
    let millis = Int(now.tv_nsec / 1_000_000)
    let fraction = String(millis + 1000).dropFirst()
    return String(decoding: text.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self) + ".\(fraction)Z"
  }
}
