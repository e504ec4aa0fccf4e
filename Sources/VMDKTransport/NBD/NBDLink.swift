// One connection to an NBD server in the transmission phase: the channel (a socket or a TLS
// session), what the handshake agreed on, the cookie counter and a scratch buffer for request
// and reply headers. NBDClient replaces its link when it reconnects.

/// A connected, negotiated NBD session.
final class NBDLink {
  let channel: any ByteChannel
  let negotiated: NBDNegotiated
  /// The next cookie; `takeCookies` hands out consecutive runs.
  private var cookie: UInt64 = 1
  /// Room for one request header or one reply header.
  let scratch: UnsafeMutableRawBufferPointer

  /// A link over a channel whose handshake is done (NBDLink.open; the fuzz target and tests
  /// make one over a fake server).
  init(channel: any ByteChannel, negotiated: NBDNegotiated) {
    self.channel = channel
    self.negotiated = negotiated
    scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
  }

  deinit {
    channel.close()
    scratch.deallocate()
  }

  /// Connects and runs the handshake. `options.connectTimeout` bounds the connect and the
  /// handshake together (each wait for the server gets what is left of it); then the read and
  /// write timeouts apply to the socket. With `tls` the session runs over TLS from
  /// NBD_OPT_STARTTLS on.
  static func open(
    _ address: SocketAddress, export: String, writable: Bool, tls: Bool, options: TransportOptions, name: String
  ) throws -> NBDLink {
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(max(options.connectTimeout, 0))
    let fd = try Net.connect(
      address, name: name, timeout: options.connectTimeout, sendBuffer: options.sendBufferBytes,
      receiveBuffer: options.receiveBufferBytes)
    let socket = SocketChannel(fd: fd, name: name)
    var host: String?
    if case .tcp(let h, _) = address { host = h }
    let (channel, negotiated) = try NBDHandshake.run(
      socket: socket, export: export, tls: tls ? options.tls : nil, host: host, name: name
    ) {
      guard options.connectTimeout > 0 else { return }
      let left = clock.now.duration(to: deadline)
      guard left > .zero else {
        throw VMDKError(
          .timeout, "the handshake took longer than the \(options.connectTimeout) s connect timeout", file: name,
          isRetryable: true)
      }
      // At least a millisecond: a zero timeout would mean no timeout at all.
      let seconds = max(Double(left.components.seconds) + Double(left.components.attoseconds) * 1e-18, 0.001)
      Net.setTimeouts(fd: fd, receive: seconds, send: seconds)
    }
    let link = NBDLink(channel: channel, negotiated: negotiated)
    if writable && negotiated.flags & NBDWire.transReadOnly != 0 {
      throw VMDKError(.fileReadOnly, "the server exports '\(export)' read-only", file: name)
    }
    Net.setTimeouts(fd: fd, receive: options.readTimeout, send: options.writeTimeout)
    return link
  }

  /// `count` consecutive cookies; returns the first.
  func takeCookies(_ count: Int) -> UInt64 {
    defer { cookie &+= UInt64(count) }
    return cookie
  }

  /// Says goodbye (NBD_CMD_DISC, best effort) and closes.
  func disconnect() {
    scratch.storeBE(NBDWire.requestMagic, at: 0)
    scratch.storeBE(UInt16(0), at: 4)
    scratch.storeBE(NBDWire.cmdDisc, at: 6)
    scratch.storeBE(takeCookies(1), at: 8)
    scratch.storeBE(UInt64(0), at: 16)
    scratch.storeBE(UInt32(0), at: 24)
    try? channel.sendAll(UnsafeRawBufferPointer(rebasing: scratch[0..<NBDWire.requestHeaderBytes]))
    channel.close()
  }
}
