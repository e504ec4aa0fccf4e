// HTTPURL: the `http://host[:port]/path` and `https://...` locations the HTTP transport opens.
// Parsed by hand and strictly: user information (`user:password@`) is refused, because
// credentials in a URL end up in logs and messages; a query or fragment is refused, because a
// VMDK's extents are resolved against the descriptor's folder and a query cannot be carried
// over to them meaningfully. The path is kept as decoded segments, so that file names from a
// descriptor (which are literal names, never URL-encoded) can be appended and every segment is
// percent-encoded once, when the request is written.

/// A parsed `http://` or `https://` URL.
public struct HTTPURL: Sendable, Equatable, CustomStringConvertible {
  /// Whether the scheme is https (TLS).
  public var isTLS: Bool
  /// The host name or address, without the brackets of an IPv6 literal.
  public var host: String
  /// The TCP port (80 or 443 when the URL gives none).
  public var port: UInt16
  /// The decoded path segments, "." and ".." already applied; the last is the file's name.
  public var segments: [String]

  /// The scheme's name: "http" or "https".
  public var scheme: String { isTLS ? "https" : "http" }
  /// The port the scheme implies when the URL names none.
  public var defaultPort: UInt16 { isTLS ? 443 : 80 }

  public init(isTLS: Bool, host: String, port: UInt16? = nil, segments: [String]) {
    self.isTLS = isTLS
    self.host = host
    self.port = port ?? (isTLS ? 443 : 80)
    self.segments = segments
  }

  /// Parses `text`. Throws `invalidArgument` naming what is wrong: another scheme, user
  /// information, a query or fragment, a bad host, port or percent escape.
  public init(_ text: String) throws {
    func refuse(_ why: String) -> VMDKError {
      VMDKError(.invalidArgument, "not a usable http(s) URL: \(why)", file: text)
    }
    let lower = text.lowercased()
    let rest: Substring
    if lower.hasPrefix("https://") {
      isTLS = true
      rest = text.dropFirst(8)
    } else if lower.hasPrefix("http://") {
      isTLS = false
      rest = text.dropFirst(7)
    } else {
      throw refuse("the scheme must be http:// or https://")
    }
    if rest.contains("?") { throw refuse("a query (?...) is not supported") }
    if rest.contains("#") { throw refuse("a fragment (#...) is not supported") }
    let slash = rest.firstIndex(of: "/") ?? rest.endIndex
    let authority = rest[..<slash]
    if authority.contains("@") { throw refuse("user information (user@host) is not accepted in a URL") }
    (host, port) = try HTTPURL.parseAuthority(authority, defaultPort: isTLS ? 443 : 80, refuse: refuse)
    segments = try HTTPURL.normalized(
      rest[slash...].split(separator: "/", omittingEmptySubsequences: false).dropFirst().map {
        guard let s = PercentEncoding.decoded($0) else {
          throw refuse("the path segment \"\($0)\" has a bad percent escape")
        }
        return s
      })
    // No path is the root folder, as "/" is (RFC 3986 section 6.2.3): one URL, one value.
    if segments.isEmpty { segments = [""] }
  }

  /// Whether `text` starts with http:// or https:// (in any case).
  public static func isURL(_ text: String) -> Bool {
    let lower = text.prefix(8).lowercased()
    return lower.hasPrefix("http://") || lower.hasPrefix("https://")
  }

  /// The URL in its canonical form: lower-case scheme and host, the port only when it is not
  /// the scheme's default, every path segment percent-encoded.
  public var description: String {
    let portPart = port == defaultPort ? "" : ":\(port)"
    return "\(scheme)://\(hostForHeader)\(portPart)\(requestTarget)"
  }

  /// The host as the Host header and URLs write it (an IPv6 literal in brackets).
  public var hostForHeader: String { host.contains(":") ? "[\(host)]" : host }

  /// The value of the Host header: the host, and the port when it is not the default.
  var hostHeader: String { port == defaultPort ? hostForHeader : "\(hostForHeader):\(port)" }

  /// The path as a request line carries it: "/" and the percent-encoded segments.
  public var requestTarget: String {
    "/" + segments.map(PercentEncoding.encodedSegment).joined(separator: "/")
  }

  /// Whether `other` is on the same server (scheme, host and port).
  public func sameOrigin(_ other: HTTPURL) -> Bool {
    isTLS == other.isTLS && host == other.host && port == other.port
  }

  // MARK: Parsing helpers

  /// Splits `host[:port]` or `[v6]:port`; the host is lower-cased.
  private static func parseAuthority(
    _ authority: Substring, defaultPort: UInt16, refuse: (String) -> VMDKError
  ) throws -> (String, UInt16) {
    var hostPart: Substring
    var portPart: Substring? = nil
    if authority.hasPrefix("[") {
      guard let close = authority.firstIndex(of: "]") else { throw refuse("an IPv6 address lacks its \"]\"") }
      hostPart = authority[authority.index(after: authority.startIndex)..<close]
      let after = authority[authority.index(after: close)...]
      if !after.isEmpty {
        guard after.hasPrefix(":") else { throw refuse("unexpected text after the IPv6 address") }
        portPart = after.dropFirst()
      }
      // ASCII only: Character.isHexDigit also takes the fullwidth forms (U+FF10…).
      guard hostPart.contains(":"), hostPart.allSatisfy({ $0.isASCII && ($0.isHexDigit || $0 == ":" || $0 == ".") })
      else {
        throw refuse("\"[\(hostPart)]\" is not an IPv6 address")
      }
    } else {
      if let colon = authority.lastIndex(of: ":") {
        hostPart = authority[..<colon]
        portPart = authority[authority.index(after: colon)...]
      } else {
        hostPart = authority
      }
      let allowed = { (c: Character) in c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "." || c == "_") }
      guard !hostPart.isEmpty, hostPart.allSatisfy(allowed) else {
        throw refuse("the host \"\(hostPart)\" is empty or has characters a host name cannot have")
      }
    }
    guard let portPart else { return (hostPart.lowercased(), defaultPort) }
    guard !portPart.isEmpty, portPart.count <= 5, portPart.allSatisfy({ $0.isASCII && $0.isNumber }),
      let port = UInt16(portPart), port > 0
    else { throw refuse("the port \"\(portPart)\" is not a number from 1 to 65535") }
    return (hostPart.lowercased(), port)
  }

  /// Applies "." and ".." (RFC 3986 section 5.2.4) and drops empty segments but the last (a
  /// trailing slash names a folder).
  static func normalized(_ raw: [String]) -> [String] {
    var out: [String] = []
    for (i, s) in raw.enumerated() {
      switch s {
      case ".": continue
      case "..": if !out.isEmpty { out.removeLast() }
      case "": if i == raw.count - 1 { out.append("") }
      default: out.append(s)
      }
    }
    return out
  }
}
