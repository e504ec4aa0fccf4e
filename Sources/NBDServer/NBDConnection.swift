// NBDConnection: one client, from the greeting to the end. The handshake (fixed newstyle
// options) runs on the connection's thread; in transmission the thread reads and checks each
// request, the server's workers serve it, and the connection's sender thread writes the
// replies (each whole, in the order they are ready), so that no worker ever waits for a
// client to read. Over TLS the reader and the sender share the session (ServerTLSSession).

import Dispatch
import Foundation
import Logging
import VMDKBlock

/// Counts what a connection has in flight (requests and payload bytes); only the connection's
/// reader waits, the workers release.
final class InFlightBudget: @unchecked Sendable {
  private let condition = NSCondition()
  private var requests = 0
  private var bytes = 0
  let maxRequests: Int
  let maxBytes: Int

  init(maxRequests: Int, maxBytes: Int) {
    self.maxRequests = maxRequests
    self.maxBytes = maxBytes
  }

  /// Waits for room, takes it; the requests in flight now.
  @discardableResult
  func acquire(bytes n: Int) -> Int {
    condition.lock()
    defer { condition.unlock() }
    while requests >= maxRequests || (bytes > 0 && bytes + n > maxBytes) { condition.wait() }
    requests += 1
    bytes += n
    return requests
  }

  func release(bytes n: Int) {
    condition.lock()
    requests -= 1
    bytes -= n
    condition.broadcast()
    condition.unlock()
  }

  /// Waits until nothing is in flight.
  func drain() {
    condition.lock()
    while requests > 0 { condition.wait() }
    condition.unlock()
  }
}

final class NBDConnection: @unchecked Sendable {
  let server: NBDServer
  let socket: ClientSocket
  private var noZeroes = false
  private var structured = false
  /// The meta contexts selected by SET_META_CONTEXT and the export they were selected for.
  private var contexts: [String] = []
  private var contextExport: String?
  /// The socket, or after NBD_OPT_STARTTLS the TLS session on it.
  private var channel: any ServerChannel
  private var tlsActive = false
  private var log: Logger { server.log }

  init(server: NBDServer, socket: ClientSocket) {
    self.server = server
    self.socket = socket
    self.channel = socket
  }

  func run() {
    do {
      ServerSocket.setReceiveTimeout(socket.fd, seconds: server.configuration.handshakeTimeoutSeconds)
      guard let export = try handshake() else { return }
      ServerSocket.setReceiveTimeout(socket.fd, seconds: 0)
      try transmission(export)
    } catch {
      // The peer went away or broke the protocol; the socket closes as the connection ends.
    }
  }

  // MARK: Sending

  /// Sends during the handshake (only this thread sends then).
  private func send(_ bytes: [UInt8]) throws {
    try channel.sendAll(bytes)
  }

  // MARK: Handshake

  /// Runs the option phase; the export to serve, or nil when the client left or aborted.
  private func handshake() throws -> NBDExport? {
    let p = NBDProtocol.self
    var greeting = NBDWriter(capacity: 18)
    greeting.u64(p.nbdMagic)
    greeting.u64(p.optionMagic)
    greeting.u16(p.flagFixedNewstyle | p.flagNoZeroes)
    try send(greeting.bytes)
    var flagReader = NBDReader(try channel.recvBytes(4))
    let clientFlags = (try? flagReader.u32("client flags")) ?? 0
    // Unknown client flags: the protocol says to close.
    guard clientFlags & ~UInt32(p.flagFixedNewstyle | p.flagNoZeroes) == 0 else { return nil }
    noZeroes = clientFlags & UInt32(p.flagNoZeroes) != 0
    let fixed = clientFlags & UInt32(p.flagFixedNewstyle) != 0
    for _ in 0..<1024 {
      guard !server.isStopping else { return nil }
      let header: NBDOptionHeader
      do {
        header = try NBDOptionHeader(parsing: try channel.recvBytes(NBDOptionHeader.bytes))
      } catch let e as ConnectionEnd {
        throw e
      } catch {
        return nil  // bad magic: the stream is not NBD
      }
      guard header.length <= UInt32(NBDProtocol.maxOptionBytes) else {
        if fixed {
          try send(nbdOptionError(option: header.option, type: p.repErrTooBig, "option data is too long"))
        }
        return nil
      }
      let data = try channel.recvBytes(Int(header.length))
      if let export = try option(header.option, data, fixed: fixed) { return export }
      if header.option == p.optAbort { return nil }
    }
    return nil  // a client that never ends its options
  }

  /// Answers one option; the export when the option starts transmission.
  private func option(_ option: UInt32, _ data: [UInt8], fixed: Bool) throws -> NBDExport? {
    let p = NBDProtocol.self
    func reply(_ type: UInt32, _ payload: [UInt8] = []) throws {
      try send(nbdOptionReply(option: option, type: type, data: payload))
    }
    func error(_ type: UInt32, _ message: String) throws {
      try send(nbdOptionError(option: option, type: type, message))
    }
    if server.configuration.tls?.mode == .require && !tlsActive && option != p.optStartTLS && option != p.optAbort {
      guard option != p.optExportName else { throw ConnectionEnd.closed }
      try error(p.repErrTLSRequired, "this server requires TLS: NBD_OPT_STARTTLS first")
      return nil
    }
    switch option {
    case p.optExportName:
      guard let name = String(validating: data, as: UTF8.self), let export = server.export(named: name) else {
        throw ConnectionEnd.closed  // the protocol has no error reply here: close
      }
      var w = NBDWriter(capacity: 134)
      w.u64(export.size)
      w.u16(export.transmissionFlags(structuredReplies: false))
      if !noZeroes { w.bytes.append(contentsOf: [UInt8](repeating: 0, count: 124)) }
      structured = false
      contexts = []
      try send(w.bytes)
      return export
    case p.optAbort:
      try? reply(p.repAck)
      return nil
    case p.optList:
      guard data.isEmpty else {
        try error(p.repErrInvalid, "NBD_OPT_LIST takes no data")
        return nil
      }
      for e in server.exports {
        var w = NBDWriter()
        w.u32(UInt32(e.name.utf8.count))
        w.string(e.name)
        try reply(p.repServer, w.bytes)
      }
      try reply(p.repAck)
    case p.optStartTLS:
      guard let context = server.tlsContext else {
        try error(p.repErrPolicy, "this server has no TLS configured")
        return nil
      }
      guard !tlsActive, data.isEmpty else {
        try error(p.repErrInvalid, tlsActive ? "TLS is already on" : "NBD_OPT_STARTTLS takes no data")
        return nil
      }
      try reply(p.repAck)
      do {
        channel = try ServerTLSSession(context: context, socket: socket)
      } catch {
        log.info("\(error)")
        throw ConnectionEnd.closed
      }
      tlsActive = true
      // What was negotiated in the clear does not carry over.
      structured = false
      contexts = []
      contextExport = nil
    case p.optInfo, p.optGo:
      let query: NBDExportQuery
      do { query = try NBDExportQuery(parsing: data) } catch {
        try send(nbdOptionError(option: option, type: p.repErrInvalid, "malformed request: \(error)"))
        return nil
      }
      guard let export = server.export(named: query.name) else {
        try error(p.repErrUnknown, "no export is named '\(query.name)'")
        return nil
      }
      var info = NBDWriter(capacity: 12)
      info.u16(p.infoExport)
      info.u64(export.size)
      info.u16(export.transmissionFlags(structuredReplies: structured))
      try reply(p.repInfo, info.bytes)
      if query.infoRequests.contains(p.infoName) {
        var w = NBDWriter()
        w.u16(p.infoName)
        w.string(export.name)
        try reply(p.repInfo, w.bytes)
      }
      if query.infoRequests.contains(p.infoDescription), let d = export.description {
        var w = NBDWriter()
        w.u16(p.infoDescription)
        w.string(String(d.utf8.prefix(4096)) ?? "")
        try reply(p.repInfo, w.bytes)
      }
      var sizes = NBDWriter(capacity: 14)
      sizes.u16(p.infoBlockSize)
      sizes.u32(NBDExport.blockSizes.minimum)
      sizes.u32(NBDExport.blockSizes.preferred)
      sizes.u32(UInt32(server.configuration.maxPayloadBytes))
      try reply(p.repInfo, sizes.bytes)
      try reply(p.repAck)
      if option == p.optGo {
        // Contexts selected for another export do not apply to this one.
        if let chosen = contextExport, server.export(named: chosen) !== export { contexts = [] }
        return export
      }
    case p.optStructuredReply:
      guard data.isEmpty else {
        try error(p.repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
        return nil
      }
      structured = true
      try reply(p.repAck)
    case p.optListMetaContext, p.optSetMetaContext:
      let setting = option == p.optSetMetaContext
      guard !setting || structured else {
        try error(p.repErrInvalid, "NBD_OPT_SET_META_CONTEXT needs structured replies first")
        return nil
      }
      let query: NBDMetaContextQuery
      do { query = try NBDMetaContextQuery(parsing: data) } catch {
        try send(nbdOptionError(option: option, type: p.repErrInvalid, "malformed request: \(error)"))
        return nil
      }
      guard server.export(named: query.exportName) != nil else {
        try error(p.repErrUnknown, "no export is named '\(query.exportName)'")
        return nil
      }
      let selected = nbdSelectContexts(query.queries, available: NBDExport.metaContexts, listing: !setting)
      for name in selected {
        var w = NBDWriter()
        w.u32(setting ? NBDExport.contextID(name) ?? 0 : 0)
        w.string(name)
        try reply(p.repMetaContext, w.bytes)
      }
      if setting {
        contexts = selected
        contextExport = query.exportName
      }
      try reply(p.repAck)
    default:
      guard fixed else { throw ConnectionEnd.closed }
      try error(p.repErrUnsup, "option \(option) is not supported")
    }
    return nil
  }

  // MARK: Transmission

  private func transmission(_ export: NBDExport) throws {
    let p = NBDProtocol.self
    let config = server.configuration
    let session = NBDSession(
      exportSize: export.size, readOnly: !export.isWritable, structuredReplies: structured,
      contextCount: contexts.count, maxPayload: config.maxPayloadBytes)
    let budget = InFlightBudget(maxRequests: config.maxRequestsInFlight, maxBytes: config.maxBytesInFlight)
    // From here the reader (this thread) and the sender thread use the channel at once.
    (channel as? ServerTLSSession)?.enterConcurrentMode()
    let sender = ReplySender(channel: channel, socket: socket, budget: budget)
    sender.start()
    defer {
      budget.drain()
      sender.finish()
    }
    var header = [UInt8](repeating: 0, count: p.requestHeaderBytes)
    while true {
      do {
        try header.withUnsafeMutableBytes { try channel.recvAll(into: $0) }
      } catch { return }
      guard let request = try? NBDRequest(parsing: header) else { return }  // bad magic: close
      let verdict = nbdCheck(request, session: session)
      let payloadBytes =
        request.type == p.cmdWrite || request.type == p.cmdRead ? min(Int(request.length), config.maxPayloadBytes) : 0
      switch verdict {
      case .rejectAndClose(let e):
        budget.drain()
        sender.enqueue(errorReply(request, e, "request too large"))
        return
      case .reject(let e):
        if request.type == p.cmdWrite {
          // The payload is within the limit: read it past, then answer.
          _ = try channel.recvBytes(Int(request.length))
        }
        sender.enqueue(errorReply(request, e, "request refused"))
        continue
      case .serve:
        break
      }
      if request.type == p.cmdDisc {
        budget.drain()
        return
      }
      server.noteInFlight(budget.acquire(bytes: payloadBytes))
      var payload: [UInt8] = []
      if request.type == p.cmdWrite {
        do {
          payload = try channel.recvBytes(Int(request.length))
        } catch {
          budget.release(bytes: payloadBytes)
          return
        }
      }
      let data = payload
      // The workers never wait for the client: they queue the reply for the sender, which
      // releases the budget once it is sent. A client that reads no replies stalls only its
      // own connection.
      server.workers.async { [self] in
        var reply = serve(request, data, export)
        reply.budgetBytes = payloadBytes
        sender.enqueue(reply)
      }
    }
  }

  private func errorReply(_ request: NBDRequest, _ error: UInt32, _ message: String) -> OutgoingReply {
    let p = NBDProtocol.self
    if structured && (request.type == p.cmdRead || request.type == p.cmdBlockStatus) {
      return OutgoingReply(nbdErrorChunk(cookie: request.cookie, error: error, message: message))
    }
    return OutgoingReply(nbdSimpleReply(cookie: request.cookie, error: error))
  }

  /// Serves a checked request on a worker; the reply to send.
  private func serve(_ request: NBDRequest, _ payload: [UInt8], _ export: NBDExport) -> OutgoingReply {
    let p = NBDProtocol.self
    let disk = export.disk
    do {
      switch request.type {
      case p.cmdRead:
        return read(request, disk)
      case p.cmdBlockStatus:
        return blockStatus(request, disk)
      case p.cmdWrite:
        try payload.withUnsafeBytes { try disk.write(at: request.offset, $0) }
        if request.flags & p.cmdFlagFUA != 0 { try disk.flush() }
      case p.cmdWriteZeroes:
        try writeZeroes(request, disk)
        if request.flags & p.cmdFlagFUA != 0 { try disk.flush() }
      case p.cmdTrim:
        try trim(request, disk)
        if request.flags & p.cmdFlagFUA != 0 { try disk.flush() }
      case p.cmdFlush:
        try disk.flush()
      case p.cmdCache:
        break
      default:
        return errorReply(request, p.eInval, "unknown command")
      }
      return OutgoingReply(nbdSimpleReply(cookie: request.cookie, error: 0))
    } catch let e as VMDKError {
      log.warning("\(e)")
      return errorReply(request, Self.nbdError(e), e.message)
    } catch {
      return errorReply(request, p.eIO, "\(error)")
    }
  }

  /// TRIM is advisory in the protocol. Whole grains that a sparse top link with zeroed-grain
  /// entries does not store become zeroed grains (they read as zeros, nothing is allocated);
  /// everything else keeps its data, as nothing may be freed that would let a parent's (or a
  /// stale) grain show through.
  private func trim(_ request: NBDRequest, _ disk: Disk) throws {
    _ = try disk.zeroGrains(at: request.offset, count: UInt64(request.length))
  }

  /// Without NO_HOLE, whole grains of a sparse top link with zeroed-grain entries become
  /// zeroed grains (nothing allocated, the parent hidden); of the rest, only what does not
  /// read as zeros already is written, so holes and zeroed grains get no grains either. With
  /// NO_HOLE the whole range is written, as the client asked for allocated zeros.
  private func writeZeroes(_ request: NBDRequest, _ disk: Disk) throws {
    let length = UInt64(request.length)
    if request.flags & NBDProtocol.cmdFlagNoHole != 0 {
      return try disk.writeZeroes(at: request.offset, count: length)
    }
    var position = request.offset
    let end = request.offset + length
    for done in try disk.zeroGrains(at: request.offset, count: length) {
      if done.lowerBound > position { try zeroWhereNotZero(disk, position, done.lowerBound) }
      position = max(position, done.upperBound)
    }
    if end > position { try zeroWhereNotZero(disk, position, end) }
  }

  /// Writes zeros over the parts of `[start, end)` that do not read as zeros.
  private func zeroWhereNotZero(_ disk: Disk, _ start: UInt64, _ end: UInt64) throws {
    var ranges: [(UInt64, UInt64)] = []
    try disk.blockStatus(offset: start, length: end - start) { s in
      guard !s.zero else { return }
      let lo = max(s.start, start)
      let hi = min(s.start + s.length, end)
      if hi > lo { ranges.append((lo, hi - lo)) }
    }
    // Block status works in whole sectors: a partial sector at either end is written whole
    // by the library's read-merge-write, so those ends are always zeroed.
    let headEnd = min(end, (start + 511) / 512 * 512)
    if headEnd > start { ranges.append((start, headEnd - start)) }
    let tailStart = max(start, end / 512 * 512)
    if end > tailStart { ranges.append((tailStart, end - tailStart)) }
    for (at, count) in ranges { try disk.writeZeroes(at: at, count: count) }
  }

  static func nbdError(_ e: VMDKError) -> UInt32 {
    switch e.code {
    case .outOfRange: return NBDProtocol.eInval
    case .fileReadOnly: return NBDProtocol.ePerm
    case .notSupported: return NBDProtocol.eNotSup
    default: return NBDProtocol.eIO
    }
  }

  // MARK: Reads

  /// A read's reply. The buffer goes with it to the sender, which frees it once sent.
  private func read(_ request: NBDRequest, _ disk: Disk) -> OutgoingReply {
    let p = NBDProtocol.self
    let count = Int(request.length)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
    var reply = OutgoingReply(buffer: buffer)
    guard structured else {
      do {
        try disk.read(at: request.offset, into: buffer)
      } catch {
        log.warning("\(error)")
        let code = (error as? VMDKError).map(Self.nbdError) ?? p.eIO
        reply.messages = [(nbdSimpleReply(cookie: request.cookie, error: code), nil)]
        return reply
      }
      reply.messages = [(nbdSimpleReply(cookie: request.cookie, error: 0), UnsafeRawBufferPointer(buffer))]
      return reply
    }
    // Structured: ranges that read as zeros without being stored go as holes, the rest as
    // data, unless the client wants one chunk (DF).
    var pieces: [(start: UInt64, length: UInt64, hole: Bool)] = []
    let end = request.offset + UInt64(count)
    if request.flags & p.cmdFlagDF == 0 {
      try? disk.blockStatus(offset: request.offset, length: UInt64(count)) { s in
        let lo = max(s.start, request.offset)
        let hi = min(s.start + s.length, end)
        guard hi > lo else { return }
        let hole = !s.data && s.zero
        if let last = pieces.last, last.hole == hole, last.start + last.length == lo {
          pieces[pieces.count - 1].length += hi - lo
        } else {
          pieces.append((lo, hi - lo, hole))
        }
      }
    }
    // Unless block status covered the whole range exactly, one data chunk.
    if pieces.first?.start != request.offset || pieces.last.map({ $0.start + $0.length }) != end {
      pieces = [(request.offset, UInt64(count), false)]
    }
    for (i, piece) in pieces.enumerated() {
      let flags = i == pieces.count - 1 ? p.replyFlagDone : 0
      if piece.hole {
        var w = NBDWriter(capacity: 32)
        w.bytes = nbdChunkHeader(cookie: request.cookie, flags: flags, type: p.chunkOffsetHole, length: 12)
        w.u64(piece.start)
        w.u32(UInt32(piece.length))
        reply.messages.append((w.bytes, nil))
        continue
      }
      let from = Int(piece.start - request.offset)
      let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[from..<(from + Int(piece.length))])
      do {
        try disk.read(at: piece.start, into: slice)
      } catch {
        log.warning("\(error)")
        let code = (error as? VMDKError).map(Self.nbdError) ?? p.eIO
        let message = (error as? VMDKError)?.message ?? "\(error)"
        reply.messages.append((nbdErrorChunk(cookie: request.cookie, error: code, message: message), nil))
        return reply
      }
      var w = NBDWriter(capacity: 28)
      w.bytes = nbdChunkHeader(
        cookie: request.cookie, flags: flags, type: p.chunkOffsetData, length: UInt32(8 + piece.length))
      w.u64(piece.start)
      reply.messages.append((w.bytes, UnsafeRawBufferPointer(slice)))
    }
    return reply
  }

  // MARK: Block status

  /// Extents per context in one reply; the client asks again for the rest.
  static let maxExtents = 2048

  private func blockStatus(_ request: NBDRequest, _ disk: Disk) -> OutgoingReply {
    let p = NBDProtocol.self
    let end = request.offset + UInt64(request.length)
    var runs: [BlockStatus] = []
    // Stops early once enough distinct runs are seen for every context.
    struct Enough: Error {}
    let limit = request.flags & p.cmdFlagReqOne != 0 ? 1 : Self.maxExtents
    do {
      try disk.blockStatus(offset: request.offset, length: UInt64(request.length)) { s in
        runs.append(s)
        if runs.count > limit * 2 { throw Enough() }
      }
    } catch is Enough {
    } catch {
      log.warning("\(error)")
      let code = (error as? VMDKError).map(Self.nbdError) ?? p.eIO
      let message = (error as? VMDKError)?.message ?? "\(error)"
      return OutgoingReply(nbdErrorChunk(cookie: request.cookie, error: code, message: message))
    }
    var reply = OutgoingReply()
    // The library works in whole sectors; a range that ends inside a sector is still covered.
    for (i, name) in contexts.enumerated() {
      var extents = nbdExtents(runs, start: request.offset, end: end, context: name, maxExtents: limit)
      if extents.isEmpty {
        // Nothing reported (cannot happen for an in-range request): say "data", the safe answer.
        nbdAppendExtent(&extents, length: UInt64(request.length), flags: 0)
      }
      if limit == 1, extents.count > 1 { extents = [extents[0]] }
      reply.messages.append(
        (
          nbdBlockStatusChunk(
            cookie: request.cookie, done: i == contexts.count - 1, contextID: NBDExport.contextID(name) ?? 0,
            extents: extents), nil
        ))
    }
    return reply
  }
}

// MARK: Sending replies

/// One reply to one request: its messages (a header, and a payload that points into
/// `buffer`), sent together; `buffer` is freed and `budgetBytes` released once it is sent.
struct OutgoingReply {
  var messages: [(header: [UInt8], payload: UnsafeRawBufferPointer?)] = []
  var buffer: UnsafeMutableRawBufferPointer? = nil
  /// The payload bytes this request holds of its connection's budget; nil: not counted
  /// (replies to refused requests).
  var budgetBytes: Int? = nil

  init(buffer: UnsafeMutableRawBufferPointer? = nil) { self.buffer = buffer }
  init(_ message: [UInt8]) { messages = [(message, nil)] }
}

/// A connection's sender: a thread of its own that writes the replies the workers queue, in
/// the order they are queued, each reply whole. Only this thread waits on a client that is
/// slow to read, so the shared workers never do.
final class ReplySender: @unchecked Sendable {
  private let channel: any ServerChannel
  private let socket: ClientSocket
  private let budget: InFlightBudget
  private let condition = NSCondition()
  private var queue: [OutgoingReply] = []
  private var finishing = false
  private var broken = false
  private let done = DispatchSemaphore(value: 0)

  init(channel: any ServerChannel, socket: ClientSocket, budget: InFlightBudget) {
    self.channel = channel
    self.socket = socket
    self.budget = budget
  }

  func start() {
    let thread = Thread { [self] in run() }
    thread.stackSize = 256 << 10
    thread.start()
  }

  func enqueue(_ reply: OutgoingReply) {
    condition.lock()
    queue.append(reply)
    condition.signal()
    condition.unlock()
  }

  /// Sends what is queued, then ends the thread and waits for it.
  func finish() {
    condition.lock()
    finishing = true
    condition.signal()
    condition.unlock()
    done.wait()
  }

  private func run() {
    while true {
      condition.lock()
      while queue.isEmpty && !finishing { condition.wait() }
      let batch = queue
      queue = []
      condition.unlock()
      if batch.isEmpty { break }
      for (i, reply) in batch.enumerated() { send(reply, more: i < batch.count - 1) }
    }
    done.signal()
  }

  /// Sends one reply (unless the connection broke), then frees what it held. `more`: another
  /// reply follows at once (TCP may put them in one segment).
  private func send(_ reply: OutgoingReply, more: Bool) {
    if !broken {
      do {
        for (k, m) in reply.messages.enumerated() {
          let last = k == reply.messages.count - 1
          if let payload = m.payload {
            try channel.sendAll(m.header, more: true)
            try channel.sendAll(payload, more: more || !last)
          } else {
            try channel.sendAll(m.header, more: more || !last)
          }
        }
      } catch {
        // The client is gone: stop the reader too; what is still queued is only freed.
        broken = true
        socket.shutdownBoth()
      }
    }
    reply.buffer?.deallocate()
    if let bytes = reply.budgetBytes { budget.release(bytes: bytes) }
  }
}
