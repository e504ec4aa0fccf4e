// The socket side of NBDClient: connecting (TCP through getaddrinfo, or a Unix socket), the
// fixed newstyle handshake and option haggling, and exact sends and receives that turn errno
// values into the network error codes.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

// The C calls by names that NBDClient's own methods (close) do not shadow.
func closeSocket(_ fd: Int32) { _ = close(fd) }
private func connectSocket(_ fd: Int32, _ address: UnsafePointer<sockaddr>!, _ length: socklen_t) -> Int32 {
  connect(fd, address, length)
}
private func recvSocket(_ fd: Int32, _ buffer: UnsafeMutableRawPointer!, _ count: Int, _ flags: Int32) -> Int {
  recv(fd, buffer, count, flags)
}

extension NBDClient {
  // MARK: Connecting

  static func connect(_ address: Address, name: String, timeout: Double) throws -> Int32 {
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
      let fd = try socketFor(family: AF_UNIX, name: name, timeout: timeout)
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
        let fd = try socketFor(family: ai.pointee.ai_family, name: name, timeout: timeout)
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

  private static func socketFor(family: Int32, name: String, timeout: Double) throws -> Int32 {
    let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else {
      let err = errno
      throw VMDKError(.failure, "cannot make a socket: \(String(cString: strerror(err)))", file: name)
    }
    if timeout > 0 {
      var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
      let size = socklen_t(MemoryLayout<timeval>.size)
      _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, size)
      _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, size)
    }
    return fd
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

  private static func transferError(_ err: Int32, name: String, doing: String) -> VMDKError {
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

  // MARK: Handshake

  struct Negotiated {
    var size: UInt64
    var flags: UInt16
    var structured: Bool
    var context: UInt32?
  }

  static func negotiate(fd: Int32, export: String, name: String) throws -> Negotiated {
    func fail(_ what: String) -> VMDKError {
      VMDKError(.protocolError, "handshake: \(what)", file: name)
    }
    var d = NBDDecoder(try recvBytes(fd: fd, 18, name: name))
    guard d.u64() == NBDWire.nbdMagic else { throw fail("the server did not start with NBDMAGIC") }
    let second = d.u64()
    if second == NBDWire.oldstyleMagic { throw fail("an oldstyle server, which is not supported") }
    guard second == NBDWire.iHaveOpt else { throw fail("the server did not send IHAVEOPT") }
    let serverFlags = d.u16()
    guard serverFlags & NBDWire.flagFixedNewstyle != 0 else {
      throw fail("the server does not speak fixed newstyle")
    }
    var clientFlags = UInt32(NBDWire.flagFixedNewstyle)
    if serverFlags & NBDWire.flagNoZeroes != 0 { clientFlags |= UInt32(NBDWire.flagNoZeroes) }
    var e = NBDEncoder()
    e.u32(clientFlags)
    try sendAll(fd: fd, e.bytes, name: name)

    // Structured replies.
    try sendOption(fd: fd, NBDWire.optStructuredReply, [], name: name)
    var structured = false
    while true {
      let (type, _) = try readOptionReply(fd: fd, option: NBDWire.optStructuredReply, name: name)
      if type == NBDWire.repAck {
        structured = true
        break
      }
      if type & NBDWire.repErrorBit != 0 { break }
      throw fail("reply \(type) to STRUCTURED_REPLY")
    }

    // base:allocation.
    var context: UInt32?
    if structured {
      var o = NBDEncoder()
      o.u32(UInt32(export.utf8.count))
      o.string(export)
      o.u32(1)
      o.u32(UInt32(NBDWire.baseAllocation.utf8.count))
      o.string(NBDWire.baseAllocation)
      try sendOption(fd: fd, NBDWire.optSetMetaContext, o.bytes, name: name)
      while true {
        let (type, payload) = try readOptionReply(fd: fd, option: NBDWire.optSetMetaContext, name: name)
        if type == NBDWire.repAck || type & NBDWire.repErrorBit != 0 { break }
        guard type == NBDWire.repMetaContext, payload.count >= 4 else {
          throw fail("reply \(type) of \(payload.count) bytes to SET_META_CONTEXT")
        }
        var p = NBDDecoder(payload)
        let id = p.u32()
        if String(decoding: p.take(p.remaining), as: UTF8.self) == NBDWire.baseAllocation { context = id }
      }
    }

    // GO.
    var o = NBDEncoder()
    o.u32(UInt32(export.utf8.count))
    o.string(export)
    o.u16(1)
    o.u16(NBDWire.infoExport)
    try sendOption(fd: fd, NBDWire.optGo, o.bytes, name: name)
    var info: (UInt64, UInt16)?
    while true {
      let (type, payload) = try readOptionReply(fd: fd, option: NBDWire.optGo, name: name)
      if type == NBDWire.repAck { break }
      if type & NBDWire.repErrorBit != 0 {
        throw goError(type, message: String(decoding: payload, as: UTF8.self), export: export, name: name)
      }
      guard type == NBDWire.repInfo, payload.count >= 2 else { throw fail("reply \(type) to GO") }
      var p = NBDDecoder(payload)
      if p.u16() == NBDWire.infoExport {
        guard payload.count == 12 else { throw fail("NBD_INFO_EXPORT of \(payload.count) bytes") }
        info = (p.u64(), p.u16())
      }
    }
    guard let (size, flags) = info else { throw fail("GO succeeded without NBD_INFO_EXPORT") }
    guard size <= UInt64(Int64.max) else { throw fail("an export of \(size) bytes") }
    return Negotiated(size: size, flags: flags, structured: structured, context: context)
  }

  private static func sendOption(fd: Int32, _ option: UInt32, _ data: [UInt8], name: String) throws {
    var e = NBDEncoder()
    e.u64(NBDWire.iHaveOpt)
    e.u32(option)
    e.u32(UInt32(data.count))
    e.bytes += data
    try sendAll(fd: fd, e.bytes, name: name)
  }

  /// One option reply: its type and payload (at most `maxControlPayload` bytes).
  private static func readOptionReply(fd: Int32, option: UInt32, name: String) throws -> (UInt32, [UInt8]) {
    var d = NBDDecoder(try recvBytes(fd: fd, 20, name: name))
    let magic = d.u64()
    let echoed = d.u32()
    let type = d.u32()
    let length = d.u32()
    guard magic == NBDWire.optionReplyMagic, echoed == option else {
      throw VMDKError(.protocolError, "handshake: a bad reply to option \(option)", file: name)
    }
    guard length <= UInt32(maxControlPayload) else {
      throw VMDKError(.protocolError, "handshake: an option reply of \(length) bytes", file: name)
    }
    return (type, try recvBytes(fd: fd, Int(length), name: name))
  }

  private static func goError(_ type: UInt32, message: String, export: String, name: String) -> VMDKError {
    let detail = message.isEmpty ? "" : " (\(message))"
    switch type {
    case NBDWire.repErrUnknown:
      return VMDKError(.serverNotAvailable, "the server has no export named '\(export)'\(detail)", file: name)
    case NBDWire.repErrShutdown:
      return VMDKError(
        .serverShutdown, "the server is shutting down; export '\(export)'\(detail)", file: name, isRetryable: true)
    case NBDWire.repErrTLSRequired:
      return VMDKError(.notSupported, "the server requires TLS for export '\(export)'\(detail)", file: name)
    case NBDWire.repErrPolicy:
      return VMDKError(.serverNotAvailable, "the server's policy refuses export '\(export)'\(detail)", file: name)
    case NBDWire.repErrBlockSizeRequired:
      return VMDKError(.notSupported, "export '\(export)' requires block size negotiation\(detail)", file: name)
    default:
      return VMDKError(
        .serverNotAvailable,
        "the server refused export '\(export)' (reply 0x\(String(type, radix: 16)))\(detail)", file: name)
    }
  }
}
