// The transmission phase: sends the requests of a batch with up to `window` in flight and
// matches replies to them by cookie. Structured reply chunks of different requests may
// interleave; each chunk names its request. Read data goes straight from the socket into the
// caller's buffer. Every length and offset the server sends is checked against the request
// before it is used.
//
// A transport failure or a reply that breaks the protocol leaves the stream out of step: the
// pump throws and the caller drops the link. An error the server reports in a well-formed
// reply keeps the stream in step: the pump stops sending, drains the replies still due, and
// throws that error wrapped as `NBDPipeline.serverReported`.

struct NBDPipeline {
  let link: NBDLink
  /// The URI, for messages.
  let name: String
  let window: Int
  /// The largest non-data reply chunk accepted.
  static let maxControlPayload = 1 << 20

  /// A marker code for an error the server reported in a well-formed reply: the link stays
  /// usable. The real error is in `underlying`.
  static let serverReported = VMDKError.Code(-1, "server reported")

  /// Runs the batch's waiting requests until none is in flight.
  func pump(_ batch: inout NBDBatch) throws {
    batch.cookieBase = link.takeCookies(batch.requests.count)
    var inFlight = 0
    while true {
      while batch.failure == nil, inFlight < window, let i = batch.takeWaiting() {
        try send(&batch, i)
        inFlight += 1
      }
      if inFlight == 0 { break }
      if try receive(&batch) { inFlight -= 1 }
    }
    if let failure = batch.failure {
      throw VMDKError(Self.serverReported, failure.message, file: name, offset: failure.offset, underlying: failure)
    }
  }

  // MARK: Requests

  private func send(_ batch: inout NBDBatch, _ i: Int) throws {
    let (offset, length) = batch.range(i)
    let h = link.scratch
    h.storeBE(NBDWire.requestMagic, at: 0)
    h.storeBE(UInt16(0), at: 4)
    h.storeBE(batch.command, at: 6)
    h.storeBE(batch.cookieBase &+ UInt64(i), at: 8)
    h.storeBE(batch.command == NBDWire.cmdFlush ? 0 : offset, at: 16)
    h.storeBE(batch.command == NBDWire.cmdFlush ? 0 : length, at: 24)
    batch.markSent(i)
    try link.channel.sendAll(UnsafeRawBufferPointer(rebasing: h[0..<NBDWire.requestHeaderBytes]))
    switch batch.payload {
    case .write(let source):
      let from = Int(offset - batch.start)
      try link.channel.sendAll(UnsafeRawBufferPointer(rebasing: source[from..<(from + Int(length))]))
    case .repeated(let source):
      try link.channel.sendAll(UnsafeRawBufferPointer(rebasing: source[0..<Int(length)]))
    case .none, .read: break
    }
  }

  // MARK: Replies

  /// Receives one simple reply or one structured chunk; true when it finished a request.
  private func receive(_ batch: inout NBDBatch) throws -> Bool {
    let h = link.scratch
    try link.channel.recvAll(into: UnsafeMutableRawBufferPointer(rebasing: h[0..<16]))
    let magic = h.loadBE(UInt32.self, at: 0)
    if magic == NBDWire.simpleReplyMagic {
      let i = try request(of: h.loadBE(UInt64.self, at: 8), in: batch)
      try simpleReply(&batch, i, error: h.loadBE(UInt32.self, at: 4))
      return true
    }
    guard magic == NBDWire.structuredReplyMagic, link.negotiated.structured else {
      throw protocolError("a reply with magic 0x\(String(magic, radix: 16))", batch.start)
    }
    try link.channel.recvAll(into: UnsafeMutableRawBufferPointer(rebasing: h[16..<20]))
    let flags = h.loadBE(UInt16.self, at: 4)
    let type = h.loadBE(UInt16.self, at: 6)
    let i = try request(of: h.loadBE(UInt64.self, at: 8), in: batch)
    let length = h.loadBE(UInt32.self, at: 16)
    try chunk(&batch, i, type: type, length: length)
    guard flags & NBDWire.replyFlagDone != 0 else { return false }
    try finish(&batch, i)
    return true
  }

  /// The request a cookie names; it must be in flight.
  private func request(of cookie: UInt64, in batch: NBDBatch) throws -> Int {
    let i = cookie &- batch.cookieBase
    guard i < UInt64(batch.requests.count), batch.requests[Int(i)].state == .inFlight else {
      throw protocolError("a reply to request \(cookie), which is not in flight", batch.start)
    }
    return Int(i)
  }

  private func simpleReply(_ batch: inout NBDBatch, _ i: Int, error: UInt32) throws {
    let (offset, length) = batch.range(i)
    if error != 0 {
      record(&batch, serverError(error, offset: offset, what: batch.what, message: nil))
      batch.markFailed(i)
      return
    }
    switch batch.command {
    case NBDWire.cmdRead:
      try receiveData(&batch, i, at: offset, count: UInt64(length))
    case NBDWire.cmdBlockStatus:
      throw protocolError("a simple reply without error to block status", offset)
    default: break
    }
    batch.markDone(i)
  }

  /// One structured chunk of request `i`.
  private func chunk(_ batch: inout NBDBatch, _ i: Int, type: UInt16, length: UInt32) throws {
    let (offset, asked) = batch.range(i)
    let end = offset + UInt64(asked)
    let read = batch.command == NBDWire.cmdRead
    switch type {
    case NBDWire.chunkOffsetData where read:
      guard length > 8 else { throw protocolError("a data chunk of \(length) bytes", offset) }
      let at = try receiveU64(at: 20)
      let count = UInt64(length - 8)
      guard at >= offset, at <= end, count <= end - at else {
        throw protocolError("data for \(count) bytes at \(at), outside the request \(offset)+\(asked)", offset)
      }
      try receiveData(&batch, i, at: at, count: count)
    case NBDWire.chunkOffsetHole where read:
      guard length == 12 else { throw protocolError("a hole chunk of \(length) bytes", offset) }
      let at = try receiveU64(at: 20)
      try link.channel.recvAll(into: UnsafeMutableRawBufferPointer(rebasing: link.scratch[28..<32]))
      let count = UInt64(link.scratch.loadBE(UInt32.self, at: 28))
      guard count > 0, at >= offset, at <= end, count <= end - at else {
        throw protocolError("a hole of \(count) bytes at \(at), outside the request \(offset)+\(asked)", offset)
      }
      if case .read(let buffer) = batch.payload {
        let from = Int(at - batch.start)
        UnsafeMutableRawBufferPointer(rebasing: buffer[from..<(from + Int(count))]).initializeMemory(
          as: UInt8.self, repeating: 0)
      }
      batch.cover(i, at: at, count: count)
    case NBDWire.chunkBlockStatus where batch.command == NBDWire.cmdBlockStatus:
      try blockStatusChunk(&batch, offset: offset, end: end, length: length)
    case NBDWire.chunkNone:
      guard length == 0 else { throw protocolError("a NONE chunk of \(length) bytes", offset) }
    default:
      guard type & NBDWire.chunkErrorBit != 0 else {
        throw protocolError("an unexpected reply chunk of type \(type) to \(batch.what)", offset)
      }
      record(&batch, try errorChunk(type: type, length: length, request: offset..<end, what: batch.what))
      batch.markErrored(i)
    }
  }

  /// The last chunk of request `i` arrived: a read must have been covered exactly once.
  private func finish(_ batch: inout NBDBatch, _ i: Int) throws {
    let (offset, _) = batch.range(i)
    if batch.requests[i].errored {
      batch.markFailed(i)
      return
    }
    if batch.command == NBDWire.cmdRead && !batch.coveredExactly(i) {
      throw protocolError("a read reply that overlaps itself or leaves a gap", offset)
    }
    if batch.command == NBDWire.cmdBlockStatus && batch.extents.isEmpty {
      throw protocolError("block status answered no extent", offset)
    }
    batch.markDone(i)
  }

  /// Reads `count` data bytes for request `i` straight into the caller's buffer.
  private func receiveData(_ batch: inout NBDBatch, _ i: Int, at: UInt64, count: UInt64) throws {
    guard case .read(let buffer) = batch.payload else { return }
    let from = Int(at - batch.start)
    try link.channel.recvAll(into: UnsafeMutableRawBufferPointer(rebasing: buffer[from..<(from + Int(count))]))
    batch.cover(i, at: at, count: count)
  }

  private func receiveU64(at index: Int) throws -> UInt64 {
    try link.channel.recvAll(into: UnsafeMutableRawBufferPointer(rebasing: link.scratch[index..<(index + 8)]))
    return link.scratch.loadBE(UInt64.self, at: index)
  }

  /// A base:allocation chunk: (length, flags) pairs from the request's offset on, clipped to
  /// the request.
  private func blockStatusChunk(_ batch: inout NBDBatch, offset: UInt64, end: UInt64, length: UInt32) throws {
    guard length >= 12, (length - 4) % 8 == 0, length <= UInt32(Self.maxControlPayload) else {
      throw protocolError("a block status chunk of \(length) bytes", offset)
    }
    var d = NBDDecoder(try link.channel.recvBytes(Int(length)))
    let id = d.u32()
    guard id == link.negotiated.context, batch.extents.isEmpty else {
      throw protocolError("block status for context \(id), or twice", offset)
    }
    var at = offset
    while d.remaining >= 8 {
      let count = UInt64(d.u32())
      let state = d.u32()
      guard count > 0 else { throw protocolError("an empty block status extent", offset) }
      guard at < end else { continue }  // the last extent may run past the request: clip
      let clipped = min(count, end - at)
      batch.extents.append(
        NBDExtent(
          start: at, length: clipped, isHole: state & NBDWire.stateHole != 0, isZero: state & NBDWire.stateZero != 0))
      at += clipped
    }
  }

  /// An ERROR or ERROR_OFFSET chunk, as the typed error it reports. An ERROR_OFFSET must point
  /// inside the request.
  private func errorChunk(type: UInt16, length: UInt32, request: Range<UInt64>, what: String) throws -> VMDKError {
    let offset = request.lowerBound
    guard length >= 6, length <= UInt32(Self.maxControlPayload) else {
      throw protocolError("an error chunk of \(length) bytes", offset)
    }
    var d = NBDDecoder(try link.channel.recvBytes(Int(length)))
    let error = d.u32()
    let messageLength = Int(d.u16())
    guard messageLength <= d.remaining else {
      throw protocolError("an error message of \(messageLength) bytes in a chunk of \(length)", offset)
    }
    let message = String(decoding: d.take(messageLength), as: UTF8.self)
    var at = offset
    if type == NBDWire.chunkErrorOffset {
      guard d.remaining == 8 else { throw protocolError("an error offset chunk of \(length) bytes", offset) }
      at = d.u64()
      guard request.contains(at) else {
        throw protocolError("an error at \(at), outside the request \(offset)+\(request.count)", offset)
      }
    }
    guard error != 0 else { throw protocolError("an error chunk with error 0", offset) }
    return serverError(error, offset: at, what: what, message: message.isEmpty ? nil : message)
  }

  /// Keeps the error of the lowest offset, so that the caller hears about the first bad byte
  /// whatever order the replies came in.
  private func record(_ batch: inout NBDBatch, _ error: VMDKError) {
    if (error.offset ?? .max) < (batch.failure?.offset ?? .max) || batch.failure == nil { batch.failure = error }
  }

  private func protocolError(_ what: String, _ offset: UInt64) -> VMDKError {
    VMDKError(.protocolError, "the server sent \(what)", file: name, offset: offset)
  }

  /// The typed error for an NBD error number; ENOMEM and ESHUTDOWN may pass when retried.
  private func serverError(_ error: UInt32, offset: UInt64, what: String, message: String?) -> VMDKError {
    let text = message.map { ": \($0)" } ?? ""
    let (code, meaning, retry): (VMDKError.Code, String, Bool)
    switch error {
    case NBDWire.ePerm: (code, meaning, retry) = (.fileAccess, "EPERM", false)
    case NBDWire.eIO: (code, meaning, retry) = (.fileAccess, "EIO", false)
    case NBDWire.eNoMem: (code, meaning, retry) = (.failure, "ENOMEM", true)
    case NBDWire.eInval: (code, meaning, retry) = (.invalidArgument, "EINVAL", false)
    case NBDWire.eNoSpc: (code, meaning, retry) = (.diskFull, "ENOSPC", false)
    case NBDWire.eOverflow: (code, meaning, retry) = (.outOfRange, "EOVERFLOW", false)
    case NBDWire.eNotSup: (code, meaning, retry) = (.notSupported, "ENOTSUP", false)
    case NBDWire.eShutdown: (code, meaning, retry) = (.serverShutdown, "ESHUTDOWN", true)
    default: (code, meaning, retry) = (.failure, "error \(error)", false)
    }
    return VMDKError(
      code, "the server refused the \(what) (\(meaning))\(text)", file: name, offset: offset, isRetryable: retry)
  }
}
