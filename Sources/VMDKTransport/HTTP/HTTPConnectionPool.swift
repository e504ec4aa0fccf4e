// Idle keep-alive connections shared by the HTTPStores of one disk. A split disk has an
// extent file per 2 GiB: a 2 TiB disk opens about a thousand of them, and a connection held
// by each would exhaust the server's connection limit. A store borrows a connection for one
// request and gives it back, so a disk keeps only a few open, whatever its extent count.

/// Idle connections to HTTP(S) servers, a few per server, shared by the stores made with it
/// (HTTPLocator shares one among the files of a disk). Every connection in one pool is made
/// with the same TransportOptions: those of the store that made it.
public final class HTTPConnectionPool: Sendable {
  /// The most idle connections kept per server; one given back beyond that is closed.
  public static let maxIdlePerServer = 4

  private let idle = Locked<[String: [HTTPConnection]]>([:])

  public init() {}

  /// An idle connection to the server of `url`, when the pool has one.
  func take(for url: HTTPURL) -> HTTPConnection? {
    idle.withLock { $0[HTTPConnectionPool.key(url)]?.popLast() }
  }

  /// Gives back a connection after a complete exchange: kept while it is open and the server
  /// has fewer than `maxIdlePerServer` idle ones, else closed.
  func giveBack(_ connection: HTTPConnection, for url: HTTPURL) {
    guard connection.isOpen else { return }
    let kept = idle.withLock { pool -> Bool in
      let key = HTTPConnectionPool.key(url)
      guard pool[key, default: []].count < HTTPConnectionPool.maxIdlePerServer else { return false }
      pool[key, default: []].append(connection)
      return true
    }
    if !kept { connection.close() }
  }

  /// Closes every idle connection (a disk's `close()`); connections in use close when given back
  /// to a pool that is over its limit, or when they go away.
  public func closeAll() {
    let all = idle.withLock { pool -> [HTTPConnection] in
      defer { pool = [:] }
      return pool.values.flatMap { $0 }
    }
    for c in all { c.close() }
  }

  /// Connections are shared by server: scheme, host and port.
  private static func key(_ url: HTTPURL) -> String { "\(url.scheme)://\(url.hostHeader):\(url.port)" }
}
