// NBDServer: serves `NBDExport`s over NBD (fixed newstyle) on TCP or Unix sockets. One thread
// accepts; each connection has a thread that reads options, then requests, and hands the
// requests to a shared pool of workers, within a per-connection budget of requests and bytes
// in flight, so that memory stays bounded whatever a client sends. `stop()` ends cleanly:
// no new connections, requests in flight are answered, then the connections close.

import Dispatch
import Foundation
import Logging
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// How the server behaves toward its clients.
public struct NBDServerConfiguration: Sendable {
  /// Connections served at once; more are accepted and closed at once.
  public var maxConnections = 16
  /// Seconds a client may take over each handshake message before it is dropped.
  public var handshakeTimeoutSeconds = 30
  /// Requests in flight per connection.
  public var maxRequestsInFlight = 32
  /// Payload bytes (read data, write data) in flight per connection.
  public var maxBytesInFlight = 64 << 20
  /// The largest READ or WRITE payload accepted (advertised in NBD_INFO_BLOCK_SIZE).
  public var maxPayloadBytes = NBDProtocol.maxPayloadBytes
  /// TLS (NBD_OPT_STARTTLS); nil: refused, as with mode `.off`.
  public var tls: NBDTLSConfiguration? = nil

  public init() {}
}

/// An NBD server over a set of exports.
public final class NBDServer: @unchecked Sendable {
  /// The exports, the first one also served under the empty name.
  public let exports: [NBDExport]
  public let configuration: NBDServerConfiguration
  let log = Logger(label: "vmdk.nbd-server")

  private let lock = NSLock()
  private var listeners: [(fd: Int32, address: NBDListenAddress)] = []
  private var connections: [ObjectIdentifier: ClientSocket] = [:]
  private var stopping = false
  private var served = 0
  private var peakInFlight = 0
  private let connectionGroup = DispatchGroup()
  /// The TLS context when TLS is on or required.
  let tlsContext: ServerTLSContext?
  let workers = DispatchQueue(label: "vmdk.nbd-server.workers", attributes: .concurrent)

  /// A server over `exports`, whose names must differ.
  public init(exports: [NBDExport], configuration: NBDServerConfiguration = NBDServerConfiguration()) throws {
    guard !exports.isEmpty else { throw VMDKError(.invalidArgument, "an NBD server needs at least one export") }
    var names = Set<String>()
    for e in exports {
      guard names.insert(e.name).inserted else {
        throw VMDKError(.invalidArgument, "two exports are named '\(e.name)'; give each image its own name")
      }
      guard e.name.utf8.count <= NBDProtocol.maxNameBytes else {
        throw VMDKError(.invalidArgument, "the export name is longer than \(NBDProtocol.maxNameBytes) bytes")
      }
    }
    guard configuration.maxConnections > 0, configuration.maxPayloadBytes > 0,
      configuration.maxPayloadBytes <= configuration.maxBytesInFlight
    else {
      throw VMDKError(
        .invalidArgument, "the connection cap must be positive and the payload within the bytes in flight")
    }
    self.exports = exports
    self.configuration = configuration
    if let tls = configuration.tls, tls.mode != .off {
      tlsContext = try ServerTLSContext(tls)
    } else {
      tlsContext = nil
    }
  }

  /// The export a client names: by name, or the first for the empty name.
  func export(named name: String) -> NBDExport? {
    exports.first { $0.name == name } ?? (name.isEmpty ? exports.first : nil)
  }

  /// Starts listening on `address` and returns where it listens (with the port the kernel
  /// chose for port 0). A Unix socket path that exists is refused unless it is a socket
  /// nobody listens on.
  @discardableResult
  public func listen(_ address: NBDListenAddress) throws -> [NBDListenAddress] {
    if case .unix(let path) = address { try Self.removeStaleSocket(path) }
    let fds = try ServerSocket.listen(address)
    var out: [NBDListenAddress] = []
    lock.lock()
    for fd in fds {
      var a = address
      if case .tcp(let host, _) = address, let port = ServerSocket.boundPort(fd) { a = .tcp(host: host, port: port) }
      listeners.append((fd, a))
      out.append(a)
    }
    lock.unlock()
    return out
  }

  private static func removeStaleSocket(_ path: String) throws {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    guard st.st_mode & S_IFMT == S_IFSOCK else {
      throw VMDKError(.fileExists, "the socket path exists and is not a socket", file: path)
    }
    unlink(path)
  }

  /// Accepts and serves connections until `stop()`; returns when every connection has ended.
  public func serve() {
    while true {
      lock.lock()
      let stop = stopping
      let fds = listeners.map(\.fd)
      lock.unlock()
      if stop || fds.isEmpty { break }
      var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
      let n = poll(&polls, nfds_t(polls.count), 200)
      guard n > 0 else { continue }
      for p in polls where p.revents & Int16(POLLIN) != 0 {
        let fd = accept(p.fd, nil, nil)
        guard fd >= 0 else { continue }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        start(ClientSocket(fd: fd))
      }
    }
    connectionGroup.wait()
    lock.lock()
    let closing = listeners
    listeners = []
    lock.unlock()
    for l in closing {
      close(l.fd)
      if case .unix(let path) = l.address { unlink(path) }
    }
  }

  /// Ends serving: stops accepting, lets requests in flight finish and be answered, then
  /// closes every connection; `serve()` returns when they are gone. Safe from any thread.
  public func stop() {
    lock.lock()
    stopping = true
    let open = Array(connections.values)
    lock.unlock()
    for c in open { c.shutdownReceive() }
  }

  /// Connections open right now.
  public var connectionCount: Int {
    lock.lock()
    defer { lock.unlock() }
    return connections.count
  }

  /// Connections served since the start.
  public var connectionsServed: Int {
    lock.lock()
    defer { lock.unlock() }
    return served
  }

  private func start(_ socket: ClientSocket) {
    lock.lock()
    guard !stopping, connections.count < configuration.maxConnections else {
      lock.unlock()
      log.info("connection refused: \(configuration.maxConnections) connections are open already")
      return  // closed as `socket` goes away
    }
    connections[ObjectIdentifier(socket)] = socket
    served += 1
    connectionGroup.enter()
    lock.unlock()
    let thread = Thread { [self] in
      NBDConnection(server: self, socket: socket).run()
      lock.lock()
      connections[ObjectIdentifier(socket)] = nil
      lock.unlock()
      connectionGroup.leave()
    }
    thread.stackSize = 1 << 20
    thread.start()
  }

  /// The most requests one connection has had in flight at once since the start (a reader
  /// that waits for each reply before the next request would keep it at 1).
  public var peakRequestsInFlight: Int {
    lock.lock()
    defer { lock.unlock() }
    return peakInFlight
  }

  func noteInFlight(_ n: Int) {
    lock.lock()
    if n > peakInFlight { peakInFlight = n }
    lock.unlock()
  }

  var isStopping: Bool {
    lock.lock()
    defer { lock.unlock() }
    return stopping
  }
}
