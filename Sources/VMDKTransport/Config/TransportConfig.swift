// The configuration file (the role of VDDK's config file): plain text, `key = value` lines,
// `#` comment lines, blank lines. It sets the temporary folder, the transport order, the
// network behaviour (TransportOptions, TLS included) and the transport log. Every value is
// checked; a mistake is an invalidConfig error naming the file and the line.

import Logging

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// The toolkit's configuration: what the configuration file sets, with the defaults below for
/// every key it leaves out. The README's "Configuration file" documents the same table.
///
/// | Key                   | Value                                               | Default                     |
/// |-----------------------|-----------------------------------------------------|-----------------------------|
/// | `tempDirectory`       | an existing writable folder                         | `$TMPDIR`, else `/tmp`      |
/// | `transports`          | colon-separated, from file, nbd, nbds, http, https  | `file:nbd:nbds:http:https`  |
/// | `connectTimeout`      | seconds, > 0 and ≤ 86400                            | 30                          |
/// | `readTimeout`         | seconds, > 0 and ≤ 86400                            | 60                          |
/// | `writeTimeout`        | seconds, > 0 and ≤ 86400                            | 60                          |
/// | `retries`             | 0 … 100                                             | 5                           |
/// | `retryBackoff`        | seconds before the first retry, 0 … 3600            | 0.25                        |
/// | `retryBackoffMax`     | seconds, ≥ `retryBackoff`, ≤ 3600 (longest wait)    | 8                           |
/// | `socketSendBuffer`    | bytes, K or M suffix, 4K … 256M                     | the system's                |
/// | `socketReceiveBuffer` | bytes, K or M suffix, 4K … 256M                     | the system's                |
/// | `requestsInFlight`    | 1 … 256                                             | 16                          |
/// | `requestSize`         | bytes, K or M suffix, a multiple of 4K, 4K … 32M    | 512K                        |
/// | `tls.verify`          | yes, no, true, false, 1, 0                          | yes                         |
/// | `tls.caFile`          | a readable PEM file of CA certificates              | the system's store          |
/// | `tls.certFile`        | a readable PEM client certificate                   | none                        |
/// | `tls.keyFile`         | a readable PEM private key                          | in `tls.certFile`           |
/// | `tls.pskFile`         | a readable `identity:hexkey` file (qemu, nbdkit)    | none                        |
/// | `tls.pskIdentity`     | an identity of `tls.pskFile`                        | its first line's            |
/// | `tls.serverName`      | the name the server certificate must carry          | the host of the URI         |
/// | `log.level`           | off, error, warning, info, debug                    | off                         |
/// | `log.file`            | a file the log lines are appended to                | stderr                      |
///
/// A key may appear once. Values may be written in double quotes; a `#` inside a value is part
/// of it (only a line that starts with `#` is a comment).
public struct TransportConfig: Sendable, Equatable {
  /// Timeouts, retries, buffers, requests and TLS.
  public var transport = TransportOptions()
  /// Where temporary files go.
  public var tempDirectory: String = TransportConfig.defaultTempDirectory()
  /// The transports to try, in order.
  public var transportOrder: [Transport] = TransportConfig.defaultTransportOrder
  /// The transport log's level.
  public var logLevel: LogLevel = .off
  /// The transport log's file (nil: stderr).
  public var logFile: String? = nil

  /// The default transport order.
  public static let defaultTransportOrder = Transport.allCases
  /// The environment variable naming the configuration file.
  public static let environmentVariable = "VMDK_TOOLKIT_CONFIG"
  /// The largest configuration file read (it is a few dozen lines).
  static let maxFileBytes = 1 << 20

  /// The defaults.
  public init() {}

  /// Parses the text of a configuration file; `file` names it in errors.
  public init(parsing text: String, file: String) throws {
    self.init()
    var firstLine: [String: Int] = [:]
    let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
    for (index, raw) in lines.enumerated() {
      let at = "\(file):\(index + 1)"
      let line = raw.trimmingWhitespace()
      if line.isEmpty || line.hasPrefix("#") { continue }
      guard let equals = line.firstIndex(of: "=") else {
        throw VMDKError(.invalidConfig, "\(at): expected 'key = value', found '\(line)'")
      }
      let key = String(line[..<equals].trimmingWhitespace())
      let value = Self.unquoted(line[line.index(after: equals)...].trimmingWhitespace())
      guard let setting = Self.settings[key] else {
        throw VMDKError(.invalidConfig, "\(at): unknown key '\(key)'")
      }
      if let first = firstLine[key] {
        throw VMDKError(.invalidConfig, "\(at): duplicate key '\(key)' (first set on line \(first))")
      }
      firstLine[key] = index + 1
      do {
        guard !value.isEmpty else { throw ConfigValueError("needs a value") }
        try setting(&self, value)
      } catch let error as ConfigValueError {
        throw VMDKError(.invalidConfig, "\(at): '\(key)' \(error.reason)")
      }
    }
    if transport.backoffMax < transport.backoffInitial {
      let line = firstLine["retryBackoffMax"] ?? firstLine["retryBackoff"] ?? 0
      throw VMDKError(
        .invalidConfig,
        "\(file):\(line): 'retryBackoffMax' (\(transport.backoffMax) s) must not be less than 'retryBackoff' (\(transport.backoffInitial) s)"
      )
    }
  }

  /// Whether `key` is one of this file's keys (the table above).
  public static func isKey(_ key: String) -> Bool { settings[key] != nil }

  /// Reads and parses the configuration file at `path`.
  public static func load(path: String) throws -> TransportConfig {
    try TransportConfig(parsing: try readConfigFile(path), file: path)
  }

  /// The configuration named by the environment variable VMDK_TOOLKIT_CONFIG, or the defaults
  /// when it is unset or empty.
  public static func fromEnvironment() throws -> TransportConfig {
    guard let path = getenv(environmentVariable).map({ String(cString: $0) }), !path.isEmpty else {
      return TransportConfig()
    }
    return try load(path: path)
  }

  /// Installs the log the configuration names (`log.level`, `log.file`) as the process's
  /// swift-log handler (`LoggingSystem.bootstrapToolkitLog`): for the tools, which own their
  /// process. A library caller bootstraps its own `LoggingSystem` instead. Never fails: a log
  /// file that cannot be written is reported once on stderr and its lines are dropped.
  public func apply() {
    LoggingSystem.bootstrapToolkitLog(level: logLevel, file: logFile)
  }

  /// `$TMPDIR` when set and not empty, else `/tmp`.
  static func defaultTempDirectory() -> String {
    guard let value = getenv("TMPDIR").map({ String(cString: $0) }), !value.isEmpty else { return "/tmp" }
    return value
  }

  /// A value without one pair of surrounding double quotes.
  private static func unquoted(_ value: Substring) -> String {
    guard value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") else { return String(value) }
    return String(value.dropFirst().dropLast())
  }
}

extension Substring {
  /// Without leading and trailing spaces, tabs and carriage returns.
  fileprivate func trimmingWhitespace() -> Substring {
    let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
    guard let first = firstIndex(where: { !blank($0) }), let last = lastIndex(where: { !blank($0) }) else {
      return self[endIndex...]
    }
    return self[first...last]
  }
}
