// The NBD handshake: the fixed newstyle greeting and option haggling (structured replies,
// base:allocation, GO with the export name).

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif


extension NBDClient {
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
    var d = NBDDecoder(try Net.recvBytes(fd: fd, 18, name: name))
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
    try Net.sendAll(fd: fd, e.bytes, name: name)

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
    try Net.sendAll(fd: fd, e.bytes, name: name)
  }

  /// One option reply: its type and payload (at most `maxControlPayload` bytes).
  private static func readOptionReply(fd: Int32, option: UInt32, name: String) throws -> (UInt32, [UInt8]) {
    var d = NBDDecoder(try Net.recvBytes(fd: fd, 20, name: name))
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
    return (type, try Net.recvBytes(fd: fd, Int(length), name: name))
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
