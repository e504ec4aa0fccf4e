// The NBD handshake: the fixed newstyle greeting, STARTTLS when asked for, and option haggling
// (structured replies, base:allocation, GO with the export name and NBD_INFO_BLOCK_SIZE).

/// What the handshake agreed on.
struct NBDNegotiated {
  var size: UInt64
  var flags: UInt16
  var structured: Bool
  var context: UInt32?
  /// The server's block size constraints (NBD_INFO_BLOCK_SIZE), or 1 and unbounded.
  var minimumBlock: UInt32 = 1
  var maximumPayload: UInt32 = UInt32.max
}

/// The handshake on one connection. `beforeEachReply` runs before every wait for the server
/// (NBDLink uses it to keep the whole handshake within the connect timeout).
struct NBDHandshake {
  /// The largest option reply accepted (an export name, a message, a context name).
  static let maxOptionReply = 1 << 20

  private var channel: any ByteChannel
  private let name: String
  private let beforeEachReply: () throws -> Void

  /// Runs the handshake on `socket`. With `tls`, it sends NBD_OPT_STARTTLS right after the
  /// greeting and continues over a TLSChannel (verifying the server as `tls` says, against
  /// `host`). Returns the channel to speak over from then on (the socket itself, or the TLS
  /// session that now owns it).
  static func run(
    socket: SocketChannel, export: String, tls: TLSOptions?, host: String?, name: String,
    beforeEachReply: @escaping () throws -> Void
  ) throws -> (any ByteChannel, NBDNegotiated) {
    var h = NBDHandshake(channel: socket, name: name, beforeEachReply: beforeEachReply)
    try h.greet()
    if let tls {
      try h.startTLS()
      try beforeEachReply()
      h.channel = try TLSChannel(socket: socket, options: tls, host: host, name: name)
    }
    return (h.channel, try h.haggle(export: export))
  }

  /// The handshake without TLS over any channel (the fuzz target and tests speak to a fake
  /// server through one). Returns what it agreed on.
  static func run(channel: any ByteChannel, export: String, name: String) throws -> NBDNegotiated {
    let h = NBDHandshake(channel: channel, name: name, beforeEachReply: {})
    try h.greet()
    return try h.haggle(export: export)
  }

  private func fail(_ what: String) -> VMDKError {
    VMDKError(.protocolError, "handshake: \(what)", file: name)
  }

  /// NBDMAGIC, IHAVEOPT and the server's flags; answers with the client's flags.
  private func greet() throws {
    try beforeEachReply()
    var d = NBDDecoder(try channel.recvBytes(18))
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
    try channel.sendAll(e.bytes)
  }

  /// NBD_OPT_STARTTLS: the server must answer ACK; then the TLS handshake starts on the socket.
  private func startTLS() throws {
    try sendOption(NBDWire.optStartTLS, [])
    let (type, payload) = try readOptionReply(option: NBDWire.optStartTLS)
    guard type == NBDWire.repAck else {
      let message = String(decoding: payload, as: UTF8.self)
      let detail = message.isEmpty ? "" : " (\(message))"
      throw VMDKError(
        .tlsFailure, "\(NBDClient.startTLSRefused) (reply 0x\(String(type, radix: 16)))\(detail)", file: name)
    }
  }

  /// Structured replies, base:allocation and GO.
  private func haggle(export: String) throws -> NBDNegotiated {
    let structured = try structuredReplies()
    let context = structured ? try allocationContext(export: export) : nil
    var n = try go(export: export)
    n.structured = structured
    n.context = context
    return n
  }

  private func structuredReplies() throws -> Bool {
    try sendOption(NBDWire.optStructuredReply, [])
    let (type, _) = try readOptionReply(option: NBDWire.optStructuredReply)
    if type == NBDWire.repAck { return true }
    if type & NBDWire.repErrorBit != 0 { return false }
    throw fail("reply \(type) to STRUCTURED_REPLY")
  }

  /// The id the server gave base:allocation, or nil when it offers no such context.
  private func allocationContext(export: String) throws -> UInt32? {
    var o = NBDEncoder()
    o.u32(UInt32(export.utf8.count))
    o.string(export)
    o.u32(1)
    o.u32(UInt32(NBDWire.baseAllocation.utf8.count))
    o.string(NBDWire.baseAllocation)
    try sendOption(NBDWire.optSetMetaContext, o.bytes)
    var context: UInt32?
    while true {
      let (type, payload) = try readOptionReply(option: NBDWire.optSetMetaContext)
      if type == NBDWire.repAck || type & NBDWire.repErrorBit != 0 { return context }
      guard type == NBDWire.repMetaContext, payload.count >= 4 else {
        throw fail("reply \(type) of \(payload.count) bytes to SET_META_CONTEXT")
      }
      var p = NBDDecoder(payload)
      let id = p.u32()
      if String(decoding: p.take(p.remaining), as: UTF8.self) == NBDWire.baseAllocation { context = id }
    }
  }

  /// NBD_OPT_GO asking for NBD_INFO_BLOCK_SIZE; NBD_INFO_EXPORT is mandatory in the answer.
  private func go(export: String) throws -> NBDNegotiated {
    var o = NBDEncoder()
    o.u32(UInt32(export.utf8.count))
    o.string(export)
    o.u16(1)
    o.u16(NBDWire.infoBlockSize)
    try sendOption(NBDWire.optGo, o.bytes)
    var info: (UInt64, UInt16)?
    var blocks: (UInt32, UInt32)?
    while true {
      let (type, payload) = try readOptionReply(option: NBDWire.optGo)
      if type == NBDWire.repAck { break }
      if type & NBDWire.repErrorBit != 0 {
        throw goError(type, message: String(decoding: payload, as: UTF8.self), export: export)
      }
      guard type == NBDWire.repInfo, payload.count >= 2 else { throw fail("reply \(type) to GO") }
      var p = NBDDecoder(payload)
      switch p.u16() {
      case NBDWire.infoExport:
        guard payload.count == 12 else { throw fail("NBD_INFO_EXPORT of \(payload.count) bytes") }
        info = (p.u64(), p.u16())
      case NBDWire.infoBlockSize:
        guard payload.count == 14 else { throw fail("NBD_INFO_BLOCK_SIZE of \(payload.count) bytes") }
        blocks = try blockSizes(minimum: p.u32(), preferred: p.u32(), maximum: p.u32())
      default: break  // information not asked for: ignored, as the protocol allows
      }
    }
    guard let (size, flags) = info else { throw fail("GO succeeded without NBD_INFO_EXPORT") }
    guard size <= UInt64(Int64.max) else { throw fail("an export of \(size) bytes") }
    var n = NBDNegotiated(size: size, flags: flags, structured: false, context: nil)
    if let (minimum, maximum) = blocks {
      n.minimumBlock = minimum
      n.maximumPayload = maximum
    }
    return n
  }

  /// Checks NBD_INFO_BLOCK_SIZE (the protocol's rules: powers of two, minimum at most 64 KiB,
  /// the maximum a multiple of the minimum or 2^32-1) and returns (minimum, maximum payload).
  private func blockSizes(minimum: UInt32, preferred: UInt32, maximum: UInt32) throws -> (
    UInt32, UInt32
  ) {
    guard minimum.nonzeroBitCount == 1, minimum <= 1 << 16, preferred.nonzeroBitCount == 1, preferred >= minimum,
      maximum >= minimum, maximum == UInt32.max || maximum % minimum == 0
    else {
      throw fail("block sizes minimum \(minimum), preferred \(preferred), maximum \(maximum)")
    }
    return (minimum, maximum)
  }

  private func sendOption(_ option: UInt32, _ data: [UInt8]) throws {
    var e = NBDEncoder()
    e.u64(NBDWire.iHaveOpt)
    e.u32(option)
    e.u32(UInt32(data.count))
    e.bytes += data
    try channel.sendAll(e.bytes)
  }

  /// One option reply: its type and payload (at most `maxOptionReply` bytes). A server that
  /// answers any option with NBD_REP_ERR_TLS_REQD wants nbds://: that is a `tlsFailure`.
  private func readOptionReply(option: UInt32) throws -> (UInt32, [UInt8]) {
    try beforeEachReply()
    var d = NBDDecoder(try channel.recvBytes(20))
    let magic = d.u64()
    let echoed = d.u32()
    let type = d.u32()
    let length = d.u32()
    guard magic == NBDWire.optionReplyMagic, echoed == option else {
      throw VMDKError(.protocolError, "handshake: a bad reply to option \(option)", file: name)
    }
    guard length <= UInt32(Self.maxOptionReply) else {
      throw VMDKError(.protocolError, "handshake: an option reply of \(length) bytes", file: name)
    }
    let payload = try channel.recvBytes(Int(length))
    if type == NBDWire.repErrTLSRequired {
      throw VMDKError(.tlsFailure, "the server requires TLS: use nbds://", file: name)
    }
    return (type, payload)
  }

  private func goError(_ type: UInt32, message: String, export: String) -> VMDKError {
    let detail = message.isEmpty ? "" : " (\(message))"
    switch type {
    case NBDWire.repErrUnknown:
      return VMDKError(.serverNotAvailable, "the server has no export named '\(export)'\(detail)", file: name)
    case NBDWire.repErrShutdown:
      return VMDKError(
        .serverShutdown, "the server is shutting down; export '\(export)'\(detail)", file: name, isRetryable: true)
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
