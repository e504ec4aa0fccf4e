// Where a disk is: a local path (or a file: URI), an NBD export (the NBD URI conventions of
// libnbd and qemu: nbd://, nbds://, nbd+unix://, nbds+unix://), or VMDK files on a web server
// (http://, https://). Every tool and `Disk.open` take one of these strings.

/// How a disk is reached (`vmdk-inspect transports` lists them; the configuration file's
/// `transports` orders them).
public enum Transport: String, Sendable, CaseIterable {
  case file, nbd, nbds, http, https
}

/// A parsed disk location.
public enum DiskLocation: Sendable, Equatable {
  /// A local file.
  case file(path: String)
  /// An NBD export: a whole virtual disk.
  case nbd(address: SocketAddress, export: String, tls: Bool)
  /// A VMDK file (descriptor or monolithic) on a web server, read with range requests.
  case http(url: String, tls: Bool)

  /// The NBD port when a URI names none.
  public static let defaultNBDPort: UInt16 = 10809

  /// The transport that reaches it.
  public var transport: Transport {
    switch self {
    case .file: .file
    case .nbd(_, _, let tls): tls ? .nbds : .nbd
    case .http(_, let tls): tls ? .https : .http
    }
  }

  /// Parses `text`. Anything without a known scheme is a path; `file:` URIs become paths
  /// (percent-decoded). NBD URIs: `nbd[s]://host[:port][/export]` (IPv6 hosts in brackets;
  /// the export is the percent-decoded path after the first slash) and
  /// `nbd[s]+unix:///[export]?socket=PATH`. Throws `invalidArgument` naming what is wrong.
  public init(parsing text: String) throws {
    guard let colon = text.firstIndex(of: ":") else {
      self = .file(path: text)
      return
    }
    let scheme = text[..<colon].lowercased()
    let rest = String(text[text.index(after: colon)...])
    func bad(_ why: String) -> VMDKError {
      VMDKError(.invalidArgument, "cannot parse '\(text)': \(why)", file: text)
    }
    switch scheme {
    case "file":
      guard !rest.hasPrefix("//") || rest.hasPrefix("///") || rest.hasPrefix("//localhost/") else {
        throw bad("a file: URI names no other host than localhost")
      }
      var path = rest
      if path.hasPrefix("//localhost/") { path.removeFirst("//localhost".count) }
      if path.hasPrefix("///") { path.removeFirst(2) }
      guard let decoded = PercentEncoding.decoded(path), !decoded.isEmpty else {
        throw bad("bad percent-encoding or an empty path")
      }
      self = .file(path: decoded)
    case "nbd", "nbds":
      guard rest.hasPrefix("//") else { throw bad("expected \(scheme)://host[:port][/export]") }
      let afterSlashes = rest.dropFirst(2)
      let authorityEnd = afterSlashes.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? afterSlashes.endIndex
      let authority = String(afterSlashes[..<authorityEnd])
      var path = String(afterSlashes[authorityEnd...])
      if let q = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = String(path[..<q]) }
      let (host, port) = try DiskLocation.hostAndPort(authority, defaultPort: DiskLocation.defaultNBDPort, bad: bad)
      guard let export = PercentEncoding.decoded(path.dropFirst()) else {
        throw bad("bad percent-encoding in the export name")
      }
      self = .nbd(address: .tcp(host: host, port: port), export: export, tls: scheme == "nbds")
    case "nbd+unix", "nbds+unix":
      guard rest.hasPrefix("//") else { throw bad("expected \(scheme):///export?socket=PATH") }
      let afterSlashes = rest.dropFirst(2)
      guard afterSlashes.first == "/" || afterSlashes.first == "?" else {
        throw bad("an nbd+unix URI has no host: \(scheme):///export?socket=PATH")
      }
      let queryStart = afterSlashes.firstIndex(of: "?")
      var path = String(afterSlashes[..<(queryStart ?? afterSlashes.endIndex)])
      if path.hasPrefix("/") { path.removeFirst() }
      var socket: String?
      if let queryStart {
        for item in afterSlashes[afterSlashes.index(after: queryStart)...].split(separator: "&") {
          let parts = item.split(separator: "=", maxSplits: 1)
          if parts.count == 2 && parts[0] == "socket" { socket = PercentEncoding.decoded(String(parts[1])) }
        }
      }
      guard let socket, !socket.isEmpty else { throw bad("an nbd+unix URI needs ?socket=PATH") }
      guard let export = PercentEncoding.decoded(path) else { throw bad("bad percent-encoding in the export name") }
      self = .nbd(address: .unix(path: socket), export: export, tls: scheme == "nbds+unix")
    case "http", "https":
      guard rest.hasPrefix("//"), rest.count > 2 else { throw bad("expected \(scheme)://host[:port]/path") }
      self = .http(url: text, tls: scheme == "https")
    default:
      // "C:\disk.vmdk" and names with colons are paths; so is anything with an unknown scheme.
      self = .file(path: text)
    }
  }

  /// The location as a URI (a path stays a path).
  public var description: String {
    switch self {
    case .file(let path): return path
    case .http(let url, _): return url
    case .nbd(let address, let export, let tls):
      let s = tls ? "nbds" : "nbd"
      let e = PercentEncoding.encodedPath(export)
      switch address {
      case .tcp(let host, let port):
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(s)://\(h):\(port)/\(e)"
      case .unix(let path):
        // In the query "&" separates parameters: a socket path's own is escaped.
        let socket = PercentEncoding.encodedPath(path).split(separator: "&", omittingEmptySubsequences: false)
          .joined(separator: "%26")
        return "\(s)+unix:///\(e)?socket=\(socket)"
      }
    }
  }

  private static func hostAndPort(
    _ authority: String, defaultPort: UInt16, bad: (String) -> VMDKError
  ) throws -> (String, UInt16) {
    guard !authority.contains("@") else { throw bad("user names in URIs are not supported") }
    var host: String
    var portText: String?
    if authority.hasPrefix("[") {
      guard let close = authority.firstIndex(of: "]") else { throw bad("an IPv6 address without ']'") }
      host = String(authority[authority.index(after: authority.startIndex)..<close])
      let after = authority[authority.index(after: close)...]
      if after.hasPrefix(":") {
        portText = String(after.dropFirst())
      } else if !after.isEmpty {
        throw bad("unexpected '\(after)' after the host")
      }
    } else if let c = authority.lastIndex(of: ":") {
      host = String(authority[..<c])
      portText = String(authority[authority.index(after: c)...])
    } else {
      host = authority
    }
    // A host name, or an IPv6 address (with a zone) in brackets: nothing that would end the
    // authority or the brackets when the location is written out again.
    let bracketed = authority.hasPrefix("[")
    let allowed = { (c: Character) in
      c.isASCII
        && (c.isLetter || c.isNumber || c == "-" || c == "." || c == "_" || (bracketed && (c == ":" || c == "%")))
    }
    guard host.allSatisfy(allowed), !bracketed || host.contains(":") else {
      throw bad("'\(host)' is not a host name or an IPv6 address")
    }
    if host.isEmpty { host = "localhost" }
    guard let portText else { return (host, defaultPort) }
    guard portText.allSatisfy({ $0.isASCII && $0.isNumber }), let port = UInt16(portText), port > 0 else {
      throw bad("port '\(portText)' is not 1…65535")
    }
    return (host, port)
  }
}

/// What a transport is and can do, for `vmdk-inspect transports`.
public struct TransportDescription: Sendable {
  public let transport: Transport
  /// The transport's name: "file", "nbd", "nbds", "http" or "https".
  public var name: String { transport.rawValue }
  /// How a location for it is written.
  public let form: String
  /// Whether disks reached through it can be written.
  public let writable: Bool
  /// What it is.
  public let summary: String

  /// Every transport this build has.
  public static let all: [TransportDescription] = [
    TransportDescription(
      transport: .file, form: "PATH or file:///PATH", writable: true,
      summary: "local VMDK files (every variant and snapshot chain) and raw images"),
    TransportDescription(
      transport: .nbd, form: "nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH", writable: true,
      summary: "an NBD export as a whole raw disk: block status, several requests in flight, retries"),
    TransportDescription(
      transport: .nbds, form: "nbds://HOST[:PORT][/EXPORT] or nbds+unix:///EXPORT?socket=PATH", writable: true,
      summary: "NBD over TLS (OpenSSL): certificates verified by default, client certificates or PSK"),
    TransportDescription(
      transport: .http, form: "http://HOST[:PORT]/PATH.vmdk", writable: false,
      summary: "VMDK files on a web server, read with range requests"),
    TransportDescription(
      transport: .https, form: "https://HOST[:PORT]/PATH.vmdk", writable: false,
      summary: "VMDK files on a web server over TLS, read with range requests"),
  ]
}
