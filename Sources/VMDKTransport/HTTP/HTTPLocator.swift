// HTTPLocator: disks on an HTTP(S) server. A descriptor's extent and parent names resolve
// against the descriptor URL's folder by the local resolver's rules (backslashes as folder
// separators, nothing outside the folder unless allowed), and must exist on the server.

/// Opens and resolves `http://` and `https://` locations (read-only).
public struct HTTPLocator: StoreLocator {
  public let options: TransportOptions
  /// "https" for a locator made for TLS URLs, else "http"; either opens both schemes.
  public let transport: Transport
  /// The connections the files opened through this locator share: a few per server, however
  /// many extent files a disk has.
  public let pool = HTTPConnectionPool()

  public init(options: TransportOptions = TransportOptions(), isTLS: Bool = false) {
    self.options = options
    self.transport = isTLS ? .https : .http
  }

  /// Opens an HTTPStore; a writable open is `fileReadOnly`.
  public func open(_ location: String, writable: Bool) throws -> any ByteStore {
    if writable { throw VMDKError(.fileReadOnly, "HTTP is read-only", file: location) }
    return try HTTPStore(location, options: options, pool: pool)
  }

  /// Resolves `name` against the folder of the descriptor URL `descriptor` and checks that it
  /// exists (`missingCode` when the server says 404 or 410). A relative name is literal (never
  /// percent-decoded); a name that is itself an http(s) URL is taken as one. Unless
  /// `allowExternal`, a name that leaves the folder ("..", an absolute path, another server)
  /// is `pathOutsideFolder`.
  public func resolve(
    _ name: String, from descriptor: String, allowExternal: Bool, what: String, missingCode: VMDKError.Code
  ) throws -> String {
    let base = try HTTPURL(descriptor)
    let (target, fromRoot) = try HTTPLocator.target(of: name, base: base)
    if !allowExternal {
      let folder = Array(base.segments.dropLast())
      let inside =
        !fromRoot && target.sameOrigin(base)
        && target.segments.count > folder.count && Array(target.segments.prefix(folder.count)) == folder
      guard inside else {
        throw VMDKError(
          .pathOutsideFolder,
          "\(what) file \"\(name)\" resolves to \(target), outside the descriptor's folder; allow external paths to open it",
          file: base.description)
      }
    }
    do {
      _ = try HTTPStore(url: target, options: options, pool: pool)
    } catch let e as VMDKError where e.code == .fileNotFound {
      throw VMDKError(
        missingCode, "\(what) file \"\(name)\" named by \(base) does not exist (\(e.message))",
        file: target.description, underlying: e)
    }
    return target.description
  }

  /// The canonical form of an http(s) URL (lower-case scheme and host, no default port, "."
  /// and ".." applied, segments percent-encoded); anything else as it is.
  public func canonical(_ location: String) -> String {
    (try? HTTPURL(location))?.description ?? location
  }

  /// The URL `name` stands for: a URL as it is; a path (backslashes turned into slashes when
  /// the name has no slash) from the server's root when it starts with "/", else from the
  /// descriptor's folder. `fromRoot` tells a path from the root.
  static func target(of name: String, base: HTTPURL) throws -> (url: HTTPURL, fromRoot: Bool) {
    if HTTPURL.isURL(name) { return (try HTTPURL(name), false) }
    // As in a URL (PercentEncoding): a NUL would become a "%00" that no URL may hold.
    guard !name.utf8.contains(0) else {
      throw VMDKError(.invalidArgument, "the file name \(name.debugDescription) holds a NUL", file: base.description)
    }
    var path = name
    if path.contains("\\") && !path.contains("/") {
      path = path.split(separator: "\\", omittingEmptySubsequences: false).joined(separator: "/")
    }
    let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
    let fromRoot = path.hasPrefix("/")
    var target = base
    target.segments = HTTPURL.normalized(
      (fromRoot ? [] : Array(base.segments.dropLast())) + parts.filter { !$0.isEmpty })
    return (target, fromRoot)
  }
}
