// The log of the C library: InitEx's log, warn and panic callbacks receive the toolkit's log
// lines (swift-log, routed here) and this layer's own. Without callbacks, lines at or above
// the configured level go to stderr, as VDDK's default logger does; with callbacks nothing
// is written to stdout or stderr.

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

  struct Callbacks {
    var log: UnsafeMutableRawPointer?
    var warn: UnsafeMutableRawPointer?
    var panic: UnsafeMutableRawPointer?
    var level: LogLevel = .info
    var anyGiven: Bool { log != nil || warn != nil || panic != nil }
  }

  private let state = Locked(Callbacks())
  private let bootstrapped = Locked(false)

  func install(_ callbacks: Callbacks) {
    state.withLock { $0 = callbacks }
    // swift-log allows one bootstrap per process; the handler reads `state` at each line, so
    // a later InitEx with other callbacks still takes effect. A host process that bootstrapped
    // swift-log itself keeps its own handler for the toolkit's lines.
    let first = bootstrapped.withLock { done -> Bool in
      defer { done = true }
      return !done
    }
    if first { LoggingSystem.bootstrap { label in VixLogHandler(label: label) } }
  }

  func reset() { state.withLock { $0 = Callbacks() } }

  var level: LogLevel { state.withLock { $0.level } }

  /// Sends one line at `level` to its callback (or stderr without callbacks).
  func emit(_ level: LogLevel, _ message: String) {
    let callbacks = state.withLock { $0 }
    guard level != .off, level <= callbacks.level else { return }
    let line = "VixDiskLib: \(message)\n"
    if callbacks.anyGiven {
      let target: UnsafeMutableRawPointer?
      switch level {
      case .error: target = callbacks.warn ?? callbacks.log
      case .warning: target = callbacks.warn ?? callbacks.log
      default: target = callbacks.log
      }
      guard let target else { return }
      line.withCString { VixDiskLibGlue_CallLog(target, $0) }
    } else {
      _ = line.withCString { write(2, $0, strlen($0)) }
    }
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
