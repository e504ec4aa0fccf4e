// The toolkit's log goes through swift-log: the library logs retries, reconnects and
// downgrades to a `Logger` it makes where it logs, so an application routes the lines through
// its own `LoggingSystem.bootstrap`. The tools install `FileLogHandler`, which appends one
// timestamped line per message to a file (or stderr) and never fails an operation.

import Logging

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// The labels of the toolkit's loggers (`vmdk-toolkit.nbd`, …): an application's handler can
/// route or silence them by label.
public enum LogLabel {
  public static let transport = "vmdk-toolkit.transport"
  public static let nbd = "vmdk-toolkit.nbd"
  public static let http = "vmdk-toolkit.http"
  public static let block = "vmdk-toolkit.block"
}

/// The configuration file's `log.level`: swift-log's levels that the toolkit uses, and `off`.
public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
  case off = 0
  case error, warning, info, debug

  public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
  /// The word the configuration file uses.
  public var name: String { String(describing: self) }

  /// The swift-log level, nil for `off`.
  public var loggerLevel: Logger.Level? {
    switch self {
    case .off: nil
    case .error: .error
    case .warning: .warning
    case .info: .info
    case .debug: .debug
    }
  }
}

/// A swift-log handler that appends `TIMESTAMP LABEL LEVEL: message` lines to a file (created
/// when missing) or, without a file, to stderr. Lines from several threads never interleave.
/// A file that cannot be written is reopened once; when that fails too, its lines are dropped
/// and the failure is reported once on stderr. Logging never throws and never fails the
/// operation that logs.
public struct FileLogHandler: LogHandler {
  public var logLevel: Logger.Level
  public var metadata: Logger.Metadata = [:]
  private let label: String
  private let sink: LogFile

  /// A handler writing to `sink` at `level`.
  public init(label: String, level: Logger.Level, sink: LogFile) {
    self.label = label
    self.logLevel = level
    self.sink = sink
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    var text = "\(LogFile.timestamp()) \(label) \(event.level): \(event.message)"
    let merged = metadata.merging(event.metadata ?? [:]) { $1 }
    if !merged.isEmpty {
      text += " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }
    sink.append(text + "\n")
  }
}

/// Where `FileLogHandler` lines go: a file opened for appending, or stderr. One per process
/// (or per test); every handler that shares it shares its descriptor and its failure state.
public final class LogFile: Sendable {
  private struct State {
    /// The open file (-1: none open).
    var fd: Int32 = -1
    /// The file was reopened after a failed write; a second failure gives up.
    var reopened = false
    /// The file cannot be written: its lines are dropped.
    var failed = false
    /// How many times the failure was reported (0 or 1).
    var failureReports = 0
  }
  /// The file; nil writes to stderr.
  public let path: String?
  private let state = Locked(State())
  /// Where the file's failure is reported (stderr; a pipe in tests).
  private let reportFD: Int32

  /// A sink appending to `path` (nil: stderr). The file is opened (created) now; a file that
  /// cannot be opened is reported once.
  public init(path: String?, reportFD: Int32 = 2) {
    self.path = path
    self.reportFD = reportFD
    guard path != nil else { return }
    state.withLock { openFile(&$0) }
  }

  deinit {
    state.withLock { if $0.fd >= 0 { _ = close($0.fd) } }
  }

  /// How many times a failure of the file was reported (0 or 1).
  public var failureReports: Int { state.withLock { $0.failureReports } }

  /// Writes one line. Never fails.
  public func append(_ line: String) {
    let bytes = Array(line.utf8)
    state.withLock { s in
      guard path != nil else {
        _ = Self.writeAll(2, bytes)
        return
      }
      guard !s.failed else { return }
      if s.fd >= 0, Self.writeAll(s.fd, bytes) { return }
      // The first failed write (a removed or full disk, a closed descriptor): reopen and retry
      // once; then give up on the file.
      let err = errno
      guard !s.reopened else { return fail(&s, err) }
      s.reopened = true
      if s.fd >= 0 { _ = close(s.fd) }
      s.fd = -1
      openFile(&s)
      if s.fd >= 0, !Self.writeAll(s.fd, bytes) { fail(&s, errno) }
    }
  }

  /// Opens (creates, appends to) the file; reports a failure.
  private func openFile(_ s: inout State) {
    guard let path else { return }
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
    let text = "vmdk-toolkit: cannot write the log file \(path ?? ""): \(reason); its log lines are dropped\n"
    _ = Self.writeAll(reportFD, Array(text.utf8))
  }

  /// Writes all of `bytes` to `fd` (EINTR retried); false on an error or a write of nothing.
  private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { buffer in
      guard let base = buffer.baseAddress else { return true }
      var done = 0
      while done < buffer.count {
        let n = write(fd, base + done, buffer.count - done)
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return false }
        done += n
      }
      return true
    }
  }

  /// The current UTC time as `2026-11-26T03:30:00.123Z`.
  static func timestamp() -> String {
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

extension LoggingSystem {
  /// Routes every logger of the process — the toolkit's included — to `FileLogHandler` on
  /// `file` (nil: stderr) at `level`. For the tools; an application bootstraps its own
  /// handler instead. swift-log allows one bootstrap per process: later calls are ignored.
  public static func bootstrapToolkitLog(level: LogLevel, file: String?) {
    let installed = bootstrapOnce.withLock { done -> Bool in
      defer { done = true }
      return done
    }
    guard !installed else { return }
    guard let loggerLevel = level.loggerLevel else {
      bootstrap { _ in SwiftLogNoOpLogHandler() }
      return
    }
    let sink = LogFile(path: file)
    bootstrap { label in FileLogHandler(label: label, level: loggerLevel, sink: sink) }
  }
}

private let bootstrapOnce = Locked(false)
