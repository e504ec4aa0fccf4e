// What each configuration key sets and how its value is checked: numbers in range, sizes with
// K and M suffixes, booleans, transport lists, folders and files that must exist. A bad value
// throws ConfigValueError with the reason; the parser adds the file, the line and the key.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Why a value was refused ("must be 1 … 256, found '0'"), without file, line or key.
struct ConfigValueError: Error {
  let reason: String
  init(_ reason: String) { self.reason = reason }
}

extension TransportConfig {
  typealias Setting = @Sendable (inout TransportConfig, String) throws -> Void

  /// Every key and what it sets.
  static let settings: [String: Setting] = [
    "tempDirectory": { $0.tempDirectory = try folder($1) },
    "transports": { $0.transportOrder = try transports($1) },
    "connectTimeout": { $0.transport.connectTimeout = try seconds($1, above: 0, max: 86400) },
    "readTimeout": { $0.transport.readTimeout = try seconds($1, above: 0, max: 86400) },
    "writeTimeout": { $0.transport.writeTimeout = try seconds($1, above: 0, max: 86400) },
    "retries": { $0.transport.retries = try integer($1, 0...100) },
    "retryBackoff": { $0.transport.backoffInitial = try seconds($1, from: 0, max: 3600) },
    "retryBackoffMax": { $0.transport.backoffMax = try seconds($1, from: 0, max: 3600) },
    "socketSendBuffer": { $0.transport.sendBufferBytes = try size($1, 4 << 10...256 << 20) },
    "socketReceiveBuffer": { $0.transport.receiveBufferBytes = try size($1, 4 << 10...256 << 20) },
    "requestsInFlight": { $0.transport.requestsInFlight = try integer($1, 1...256) },
    "requestSize": { $0.transport.requestBytes = try requestSize($1) },
    "tls.verify": { $0.transport.tls.verifyPeer = try boolean($1) },
    "tls.caFile": { $0.transport.tls.caFile = try readableFile($1) },
    "tls.certFile": { $0.transport.tls.certificateFile = try readableFile($1) },
    "tls.keyFile": { $0.transport.tls.privateKeyFile = try readableFile($1) },
    "tls.pskFile": { $0.transport.tls.pskFile = try readableFile($1) },
    "tls.pskIdentity": { $0.transport.tls.pskIdentity = try name($1, max: 128) },
    "tls.serverName": { $0.transport.tls.serverName = try name($1, max: 253) },
    "log.level": { $0.logLevel = try logLevel($1) },
    "log.file": { $0.logFile = $1 },
  ]

  // MARK: Numbers

  /// A whole number in `range`.
  static func integer(_ value: String, _ range: ClosedRange<Int>) throws -> Int {
    guard let n = Int(value), range.contains(n) else {
      throw ConfigValueError("must be a whole number from \(range.lowerBound) to \(range.upperBound), found '\(value)'")
    }
    return n
  }

  /// Seconds (a decimal number) greater than `above`, or at least `from`, and at most `max`.
  static func seconds(_ value: String, above: Double? = nil, from: Double? = nil, max: Double) throws -> Double {
    let low = above.map { "greater than \(Int($0))" } ?? "at least \(Int(from ?? 0))"
    guard let s = Double(value), s.isFinite, s <= max, above.map({ s > $0 }) ?? true, from.map({ s >= $0 }) ?? true
    else {
      throw ConfigValueError("must be a number of seconds \(low) and at most \(Int(max)), found '\(value)'")
    }
    return s
  }

  /// A byte count with an optional K or M suffix (binary: 1K = 1024), in `range`.
  static func size(_ value: String, _ range: ClosedRange<Int>) throws -> Int {
    let text = "from \(sizeText(range.lowerBound)) to \(sizeText(range.upperBound))"
    guard let bytes = bytes(value), range.contains(bytes) else {
      throw ConfigValueError("must be a size in bytes (K and M suffixes) \(text), found '\(value)'")
    }
    return bytes
  }

  /// A request size: a multiple of 4 KiB from 4K to 32M (every power of two in that range is one).
  static func requestSize(_ value: String) throws -> Int {
    let range = (4 << 10)...TransportOptions.maxRequestBytes
    guard let bytes = bytes(value), range.contains(bytes), bytes % (4 << 10) == 0 else {
      throw ConfigValueError("must be a multiple of 4K from 4K to 32M (K and M suffixes), found '\(value)'")
    }
    return bytes
  }

  /// `123`, `64K`, `2M` (either case) as bytes; nil when malformed or too large.
  private static func bytes(_ value: String) -> Int? {
    var digits = Substring(value)
    var unit = 1
    switch digits.last {
    case "k", "K": unit = 1 << 10
    case "m", "M": unit = 1 << 20
    default: break
    }
    if unit != 1 { digits = digits.dropLast() }
    guard !digits.isEmpty, digits.count <= 12, digits.allSatisfy(\.isASCII), let n = Int(digits), n >= 0 else {
      return nil
    }
    return n * unit
  }

  private static func sizeText(_ bytes: Int) -> String {
    bytes % (1 << 20) == 0 ? "\(bytes >> 20)M" : bytes % (1 << 10) == 0 ? "\(bytes >> 10)K" : "\(bytes)"
  }

  // MARK: Words

  static func boolean(_ value: String) throws -> Bool {
    switch value.lowercased() {
    case "yes", "true", "1": return true
    case "no", "false", "0": return false
    default: throw ConfigValueError("must be yes, no, true, false, 1 or 0, found '\(value)'")
    }
  }

  static func logLevel(_ value: String) throws -> LogLevel {
    guard let level = LogLevel.allCases.first(where: { $0.name == value.lowercased() }) else {
      let names = LogLevel.allCases.map(\.name).joined(separator: ", ")
      throw ConfigValueError("must be one of \(names), found '\(value)'")
    }
    return level
  }

  /// A colon-separated list of distinct transport names.
  static func transports(_ value: String) throws -> [Transport] {
    let names = value.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
    let known = Transport.allCases.map(\.rawValue).joined(separator: ", ")
    let transports = try names.map { name in
      guard let t = Transport(rawValue: name) else {
        throw ConfigValueError("must list transports from \(known), separated by ':'; '\(name)' is not one")
      }
      return t
    }
    guard Set(transports).count == transports.count else {
      throw ConfigValueError("must not list a transport twice: '\(value)'")
    }
    return transports
  }

  /// A name without spaces or control characters, at most `max` bytes.
  static func name(_ value: String, max: Int) throws -> String {
    guard value.utf8.count <= max, value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7f }) else {
      throw ConfigValueError("must be a name of at most \(max) bytes without spaces, found '\(value)'")
    }
    return value
  }

  // MARK: Files

  /// An existing folder the process can write to.
  static func folder(_ path: String) throws -> String {
    var info = stat()
    guard stat(path, &info) == 0 else {
      throw ConfigValueError("must be an existing writable folder: \(path): \(String(cString: strerror(errno)))")
    }
    guard info.st_mode & S_IFMT == S_IFDIR else {
      throw ConfigValueError("must be an existing writable folder: \(path) is not a folder")
    }
    guard access(path, W_OK | X_OK) == 0 else {
      throw ConfigValueError("must be an existing writable folder: \(path): \(String(cString: strerror(errno)))")
    }
    return path
  }

  /// A file the process can read.
  static func readableFile(_ path: String) throws -> String {
    var info = stat()
    guard stat(path, &info) == 0, access(path, R_OK) == 0 else {
      throw ConfigValueError("must be a readable file: \(path): \(String(cString: strerror(errno)))")
    }
    guard info.st_mode & S_IFMT == S_IFREG else {
      throw ConfigValueError("must be a readable file: \(path) is not a file")
    }
    return path
  }

  /// The text of the configuration file (at most maxFileBytes).
  static func readConfigFile(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
      let reason = String(cString: strerror(errno))
      throw VMDKError(.invalidConfig, "cannot read the configuration file: \(reason)", file: path)
    }
    defer { _ = close(fd) }
    var bytes = [UInt8](repeating: 0, count: maxFileBytes + 1)
    var count = 0
    while count < bytes.count {
      let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
      if n < 0 && errno == EINTR { continue }
      guard n >= 0 else {
        let reason = String(cString: strerror(errno))
        throw VMDKError(.invalidConfig, "cannot read the configuration file: \(reason)", file: path)
      }
      if n == 0 { break }
      count += n
    }
    guard count <= maxFileBytes else {
      throw VMDKError(.invalidConfig, "the configuration file is larger than \(maxFileBytes >> 20) MiB", file: path)
    }
    return String(decoding: bytes.prefix(count), as: UTF8.self)
  }
}
