// One persistent HTTP/1.1 connection (keep-alive) to a server, plain or TLS: writes a request,
// reads a response head into a buffer of fixed size, and a body straight into the caller's
// memory. It knows nothing about ranges or retries; HTTPStore decides what a response means.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// A keep-alive connection to the server of one URL. Unchecked Sendable: one store uses it
/// at a time, under its lock, between taking it from an HTTPConnectionPool and giving it back.
final class HTTPConnection: @unchecked Sendable {
  /// The URL this connection was made for, for messages.
  let name: String
  private let channel: any ByteChannel
  /// Received bytes not consumed yet: `buffer[start..<end]`. Holds at most one header block
  /// (and whatever part of a body arrived with it).
  private var buffer = [UInt8](repeating: 0, count: HTTPResponse.maxHeaderBytes)
  private var start = 0
  private var end = 0
  /// Responses read completely on this connection: a failure before the first byte of a
  /// response on a reused connection is usually the server closing an idle connection.
  private(set) var responsesRead = 0
  /// Bytes received on this connection, heads and bodies.
  private(set) var bytesReceived: UInt64 = 0
  /// Whether the connection may carry another request.
  private(set) var isOpen = true

  /// Connects to the server of `url` within `options.connectTimeout`, then bounds every receive
  /// by `options.readTimeout` and every send by `options.writeTimeout`; runs the TLS handshake
  /// for https.
  init(_ url: HTTPURL, options: TransportOptions, name: String) throws {
    self.name = name
    let socket = try SocketChannel.connect(
      .tcp(host: url.host, port: url.port), name: name, timeout: options.connectTimeout)
    HTTPConnection.setTimeout(socket.fd, SO_RCVTIMEO, options.readTimeout)
    HTTPConnection.setTimeout(socket.fd, SO_SNDTIMEO, options.writeTimeout)
    if let bytes = options.receiveBufferBytes { HTTPConnection.setBuffer(socket.fd, SO_RCVBUF, bytes) }
    if let bytes = options.sendBufferBytes { HTTPConnection.setBuffer(socket.fd, SO_SNDBUF, bytes) }
    if url.isTLS {
      channel = try TLSChannel(socket: socket, options: options.tls, host: url.host, name: name)
    } else {
      channel = socket
    }
  }

  /// A connection over a channel that is already connected (the fuzz target and tests serve
  /// a fake server's bytes through one).
  init(channel: any ByteChannel, name: String) {
    self.name = name
    self.channel = channel
  }

  deinit { close() }

  func close() {
    guard isOpen else { return }
    isOpen = false
    channel.close()
  }

  /// Sends a request without a body: `METHOD TARGET HTTP/1.1`, Host, the extra fields, and
  /// `Connection: keep-alive`.
  func send(method: String, url: HTTPURL, fields: [(String, String)]) throws {
    guard isOpen else { throw Net.closedError(name) }
    var text = "\(method) \(url.requestTarget) HTTP/1.1\r\nHost: \(url.hostHeader)\r\n"
    for (name, value) in fields { text += "\(name): \(value)\r\n" }
    text += "User-Agent: vmdk-toolkit\r\nAccept-Encoding: identity\r\nConnection: keep-alive\r\n\r\n"
    try channel.sendAll(Array(text.utf8))
  }

  /// Reads a response head, skipping interim (1xx) responses. A head longer than
  /// `HTTPResponse.maxHeaderBytes` is `protocolError`; the end of the stream in the middle of
  /// one is `connectionLost` (retryable).
  func readHead() throws -> HTTPResponse {
    for _ in 0..<8 {
      let block = try readHeaderBlock()
      let response = try HTTPResponse.parse(block, url: name)
      if response.status == 101 {
        throw VMDKError(.protocolError, "the server switched protocols (101) unasked", file: name)
      }
      if response.status >= 200 { return response }
    }
    throw VMDKError(.protocolError, "the server sent more than 8 interim (1xx) responses", file: name)
  }

  /// Receives exactly `buffer.count` body bytes into `buffer`, first those that arrived with
  /// the head, then straight from the socket; `received` counts what has landed, so that a
  /// caller can resume after a failure.
  func readBody(into buffer: UnsafeMutableRawBufferPointer, received: inout Int) throws {
    let fromBuffer = min(end - start, buffer.count)
    if fromBuffer > 0 {
      self.buffer.withUnsafeBytes { src in
        buffer.baseAddress!.copyMemory(from: src.baseAddress! + start, byteCount: fromBuffer)
      }
      start += fromBuffer
      received += fromBuffer
    }
    var done = fromBuffer
    while done < buffer.count {
      let n = try channel.recvSome(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
      guard n > 0 else {
        throw VMDKError(
          .connectionLost, "the server closed the connection after \(done) of \(buffer.count) body bytes",
          file: name, isRetryable: true)
      }
      done += n
      received += n
      bytesReceived += UInt64(n)
    }
    responsesRead += 1
  }

  /// Notes that a response without a body (HEAD) was read completely.
  func finishedResponseWithoutBody() { responsesRead += 1 }

  // MARK: Receiving the head

  /// The bytes of the next header block, without its blank line; consumes it from the buffer.
  private func readHeaderBlock() throws -> ArraySlice<UInt8> {
    // Bytes after `start` already searched (less three, for a blank line split by a receive).
    var searched = 0
    while true {
      if let blockEnd = HTTPConnection.blankLine(in: buffer, from: start + searched, to: end, startOfBlock: start) {
        let block = buffer[start..<blockEnd.headEnd]
        start = blockEnd.bodyStart
        return block
      }
      searched = max(0, end - start - 3)
      try receiveMore()
    }
  }

  /// Receives at least one more byte into the buffer, moving unconsumed bytes to its front
  /// first. A full buffer is a header block that is too long.
  private func receiveMore() throws {
    if start > 0 {
      buffer.withUnsafeMutableBytes { raw in
        raw.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: end - start)
      }
      end -= start
      start = 0
    }
    guard end < buffer.count else {
      throw VMDKError(
        .protocolError, "the server's response head is longer than \(HTTPResponse.maxHeaderBytes) bytes", file: name)
    }
    let n = try buffer.withUnsafeMutableBytes { raw in
      try channel.recvSome(into: UnsafeMutableRawBufferPointer(rebasing: raw[end...]))
    }
    guard n > 0 else {
      let what = end == 0 ? "before answering" : "in the middle of a response head"
      throw VMDKError(.connectionLost, "the server closed the connection \(what)", file: name, isRetryable: true)
    }
    end += n
    bytesReceived += UInt64(n)
  }

  /// Finds the blank line ending a header block in `bytes[from..<to]`: CRLF CRLF (or LF LF).
  /// Returns where the head ends (before the blank line) and where the body starts.
  private static func blankLine(in bytes: [UInt8], from: Int, to: Int, startOfBlock: Int) -> (
    headEnd: Int, bodyStart: Int
  )? {
    let lf = UInt8(ascii: "\n")
    let cr = UInt8(ascii: "\r")
    var i = max(from, startOfBlock)
    while i < to {
      if bytes[i] == lf {
        // LF LF, or LF CR LF: the line before was the last.
        if i + 1 < to && bytes[i + 1] == lf { return (i, i + 2) }
        if i + 2 < to && bytes[i + 1] == cr && bytes[i + 2] == lf {
          return (i > startOfBlock && bytes[i - 1] == cr ? i - 1 : i, i + 3)
        }
      }
      i += 1
    }
    return nil
  }

  // MARK: Socket options

  private static func setTimeout(_ fd: Int32, _ option: Int32, _ seconds: Double) {
    guard seconds > 0 else { return }
    var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1_000_000))
    _ = setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
  }

  private static func setBuffer(_ fd: Int32, _ option: Int32, _ bytes: Int) {
    var value = Int32(clamping: bytes)
    _ = setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<Int32>.size))
  }
}
