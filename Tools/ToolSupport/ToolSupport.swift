// What every tool shares: how to open an image, how errors end the program, JSON output, sizes.

import ArgumentParser
import VMDKBlock
import VMDKFormat
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#endif

extension OpenOptions.Format: ExpressibleByArgument {}
extension DiskType: ExpressibleByArgument {}
extension AdapterType: ExpressibleByArgument {}

/// Options for opening an image, shared by every subcommand.
public struct OpenFlags: ParsableArguments {
  public init() {}

  @Option(help: "Image format: auto, vmdk or raw.")
  public var format: OpenOptions.Format = .auto

  @Flag(help: "Allow extent and parent files outside the descriptor's folder (linked clones).")
  public var allowExternalPaths = false

  @Flag(help: "Open a chain even when a child's parentCID differs from its parent's CID.")
  public var ignoreCIDMismatch = false

  @Flag(help: "Open only the named link, not its parents.")
  public var singleLink = false

  @Option(help: "Most links in a snapshot chain.")
  public var maxChainDepth: Int = 255

  @Option(
    help: """
      Configuration file: timeouts, retries, TLS, transports, log (default: the file named by \
      VMDK_TOOLKIT_CONFIG, else the defaults; see the README).
      """)
  public var config: String?

  /// The options with the configuration file's transport settings (read and applied to the
  /// log once per process).
  public func resolvedOptions() throws -> OpenOptions {
    var o = options
    let c = try ToolConfig.load(config)
    o.transport = c.transport
    o.transports = c.transportOrder
    return o
  }

  public var options: OpenOptions {
    var o = OpenOptions()
    o.format = format
    o.allowExternalPaths = allowExternalPaths
    o.ignoreCIDMismatch = ignoreCIDMismatch
    o.singleLink = singleLink
    o.maxChainDepth = maxChainDepth
    return o
  }
}

/// The configuration file, read once per process: `apply()` configures the log, and
/// `tempDirectory` becomes TMPDIR for whatever the tool makes there.
enum ToolConfig {
  private static let loaded = Locked<(path: String?, config: TransportConfig)?>(nil)

  static func load(_ path: String?) throws -> TransportConfig {
    try loaded.withLock { cached in
      if let cached, cached.path == path { return cached.config }
      let c = try path.map { try TransportConfig.load(path: $0) } ?? TransportConfig.fromEnvironment()
      c.apply()
      setenv("TMPDIR", c.tempDirectory, 1)
      cached = (path, c)
      return c
    }
  }
}

/// The running tool's name, for messages.
public let toolName: String = {
  let arg0 = CommandLine.arguments.first ?? "vmdk"
  return String(arg0.split(separator: "/").last ?? Substring(arg0))
}()

/// Runs `body`; a VMDKError (or any other) becomes one line on stderr, "TOOL: error", and
/// exit status `status` (2 by default: cannot open or read).
public func runReporting(status: Int32 = 2, _ body: () throws -> Void) throws {
  do {
    try body()
  } catch let e as ExitCode {
    throw e
  } catch let e as VMDKError {
    printError("\(toolName): \(toolMessage(e))")
    throw ExitCode(status)
  } catch let e as CleanExit {
    throw e
  } catch {
    printError("\(toolName): \(toolMessage(error))")
    throw ExitCode(status)
  }
}

/// An error as the tools print it: the error's line, and for a path refused because it
/// leaves the disk's folder, the flag that allows it.
public func toolMessage(_ error: any Error) -> String {
  guard let e = error as? VMDKError else { return "\(error)" }
  guard e.code == .pathOutsideFolder, !e.message.contains("--allow-external-paths") else { return "\(e)" }
  // The library says "allow external paths" (OpenOptions.allowExternalPaths); a tool user
  // needs the flag's spelling.
  var hinted = e
  if hinted.message.contains("allow external paths") {
    hinted.message = hinted.message.replacingOccurrences(
      of: "allow external paths", with: "pass --allow-external-paths")
  } else {
    hinted.message += "; pass --allow-external-paths to open it"
  }
  return "\(hinted)"
}

public func printError(_ s: String) {
  var line = s.replacingNewlines() + "\n"
  line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

extension String {
  public func replacingNewlines() -> String { split(separator: "\n").joined(separator: " ") }
}

/// Writes all of `bytes` to standard output.
public func writeStdout(_ bytes: UnsafeRawBufferPointer) throws {
  var done = 0
  while done < bytes.count {
    let n = write(1, bytes.baseAddress! + done, bytes.count - done)
    if n < 0 {
      if errno == EINTR { continue }
      throw VMDKError(.fileAccess, "cannot write to standard output: \(String(cString: strerror(errno)))")
    }
    done += n
  }
}

/// Standard output in 64 KiB writes: for tools that print one line per file of a tree.
/// Lines go out in order when the buffer fills and at `flush()`; nothing else may write to
/// standard output in between (print's buffer is separate).
public struct OutputBuffer {
  private var bytes: [UInt8] = []
  private let limit = 65536
  public init() { bytes.reserveCapacity(limit + 4096) }

  /// Appends `prefix`, `rest` and a newline.
  public mutating func line(_ prefix: [UInt8], _ rest: [UInt8] = []) throws {
    bytes += prefix
    bytes += rest
    try endLine()
  }

  /// Appends `prefix`, `rest` (lent for the call) and a newline.
  public mutating func line(_ prefix: [UInt8], _ rest: UnsafeBufferPointer<UInt8>) throws {
    bytes += prefix
    bytes.append(contentsOf: rest)
    try endLine()
  }

  /// Appends `line` and a newline.
  public mutating func line(_ line: String) throws {
    var l = line
    l.withUTF8 { bytes += $0 }
    try endLine()
  }

  private mutating func endLine() throws {
    bytes.append(0x0A)
    if bytes.count >= limit { try flush() }
  }

  public mutating func flush() throws {
    guard !bytes.isEmpty else { return }
    try bytes.withUnsafeBytes { try writeStdout($0) }
    bytes.removeAll(keepingCapacity: true)
  }
}

/// A JSON value with ordered keys, so that output is stable.
public indirect enum JSON {
  case object([(String, JSON)])
  case array([JSON])
  case string(String)
  case int(Int64)
  case uint(UInt64)
  case bool(Bool)
  case null

  public func render(indent: Int = 0, pretty: Bool = true) -> String {
    let pad = pretty ? String(repeating: "  ", count: indent + 1) : ""
    let end = pretty ? String(repeating: "  ", count: indent) : ""
    let nl = pretty ? "\n" : ""
    switch self {
    case .object(let kv):
      if kv.isEmpty { return "{}" }
      return "{" + nl
        + kv.map { pad + JSON.quote($0.0) + (pretty ? ": " : ":") + $0.1.render(indent: indent + 1, pretty: pretty) }
        .joined(separator: "," + nl) + nl + end + "}"
    case .array(let a):
      if a.isEmpty { return "[]" }
      return "[" + nl + a.map { pad + $0.render(indent: indent + 1, pretty: pretty) }.joined(separator: "," + nl) + nl
        + end + "]"
    case .string(let s): return JSON.quote(s)
    case .int(let i): return String(i)
    case .uint(let u): return String(u)
    case .bool(let b): return b ? "true" : "false"
    case .null: return "null"
    }
  }

  public static func quote(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
      switch u {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      default:
        if u.value < 0x20 {
          let h = String(u.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
        } else {
          out.unicodeScalars.append(u)
        }
      }
    }
    return out + "\""
  }

  public static func opt(_ v: String?) -> JSON { v.map { .string($0) } ?? .null }
  public static func opt(_ v: UInt64?) -> JSON { v.map { .uint($0) } ?? .null }
}

public func printJSON(_ j: JSON) { print(j.render()) }

/// Bytes as a person reads them: "10 MiB".
public func humanSize(_ bytes: UInt64) -> String {
  let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
  var v = Double(bytes)
  var u = 0
  while v >= 1024 && u < units.count - 1 {
    v /= 1024
    u += 1
  }
  if u == 0 { return "\(bytes) bytes" }
  let rounded = (v * 100).rounded() / 100
  return rounded == rounded.rounded() ? "\(Int(rounded)) \(units[u])" : "\(rounded) \(units[u])"
}

/// Parses a size with an optional K/M/G/T suffix (powers of 1024).
public func parseSize(_ s: String) -> UInt64? {
  let units: [Character: UInt64] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50]
  var t = s.lowercased()
  if t.hasSuffix("ib") {
    t.removeLast(2)
  } else if t.hasSuffix("b") && t.count > 1 && units[t[t.index(t.endIndex, offsetBy: -2)]] != nil {
    t.removeLast()
  }
  if let last = t.last, let m = units[last] {
    guard let n = UInt64(t.dropLast()) else { return nil }
    let (r, o) = n.multipliedReportingOverflow(by: m)
    return o ? nil : r
  }
  return UInt64(t)
}
