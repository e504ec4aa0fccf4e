// The log of the C library: InitEx's log, warn and panic callbacks receive the toolkit's log
// lines (swift-log, routed here) and this layer's own. The library never writes to stdout or
// stderr. As VDDK does, a line whose callback is NULL goes to the default logger instead: a
// log file in the temporary folder (`tmpDirectory`), never the terminal (see vixDiskLib.h,
// "Logging").

import CVixDiskLib
import Logging
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// InitEx's callbacks and level, replaced by each InitEx and cleared by Exit.
final class VixLog: @unchecked Sendable {
  static let shared = VixLog()

  /// VDDK's default `vixDiskLib.transport.LogLevel` (3, audit): errors and warnings only.
  static let defaultLevel: LogLevel = .warning

  struct Callbacks {
    var log: UnsafeMutableRawPointer?
    var warn: UnsafeMutableRawPointer?
    var panic: UnsafeMutableRawPointer?
    var level: LogLevel = VixLog.defaultLevel
    /// The default logger's file, for lines whose callback is NULL.
    var defaultFile: String = DefaultLogFile.path(folder: nil, file: nil)
  }

  private let state = Locked(Callbacks())
  private let bootstrapped = Locked(false)
  private let fallback = DefaultLogFile()

  func install(_ callbacks: Callbacks) {
    state.withLock { $0 = callbacks }
    fallback.use(callbacks.defaultFile)
    // swift-log allows one bootstrap per process; the handler reads `state` at each line, so
    // a later InitEx with other callbacks still takes effect. A host process that bootstrapped
    // swift-log itself keeps its own handler for the toolkit's lines.
    let first = bootstrapped.withLock { done -> Bool in
      defer { done = true }
      return !done
    }
    if first { LoggingSystem.bootstrap { label in VixLogHandler(label: label) } }
  }

  func reset() {
    state.withLock { $0 = Callbacks() }
    fallback.closeFile()
  }

  var level: LogLevel { state.withLock { $0.level } }

  /// Sends one line at `level` to its callback: warnings and errors to `warn` (else `log`),
  /// the rest to `log`; without that callback, to the default log file.
  func emit(_ level: LogLevel, _ message: String) {
    let callbacks = state.withLock { $0 }
    guard level != .off, level <= callbacks.level else { return }
    let line = "VixDiskLib: \(message)\n"
    let target = level <= .warning ? (callbacks.warn ?? callbacks.log) : callbacks.log
    if let target {
      line.withCString { VixDiskLibGlue_CallLog(target, $0) }
    } else {
      fallback.append(line)
    }
  }
}

/// VDDK's default logger: lines appended to `vixDiskLib.log` in the temporary folder (the
/// configuration's `tmpDirectory`, else `$TMPDIR`, else /tmp), each with its time and the
/// process id, or to the configuration's `log.file`. Opened at the first line only (a run
/// that logs nothing creates no file), never through a symbolic link, and only a regular file
/// owned by this user; a file that cannot be written loses its lines silently (there is
/// nowhere else the library may write).
final class DefaultLogFile: @unchecked Sendable {
  private struct State {
    var path = DefaultLogFile.path(folder: nil, file: nil)
    var fd: Int32 = -1
    var failed = false
  }
  private let state = Locked(State())

  /// The file for `file` (the configuration's `log.file`) or `folder/vixDiskLib.log`.
  static func path(folder: String?, file: String?) -> String {
    if let file, !file.isEmpty { return file }
    if let folder, !folder.isEmpty { return folder + "/vixDiskLib.log" }
    if let t = getenv("TMPDIR").map({ String(cString: $0) }), !t.isEmpty { return t + "/vixDiskLib.log" }
    return "/tmp/vixDiskLib.log"
  }

  /// Switches to `path` (closing the previous file when it changes).
  func use(_ path: String) {
    state.withLock { s in
      guard s.path != path else { return }
      if s.fd >= 0 { _ = close(s.fd) }
      s = State(path: path, fd: -1, failed: false)
    }
  }

  func closeFile() {
    state.withLock { s in
      if s.fd >= 0 { _ = close(s.fd) }
      s.fd = -1
      s.failed = false
    }
  }

  func append(_ line: String) {
    let text = "\(DefaultLogFile.timestamp()) [\(getpid())] \(line)"
    state.withLock { s in
      if s.fd < 0 && !s.failed { s.fd = Self.openOwned(s.path) }
      guard s.fd >= 0 else {
        s.failed = true
        return
      }
      // One write per line: O_APPEND keeps lines of several processes whole.
      let ok = text.withCString { p -> Bool in
        let n = strlen(p)
        return write(s.fd, p, n) == n
      }
      if !ok {
        _ = close(s.fd)
        s.fd = -1
        s.failed = true
      }
    }
  }

  /// Opens `path` for appending (created 0600), refusing symbolic links and files that are
  /// not regular or not this user's; -1 when it cannot.
  static func openOwned(_ path: String) -> Int32 {
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return -1 }
    var st = stat()
    guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_uid == geteuid() else {
      _ = close(fd)
      return -1
    }
    return fd
  }

  /// The UTC time as `2026-12-07T10:00:00Z`.
  static func timestamp() -> String {
    var seconds = time(nil)
    var fields = tm()
    gmtime_r(&seconds, &fields)
    var text = [CChar](repeating: 0, count: 32)
    let count = strftime(&text, text.count, "%Y-%m-%dT%H:%M:%SZ", &fields)
    return String(decoding: text.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}

/// swift-log's handler for every logger of the process: forwards to `VixLog`.
struct VixLogHandler: LogHandler {
  var logLevel: Logger.Level = .trace
  var metadata: Logger.Metadata = [:]
  let label: String

  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  func log(event: LogEvent) {
    let level: LogLevel
    switch event.level {
    case .trace, .debug: level = .debug
    case .info, .notice: level = .info
    case .warning: level = .warning
    case .error, .critical: level = .error
    }
    VixLog.shared.emit(level, "\(label): \(event.message)")
  }
}
