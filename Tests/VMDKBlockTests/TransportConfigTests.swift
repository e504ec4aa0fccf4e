// TransportConfig: the defaults, every key parsed, comments, quotes and CRLF lines, every kind
// of mistake an invalidConfig error naming FILE:LINE, loading by path and from the
// environment; and the transport log it configures: timestamped lines, a file that cannot be
// written reported once (on a pipe here) without ever failing, lines from many threads intact.

import Dispatch
import Foundation
import Logging
import Testing

@testable import VMDKTransport

/// Parses `text` as the file "test.conf", which must fail with invalidConfig; the message must
/// start with `test.conf:LINE:` and contain `fragment`.
private func expectConfigError(
  _ text: String, line: Int, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation
) {
  let error = #expect(throws: VMDKError.self, sourceLocation: sourceLocation) {
    _ = try TransportConfig(parsing: text, file: "test.conf")
  }
  guard let error else { return }
  #expect(error.code == .invalidConfig, "\(error)", sourceLocation: sourceLocation)
  #expect(error.message.hasPrefix("test.conf:\(line): "), "\(error)", sourceLocation: sourceLocation)
  #expect(error.message.contains(fragment), "\(error)", sourceLocation: sourceLocation)
}

/// The lines of what a pipe received once its write end is closed.
private func drain(_ pipe: Pipe) -> [String] {
  try? pipe.fileHandleForWriting.close()
  let data = pipe.fileHandleForReading.readDataToEndOfFile()
  return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
}

@Suite struct TransportConfigTests {
  @Test func defaults() throws {
    let config = try TransportConfig(parsing: "# nothing set\n\n", file: "empty.conf")
    #expect(config == TransportConfig())
    #expect(config.transport == TransportOptions())
    #expect(config.transportOrder == [.file, .nbd, .nbds, .http, .https])
    let tmpdir = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 }
    #expect(config.tempDirectory == tmpdir ?? "/tmp")
    #expect(config.logLevel == .off)
    #expect(config.logFile == nil)
    #expect(config.transport.tls.verifyPeer)
    #expect(config.transport.sendBufferBytes == nil && config.transport.receiveBufferBytes == nil)
  }

  @Test func everyKeyIsParsed() throws {
    let folder = try TempFolder()
    let ca = try folder.write("ca.pem", Array("ca".utf8))
    let cert = try folder.write("client.pem", Array("cert".utf8))
    let key = try folder.write("client.key", Array("key".utf8))
    let psk = try folder.write("keys.psk", Array("vmdk:0011\n".utf8))
    let text = """
      # every key, with comments, spacing, quotes and a CRLF line
      tempDirectory = \(folder.path)
      transports=nbds:file
        connectTimeout = 2.5
      readTimeout = 90\r
      writeTimeout = 120
      retries = 0
      retryBackoff = 0.5
      retryBackoffMax = 16

      socketSendBuffer = 256K
      socketReceiveBuffer = 4M
      requestsInFlight = 64
      requestSize = 8M
      tls.verify = no
      tls.caFile = "\(ca)"
      tls.certFile = \(cert)
      tls.keyFile = \(key)
      tls.pskFile = \(psk)
      tls.pskIdentity = vmdk
      tls.serverName = disks.example.com
      log.level = debug
      log.file = \(folder.path)/log # not a comment
      """
    let config = try TransportConfig(parsing: text, file: "all.conf")
    #expect(config.tempDirectory == folder.path)
    #expect(config.transportOrder == [.nbds, .file])
    let t = config.transport
    #expect(t.connectTimeout == 2.5 && t.readTimeout == 90 && t.writeTimeout == 120)
    #expect(t.retries == 0 && t.backoffInitial == 0.5 && t.backoffMax == 16)
    #expect(t.sendBufferBytes == 256 << 10 && t.receiveBufferBytes == 4 << 20)
    #expect(t.requestsInFlight == 64 && t.requestBytes == 8 << 20)
    #expect(!t.tls.verifyPeer)
    #expect(t.tls.caFile == ca && t.tls.certificateFile == cert && t.tls.privateKeyFile == key)
    #expect(t.tls.pskFile == psk && t.tls.pskIdentity == "vmdk" && t.tls.serverName == "disks.example.com")
    #expect(config.logLevel == .debug)
    #expect(config.logFile == "\(folder.path)/log # not a comment")
  }

  @Test(arguments: [("yes", true), ("TRUE", true), ("1", true), ("no", false), ("False", false), ("0", false)])
  func booleans(value: String, expected: Bool) throws {
    #expect(try TransportConfig(parsing: "tls.verify = \(value)", file: "b.conf").transport.tls.verifyPeer == expected)
  }

  @Test(arguments: [("4096", 4096), ("4K", 4096), ("12k", 12 << 10), ("32M", 32 << 20), ("1048576", 1 << 20)])
  func requestSizes(value: String, expected: Int) throws {
    #expect(try TransportConfig(parsing: "requestSize = \(value)", file: "s.conf").transport.requestBytes == expected)
  }

  @Test func linesThatAreNotSettings() {
    expectConfigError("# ok\nretries 5\n", line: 2, "expected 'key = value'")
    expectConfigError("\n\nreadTimout = 5\n", line: 3, "unknown key 'readTimout'")
    expectConfigError("retries = 1\n\nretries = 2\n", line: 3, "duplicate key 'retries' (first set on line 1)")
    expectConfigError("log.file =\n", line: 1, "'log.file' needs a value")
    expectConfigError("log.file = \"\"\n", line: 1, "'log.file' needs a value")
    expectConfigError("= 5\n", line: 1, "unknown key ''")
    expectConfigError("retries = 1\r\nTLS.verify = yes\r\n", line: 2, "unknown key 'TLS.verify'")
  }

  @Test(arguments: [
    ("tempDirectory", "/nonexistent/folder", "must be an existing writable folder"),
    ("tempDirectory", "/etc/hostname", "is not a folder"),
    ("transports", "file:ftp", "'ftp' is not one"),
    ("transports", "nbd::file", "'' is not one"),
    ("transports", "nbd:nbd", "must not list a transport twice"),
    ("connectTimeout", "0", "must be a number of seconds greater than 0"),
    ("readTimeout", "-1", "must be a number of seconds"),
    ("writeTimeout", "1e300", "at most 86400"),
    ("readTimeout", "nan", "must be a number of seconds"),
    ("connectTimeout", "30s", "found '30s'"),
    ("retries", "101", "from 0 to 100"),
    ("retries", "-1", "from 0 to 100"),
    ("retries", "99999999999999999999999", "from 0 to 100"),
    ("retryBackoff", "-0.5", "at least 0"),
    ("retryBackoffMax", "7200", "at most 3600"),
    ("socketSendBuffer", "1K", "from 4K to 256M"),
    ("socketReceiveBuffer", "1G", "found '1G'"),
    ("socketReceiveBuffer", "999999999999999M", "from 4K to 256M"),
    ("requestsInFlight", "0", "from 1 to 256"),
    ("requestsInFlight", "257", "from 1 to 256"),
    ("requestSize", "3000", "a multiple of 4K from 4K to 32M"),
    ("requestSize", "64M", "a multiple of 4K"),
    ("requestSize", "6K5", "found '6K5'"),
    ("tls.verify", "maybe", "must be yes, no, true, false, 1 or 0"),
    ("tls.caFile", "/nonexistent/ca.pem", "must be a readable file: /nonexistent/ca.pem"),
    ("tls.certFile", "/etc", "is not a file"),
    ("tls.keyFile", "/nonexistent/key.pem", "must be a readable file"),
    ("tls.pskFile", "/nonexistent/keys.psk", "must be a readable file"),
    ("tls.pskIdentity", "two words", "without spaces"),
    ("tls.serverName", String(repeating: "a", count: 254), "at most 253 bytes"),
    ("log.level", "verbose", "must be one of off, error, warning, info, debug"),
  ])
  func badValuesNameTheLineAndKey(key: String, value: String, fragment: String) {
    let text = "# a comment\n\n\(key) = \(value)\n"
    expectConfigError(text, line: 3, "'\(key)' must ")
    expectConfigError(text, line: 3, fragment)
  }

  @Test func theBackoffCapMustNotBeBelowTheFirstWait() {
    expectConfigError(
      "retryBackoff = 4\n\nretryBackoffMax = 2\n", line: 3, "'retryBackoffMax' (2.0 s) must not be less")
    expectConfigError("retryBackoff = 10\n", line: 1, "'retryBackoffMax' (8.0 s) must not be less")
  }

  @Test func loadsAFileByPathAndFromTheEnvironment() throws {
    let folder = try TempFolder()
    let path = try folder.write("toolkit.conf", Array("retries = 7\nlog.level = warning\n".utf8))
    #expect(try TransportConfig.load(path: path).transport.retries == 7)

    let missing = folder.path("missing.conf")
    let error = #expect(throws: VMDKError.self) { _ = try TransportConfig.load(path: missing) }
    #expect(error?.code == .invalidConfig && error?.file == missing, "\(String(describing: error))")
    let bad = try folder.write("bad.conf", Array("retries = 7\nretries = 8\n".utf8))
    let duplicate = #expect(throws: VMDKError.self) { _ = try TransportConfig.load(path: bad) }
    #expect(duplicate?.message.hasPrefix("\(bad):2: ") == true, "\(String(describing: duplicate))")

    // The only test that touches VMDK_TOOLKIT_CONFIG.
    setenv(TransportConfig.environmentVariable, path, 1)
    defer { unsetenv(TransportConfig.environmentVariable) }
    #expect(try TransportConfig.fromEnvironment().logLevel == .warning)
    setenv(TransportConfig.environmentVariable, "", 1)
    #expect(try TransportConfig.fromEnvironment() == TransportConfig())
    unsetenv(TransportConfig.environmentVariable)
    #expect(try TransportConfig.fromEnvironment() == TransportConfig())
  }

  @Test func theFileHandlerWritesTimestampedLinesAtItsLevel() throws {
    let folder = try TempFolder()
    let sink = LogFile(path: folder.path("transport.log"))
    let log = Logger(label: LogLabel.nbd) { FileLogHandler(label: $0, level: .info, sink: sink) }
    log.info("reconnected to nbds://host/disk")
    log.debug("not at this level")
    let text = try String(contentsOfFile: folder.path("transport.log"), encoding: .utf8)
    let lines = text.split(separator: "\n")
    #expect(lines.count == 1)
    // 2026-11-26T03:30:00.123Z vmdk-toolkit.nbd info: reconnected to nbds://host/disk
    let pattern = #/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z vmdk-toolkit\.nbd info: reconnected to nbds://host/disk$/#
    #expect(lines.first.map { $0.wholeMatch(of: pattern) != nil } == true, "\(text)")
  }

  @Test func theConfigurationsLevelsMapOntoSwiftLogs() throws {
    #expect(LogLevel.allCases.map(\.name) == ["off", "error", "warning", "info", "debug"])
    #expect(LogLevel.allCases.map(\.loggerLevel) == [nil, .error, .warning, .info, .debug])
    var config = try TransportConfig(parsing: "log.level = WARNING\nlog.file = /tmp/x.log\n", file: "c")
    #expect(config.logLevel == .warning && config.logFile == "/tmp/x.log")
    config = try TransportConfig(parsing: "log.level = off\n", file: "c")
    #expect(config.logLevel == .off)
    #expect(throws: VMDKError.self) { try TransportConfig(parsing: "log.level = trace\n", file: "c") }
  }

  @Test func aLogFileThatCannotBeOpenedIsReportedOnceAndNeverFails() throws {
    let folder = try TempFolder()
    let report = Pipe()
    let path = folder.path("no/such/folder/transport.log")
    let sink = LogFile(path: path, reportFD: report.fileHandleForWriting.fileDescriptor)
    let log = Logger(label: LogLabel.transport) { FileLogHandler(label: $0, level: .debug, sink: sink) }
    for i in 0..<5 { log.error("fault \(i)") }
    #expect(sink.failureReports == 1)
    let reported = drain(report)
    #expect(reported.count == 1)
    #expect(reported.first?.contains("cannot write the log file \(path): No such file or directory") == true)
    #expect(!FileManager.default.fileExists(atPath: path))
  }

  @Test func aLogFileWhoseWritesFailIsReopenedOnceThenDropped() throws {
    // /dev/full opens, and every write fails with ENOSPC.
    let report = Pipe()
    let sink = LogFile(path: "/dev/full", reportFD: report.fileHandleForWriting.fileDescriptor)
    let log = Logger(label: LogLabel.transport) { FileLogHandler(label: $0, level: .warning, sink: sink) }
    for i in 0..<5 { log.warning("retry \(i)") }
    #expect(sink.failureReports == 1)
    let reported = drain(report)
    #expect(
      reported == [
        "vmdk-toolkit: cannot write the log file /dev/full: No space left on device; its log lines are dropped"
      ])
    // A new sink starts afresh (and reports again).
    let again = Pipe()
    for _ in 0..<2 {
      let next = LogFile(path: "/dev/full", reportFD: again.fileHandleForWriting.fileDescriptor)
      next.append("x\n")
    }
    #expect(drain(again).count == 2)
  }

  @Test func linesFromManyThreadsStayWhole() throws {
    let folder = try TempFolder()
    let sink = LogFile(path: folder.path("threads.log"))
    let log = Logger(label: LogLabel.http) { FileLogHandler(label: $0, level: .info, sink: sink) }
    DispatchQueue.concurrentPerform(iterations: 8) { thread in
      for i in 0..<200 { log.info("thread \(thread) line \(i) \(String(repeating: "x", count: 200))") }
    }
    let lines = try String(contentsOfFile: folder.path("threads.log"), encoding: .utf8).split(separator: "\n")
    #expect(lines.count == 1600)
    #expect(
      lines.allSatisfy {
        $0.hasSuffix(String(repeating: "x", count: 200)) && $0.contains(" vmdk-toolkit.http info: thread ")
      })
  }
}
