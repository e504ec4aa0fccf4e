// ServerSocket: the server's side of the sockets. Listening (TCP through getaddrinfo, or a Unix
// socket), accepting, and exact sends and receives on a connected socket. Errors are VMDKError
// with the network codes.

import VMDKBlock

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// Where the server listens.
public enum NBDListenAddress: Sendable, Equatable, CustomStringConvertible {
  case tcp(host: String, port: UInt16)
  case unix(path: String)

  public var description: String {
    switch self {
    case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    case .unix(let path): return path
    }
  }
}

enum ServerSocket {
  /// Listening sockets for `address` (several for a host name with IPv4 and IPv6 addresses).
  /// Port 0 lets the kernel choose; `boundPort` tells which.
  static func listen(_ address: NBDListenAddress, backlog: Int32 = 128) throws -> [Int32] {
    switch address {
    case .unix(let path):
      var sa = sockaddr_un()
      sa.sun_family = sa_family_t(AF_UNIX)
      let bytes = Array(path.utf8)
      let capacity = MemoryLayout.size(ofValue: sa.sun_path)
      guard !bytes.isEmpty, bytes.count < capacity else {
        throw VMDKError(.invalidArgument, "the socket path is empty or longer than \(capacity - 1) bytes", file: path)
      }
      withUnsafeMutableBytes(of: &sa.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
      }
      let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      guard fd >= 0 else { throw failure("cannot make a socket", path) }
      let rc = withUnsafePointer(to: &sa) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
      }
      guard rc == 0, Glibc.listen(fd, backlog) == 0 else {
        let e = failure("cannot listen on the socket", path)
        close(fd)
        throw e
      }
      return [fd]
    case .tcp(let host, let port):
      var hints = addrinfo()
      hints.ai_family = AF_UNSPEC
      hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
      hints.ai_flags = AI_PASSIVE
      var list: UnsafeMutablePointer<addrinfo>?
      let rc = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &list)
      guard rc == 0, let first = list else {
        throw VMDKError(
          .serverNotFound, "cannot resolve '\(host)': \(String(cString: gai_strerror(rc)))", file: "\(address)")
      }
      defer { freeaddrinfo(list) }
      var fds: [Int32] = []
      var lastError: VMDKError?
      var entry: UnsafeMutablePointer<addrinfo>? = first
      // With port 0, every address gets the port the first one was given.
      var chosenPort = port
      while let ai = entry {
        entry = ai.pointee.ai_next
        let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { continue }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if ai.pointee.ai_family == AF_INET6 {
          _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        setPort(ai.pointee.ai_addr, chosenPort)
        if bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0, Glibc.listen(fd, backlog) == 0 {
          fds.append(fd)
          if chosenPort == 0 { chosenPort = boundPort(fd) ?? 0 }
        } else {
          lastError = failure("cannot listen on \(address)", "\(address)")
          close(fd)
        }
      }
      guard !fds.isEmpty else { throw lastError ?? VMDKError(.failure, "no address to listen on", file: "\(address)") }
      return fds
    }
  }

  private static func setPort(_ sa: UnsafeMutablePointer<sockaddr>?, _ port: UInt16) {
    guard let sa else { return }
    if Int32(sa.pointee.sa_family) == AF_INET {
      sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_port = port.bigEndian }
    } else if Int32(sa.pointee.sa_family) == AF_INET6 {
      sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_port = port.bigEndian }
    }
  }

  /// The port a TCP socket is bound to.
  static func boundPort(_ fd: Int32) -> UInt16? {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let rc = withUnsafeMutablePointer(to: &storage) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard rc == 0 else { return nil }
    return withUnsafePointer(to: &storage) { p -> UInt16? in
      switch Int32(p.pointee.ss_family) {
      case AF_INET:
        return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
      case AF_INET6:
        return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
      default: return nil
      }
    }
  }

  static func failure(_ what: String, _ name: String) -> VMDKError {
    let err = errno
    return VMDKError(.failure, "\(what): \(String(cString: strerror(err)))", file: name)
  }

  /// Sets SO_RCVTIMEO (seconds; 0: wait forever).
  static func setReceiveTimeout(_ fd: Int32, seconds: Int) {
    var tv = timeval(tv_sec: seconds, tv_usec: 0)
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
  }
}

/// Why a connection ends.
enum ConnectionEnd: Error {
  /// The peer closed, reset, or timed out.
  case closed
}

/// A connected client socket: exact receives and sends (the sender serialized by the caller).
final class ClientSocket: @unchecked Sendable {
  let fd: Int32
  init(fd: Int32) {
    self.fd = fd
    var one: Int32 = 1
    _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
  }
  deinit { close(fd) }

  /// Receives exactly `buffer.count` bytes.
  func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws {
    guard let base = buffer.baseAddress else { return }
    var done = 0
    while done < buffer.count {
      let n = recv(fd, base + done, buffer.count - done, 0)
      if n > 0 {
        done += n
      } else if n < 0 && errno == EINTR {
        continue
      } else {
        throw ConnectionEnd.closed
      }
    }
  }

  func recvBytes(_ count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    try bytes.withUnsafeMutableBytes { try recvAll(into: $0) }
    return bytes
  }

  /// Sends all of `buffer`; `more` tells TCP that more of the same reply follows at once.
  func sendAll(_ buffer: UnsafeRawBufferPointer, more: Bool = false) throws {
    guard let base = buffer.baseAddress else { return }
    var done = 0
    let flags = Int32(MSG_NOSIGNAL) | (more ? Int32(MSG_MORE) : 0)
    while done < buffer.count {
      let n = send(fd, base + done, buffer.count - done, flags)
      if n > 0 {
        done += n
      } else if n < 0 && errno == EINTR {
        continue
      } else {
        throw ConnectionEnd.closed
      }
    }
  }

  func sendAll(_ bytes: [UInt8], more: Bool = false) throws {
    try bytes.withUnsafeBytes { try sendAll($0, more: more) }
  }

  /// Stops receiving: a blocked receive returns, so the connection's reader ends.
  func shutdownReceive() { shutdown(fd, Int32(SHUT_RD)) }

  /// Ends the connection both ways (the sender found the client gone).
  func shutdownBoth() { shutdown(fd, Int32(SHUT_RDWR)) }
}
