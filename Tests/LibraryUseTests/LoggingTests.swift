// An application that imports the library routes the toolkit's log lines through its own
// swift-log `LoggingSystem`: here a handler that records them, bootstrapped once for this test
// process (nothing else in this target logs or bootstraps).

import Logging
import Testing
import VMDKBlock

/// What the recording handler saw: (label, level, message).
let recorded = Locked<[(String, Logger.Level, String)]>([])

struct RecordingHandler: LogHandler {
  let label: String
  var logLevel: Logger.Level = .trace
  var metadata: Logger.Metadata = [:]
  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }
  func log(event: LogEvent) {
    recorded.withLock { $0.append((label, event.level, "\(event.message)")) }
  }
}

let bootstrapped: Void = LoggingSystem.bootstrap { RecordingHandler(label: $0) }

@Suite struct LoggingTests {
  @Test func aRetryIsLoggedThroughTheApplicationsHandler() throws {
    _ = bootstrapped
    var transport = TransportOptions()
    transport.retries = 2
    transport.backoffInitial = 0
    let fault = VMDKError(.connectionLost, "reset by peer", isRetryable: true)
    #expect(transport.pauseBeforeRetry(1, after: fault, name: "nbd://host/disk", what: "read"))
    let lines = recorded.withLock { $0 }.filter { $0.0 == LogLabel.transport }
    #expect(lines.count == 1)
    #expect(lines.first?.1 == .warning)
    #expect(lines.first?.2.contains("nbd://host/disk: read failed: reset by peer") == true, "\(lines)")
    // Beyond the retries: no retry, nothing logged.
    #expect(!transport.pauseBeforeRetry(3, after: fault, name: "nbd://host/disk", what: "read"))
    #expect(recorded.withLock { $0 }.filter { $0.0 == LogLabel.transport }.count == 1)
  }
}
