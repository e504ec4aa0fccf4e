// Sockets for the network transports: connecting (TCP through getaddrinfo, or a Unix socket)
// with a timeout, and exact sends and receives that turn errno values into the network error
// codes. `ByteChannel` is what a protocol speaks over: a plain socket or a TLS session on one.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Where a server listens.
public enum SocketAddress: Sendable, Equatable {
  case tcp(host: String, port: UInt16)
  case unix(path: String)
}

// The C calls by names that the transports' own methods (close, connect) do not shadow.
func closeSocket(_ fd: Int32) { _ = close(fd) }
private func connectSocket(_ fd: Int32, _ address: UnsafePointer<sockaddr>!, _ length: socklen_t) -> Int32 {
  connect(fd, address, length)
}
private func recvSocket(_ fd: Int32, _ buffer: UnsafeMutableRawPointer!, _ count: Int, _ flags: Int32) -> Int {
  recv(fd, buffer, count, flags)
}

/// A connected byte stream: a plain socket or a TLS session over one.
protocol ByteChannel: AnyObject {
  /// Sends all of `buffer`.
  func sendAll(_ buffer: UnsafeRawBufferPointer) throws
  /// Receives exactly `buffer.count` bytes (connectionLost at end of stream).
  func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws
  /// Receives what is there, at most `buffer.count` bytes, waiting for at least one; 0 at the
  /// end of the stream.
  func recvSome(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
  /// Shuts down and closes; later calls fail with connectionLost.
  func close()
}

extension ByteChannel {
  func sendAll(_ bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { try sendAll($0) }
  }
  func recvBytes(_ count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    try bytes.withUnsafeMutableBytes { try recvAll(into: $0) }
    return bytes
  }
}

/// A plain connected socket.
final class SocketChannel: ByteChannel {
  private(set) var fd: Int32
  let name: String

  init(fd: Int32, name: String) {
    self.fd = fd
    self.name = name
  }

  /// Connects to `address` within `timeout` seconds, which then bounds every send and receive.
  static func connect(_ address: SocketAddress, name: String, timeout: Double) throws -> SocketChannel {
    SocketChannel(fd: try Net.connect(address, name: name, timeout: timeout), name: name)
  }

  deinit { close() }

  func sendAll(_ buffer: UnsafeRawBufferPointer) throws {
    guard fd >= 0 else { throw Net.closedError(name) }
    try Net.sendAll(fd: fd, buffer, name: name)
  }
  func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws {
    guard fd >= 0 else { throw Net.closedError(name) }
    try Net.recvAll(fd: fd, into: buffer, name: name)
  }
  func recvSome(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    guard fd >= 0 else { throw Net.closedError(name) }
    return try Net.recvSome(fd: fd, into: buffer, name: name)
  }
  func close() {
    guard fd >= 0 else { return }
    shutdown(fd, Int32(SHUT_RDWR))
    closeSocket(fd)
    fd = -1
  }
}

enum Net {
  // MARK: Connecting

  /// Connects to `address`; `timeout` bounds the connect and then every send and receive until
  /// `setTimeouts` changes it. `sendBuffer`/`receiveBuffer` set SO_SNDBUF/SO_RCVBUF before the
  /// connect (so that TCP can scale its window to them); nil keeps the system's default.
  static func connect(
    _ address: SocketAddress, name: String, timeout: Double, sendBuffer: Int? = nil, receiveBuffer: Int? = nil
  ) throws -> Int32 {
    let buffers = (sendBuffer, receiveBuffer)
    switch address {
    case .unix(let path):
      var sa = sockaddr_un()
      sa.sun_family = sa_family_t(AF_UNIX)
      let bytes = Array(path.utf8)
      let capacity = MemoryLayout.size(ofValue: sa.sun_path)
      guard !bytes.isEmpty, bytes.count < capacity else {
        throw VMDKError(.invalidArgument, "the socket path is empty or longer than \(capacity - 1) bytes", file: name)
      }
      withUnsafeMutableBytes(of: &sa.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
      }
      let fd = try socketFor(family: AF_UNIX, name: name, timeout: timeout, buffers: buffers)
      let rc = withUnsafePointer(to: &sa) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          connectSocket(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
      }
      if rc != 0 {
        let err = errno
        closeSocket(fd)
        throw connectError(err, name: name)
      }
      return fd
    case .tcp(let host, let port):
      var hints = addrinfo()
      hints.ai_family = AF_UNSPEC
      hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
      var list: UnsafeMutablePointer<addrinfo>?
      let rc = getaddrinfo(host, String(port), &hints, &list)
      guard rc == 0, let first = list else {
        let text = rc == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(rc))
        throw VMDKError(.serverNotFound, "cannot resolve host '\(host)': \(text)", file: name)
      }
      defer { freeaddrinfo(list) }
      var lastError: VMDKError?
      var entry: UnsafeMutablePointer<addrinfo>? = first
      while let ai = entry {
        entry = ai.pointee.ai_next
        let fd = try socketFor(family: ai.pointee.ai_family, name: name, timeout: timeout, buffers: buffers)
        if connectSocket(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 {
          var one: Int32 = 1
          _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
          return fd
        }
        let err = errno
        closeSocket(fd)
        lastError = connectError(err, name: name)
      }
      throw lastError ?? VMDKError(.serverNotFound, "host '\(host)' has no address", file: name)
    }
  }

  private static func socketFor(
    family: Int32, name: String, timeout: Double, buffers: (send: Int?, receive: Int?)
  ) throws -> Int32 {
    let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else {
      let err = errno
      throw VMDKError(.failure, "cannot make a socket: \(String(cString: strerror(err)))", file: name)
    }
    setTimeouts(fd: fd, receive: timeout, send: timeout)
    for (option, bytes) in [(SO_SNDBUF, buffers.send), (SO_RCVBUF, buffers.receive)] {
      guard var value = bytes.map({ Int32(clamping: $0) }), value > 0 else { continue }
      _ = setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<Int32>.size))
    }
    return fd
  }

  /// Sets SO_RCVTIMEO and SO_SNDTIMEO (seconds; 0 or less: wait forever).
  static func setTimeouts(fd: Int32, receive: Double, send: Double) {
    let size = socklen_t(MemoryLayout<timeval>.size)
    for (option, seconds) in [(SO_RCVTIMEO, receive), (SO_SNDTIMEO, send)] {
      let s = max(seconds, 0)
      var tv = timeval(tv_sec: Int(s), tv_usec: Int((s - s.rounded(.down)) * 1_000_000))
      _ = setsockopt(fd, SOL_SOCKET, option, &tv, size)
    }
  }

  private static func connectError(_ err: Int32, name: String) -> VMDKError {
    let text = String(cString: strerror(err))
    switch err {
    case ECONNREFUSED:
      return VMDKError(.connectionRefused, "cannot connect: \(text)", file: name, isRetryable: true)
    case ENOENT:
      return VMDKError(.serverNotFound, "cannot connect: \(text)", file: name)
    case EINPROGRESS, ETIMEDOUT, EAGAIN:
      return VMDKError(.timeout, "cannot connect: timed out", file: name, isRetryable: true)
    case ENETUNREACH, EHOSTUNREACH, ECONNRESET, ECONNABORTED:
      return VMDKError(.serverNotAvailable, "cannot connect: \(text)", file: name, isRetryable: true)
    default:
      return VMDKError(.serverNotAvailable, "cannot connect: \(text)", file: name)
    }
  }

  // MARK: Sending and receiving

  static func sendAll(fd: Int32, _ bytes: [UInt8], name: String) throws {
    try bytes.withUnsafeBytes { try sendAll(fd: fd, $0, name: name) }
  }

  static func sendAll(fd: Int32, _ buffer: UnsafeRawBufferPointer, name: String) throws {
    var done = 0
    while done < buffer.count {
      let n = send(fd, buffer.baseAddress! + done, buffer.count - done, Int32(MSG_NOSIGNAL))
      if n > 0 {
        done += n
        continue
      }
      let err = errno
      if n < 0 && err == EINTR { continue }
      throw transferError(err, name: name, doing: "send")
    }
  }

  static func recvAll(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, name: String) throws {
    var done = 0
    while done < buffer.count {
      let n = recvSocket(fd, buffer.baseAddress! + done, buffer.count - done, 0)
      if n > 0 {
        done += n
        continue
      }
      if n == 0 {
        throw VMDKError(
          .connectionLost, "the server closed the connection in the middle of a reply", file: name,
          isRetryable: true)
      }
      let err = errno
      if err == EINTR { continue }
      throw transferError(err, name: name, doing: "receive")
    }
  }

  static func recvBytes(fd: Int32, _ count: Int, name: String) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    try bytes.withUnsafeMutableBytes { try recvAll(fd: fd, into: $0, name: name) }
    return bytes
  }

  static func transferError(_ err: Int32, name: String, doing: String) -> VMDKError {
    let text = String(cString: strerror(err))
    switch err {
    case EAGAIN, EWOULDBLOCK, ETIMEDOUT:
      return VMDKError(.timeout, "cannot \(doing): timed out", file: name, isRetryable: true)
    case EPIPE, ECONNRESET, ECONNABORTED, ENOTCONN, ESHUTDOWN:
      return VMDKError(.connectionLost, "cannot \(doing): \(text)", file: name, isRetryable: true)
    default:
      return VMDKError(.connectionLost, "cannot \(doing): \(text)", file: name, isRetryable: true)
    }
  }
}

extension Net {
  static func closedError(_ name: String) -> VMDKError {
    VMDKError(.connectionLost, "the connection is closed", file: name, isRetryable: true)
  }

  /// Receives at most `buffer.count` bytes, at least one; 0 at the end of the stream.
  static func recvSome(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, name: String) throws -> Int {
    while true {
      let n = recvSocket(fd, buffer.baseAddress!, buffer.count, 0)
      if n >= 0 { return n }
      let err = errno
      if err == EINTR { continue }
      throw transferError(err, name: name, doing: "receive")
    }
  }
}
