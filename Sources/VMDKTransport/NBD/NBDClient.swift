// NBDClient: a client of the Network Block Device protocol (fixed newstyle handshake,
// structured replies, base:allocation block status) over blocking POSIX sockets, TCP or Unix.
// An NBD export is a whole virtual disk (the server already resolved the format), so this is a
// ByteStore of the disk's bytes, not of a VMDK file.
//
// This first version keeps one request in flight: every call sends its request and reads the
// whole reply under a lock before the next request goes out. Requests are at most 32 MiB;
// larger reads and writes are split. Everything the server sends is checked against what was
// asked: lengths are capped before anything is allocated, chunk offsets must fall inside the
// request, and a reply that breaks the protocol closes the connection (the stream is out of
// step after it) and throws `protocolError`.

import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// One run of the export with the same allocation state (NBD's base:allocation context).
public struct NBDExtent: Equatable, Sendable, CustomStringConvertible {
  public var start: UInt64
  public var length: UInt64
  /// Not allocated (NBD_STATE_HOLE): the server stores nothing here.
  public var isHole: Bool
  /// Reads as zeros (NBD_STATE_ZERO).
  public var isZero: Bool
  public init(start: UInt64, length: UInt64, isHole: Bool, isZero: Bool) {
    self.start = start
    self.length = length
    self.isHole = isHole
    self.isZero = isZero
  }
  public var description: String { "{\(start)+\(length) hole \(isHole) zero \(isZero)}" }
}

/// A client of one NBD export.
public final class NBDClient: ByteStore {
  /// Where the server listens.
  public typealias Address = SocketAddress

  /// The largest request sent (reads and writes are split into pieces of this size).
  public static let maxRequest = 32 << 20
  /// The largest option reply or non-data reply chunk accepted.
  static let maxControlPayload = 1 << 20

  public let address: Address
  public let export: String
  /// `nbd://host:port/export` or `nbd+unix:///export?socket=PATH`, for messages.
  public let name: String
  public let isWritable: Bool
  /// The export's size in bytes, from NBD_INFO_EXPORT.
  public let exportSize: UInt64
  /// The transmission flags the server sent.
  public let transmissionFlags: UInt16
  /// Whether the server agreed to structured replies.
  public let structuredReplies: Bool
  /// Whether block status (base:allocation) is available.
  public var supportsBlockStatus: Bool { allocationContext != nil }

  private let allocationContext: UInt32?
  private let connection: Mutex<Connection>

  private struct Connection {
    var fd: Int32
    var cookie: UInt64 = 1
    mutating func next() -> UInt64 {
      defer { cookie &+= 1 }
      return cookie
    }
  }

  /// Connects, negotiates and opens `export`. `timeout` (seconds) bounds every send and receive
  /// (SO_SNDTIMEO/SO_RCVTIMEO; also the connect). Throws `serverNotFound`, `connectionRefused`,
  /// `timeout`, `serverNotAvailable` (the server refused the export, naming it), `protocolError`,
  /// `fileReadOnly` (a writable open of a read-only export).
  public init(_ address: Address, export: String, writable: Bool = false, timeout: Double = 30) throws {
    self.address = address
    self.export = export
    let name: String
    switch address {
    case .tcp(let host, let port):
      let h = host.contains(":") ? "[\(host)]" : host
      name = "nbd://\(h):\(port)/\(export)"
    case .unix(let path): name = "nbd+unix:///\(export)?socket=\(path)"
    }
    self.name = name
    var fd = try Net.connect(address, name: name, timeout: timeout)
    do {
      let n = try NBDClient.negotiate(fd: fd, export: export, name: name)
      if writable && n.flags & NBDWire.transReadOnly != 0 {
        throw VMDKError(.fileReadOnly, "the server exports '\(export)' read-only", file: name)
      }
      exportSize = n.size
      transmissionFlags = n.flags
      structuredReplies = n.structured
      allocationContext = n.context
    } catch {
      closeSocket(fd)
      fd = -1
      throw error
    }
    isWritable = writable
    connection = Mutex(Connection(fd: fd))
  }

  deinit { close() }

  /// Says goodbye (NBD_CMD_DISC) and closes the socket. Further calls throw `connectionLost`.
  public func close() {
    connection.withLock { c in
      guard c.fd >= 0 else { return }
      var e = NBDEncoder()
      NBDClient.request(&e, type: NBDWire.cmdDisc, cookie: c.cookie, offset: 0, length: 0)
      try? Net.sendAll(fd: c.fd, e.bytes, name: name)
      shutdown(c.fd, Int32(SHUT_RDWR))
      closeSocket(c.fd)
      c.fd = -1
    }
  }

  // MARK: ByteStore

  public func size() throws -> UInt64 { exportSize }

  public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    guard offset < exportSize, buffer.count > 0 else { return 0 }
    let total = Int(min(UInt64(buffer.count), exportSize - offset))
    var done = 0
    while done < total {
      let n = min(total - done, NBDClient.maxRequest)
      let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)])
      try transact { c in try readPiece(&c, offset: offset + UInt64(done), into: piece) }
      done += n
    }
    return total
  }

  public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
    guard isWritable else { throw VMDKError(.fileReadOnly, "opened read-only", file: name, offset: offset) }
    guard offset <= exportSize, UInt64(buffer.count) <= exportSize - offset else {
      throw VMDKError(
        .outOfRange, "a write of \(buffer.count) bytes ends past the export's \(exportSize) bytes", file: name,
        offset: offset)
    }
    var done = 0
    while done < buffer.count {
      let n = min(buffer.count - done, NBDClient.maxRequest)
      let piece = UnsafeRawBufferPointer(rebasing: buffer[done..<(done + n)])
      let at = offset + UInt64(done)
      try transact { c in
        let cookie = c.next()
        var e = NBDEncoder()
        NBDClient.request(&e, type: NBDWire.cmdWrite, cookie: cookie, offset: at, length: UInt32(n))
        try Net.sendAll(fd: c.fd, e.bytes, name: name)
        try Net.sendAll(fd: c.fd, piece, name: name)
        try readStatusReply(&c, cookie: cookie, offset: at, what: "write")
      }
      done += n
    }
  }

  /// NBD_CMD_FLUSH when the server offers it (NBD_FLAG_SEND_FLUSH); otherwise nothing to do.
  public func flush() throws {
    guard isWritable, transmissionFlags & NBDWire.transSendFlush != 0 else { return }
    try transact { c in
      let cookie = c.next()
      var e = NBDEncoder()
      NBDClient.request(&e, type: NBDWire.cmdFlush, cookie: cookie, offset: 0, length: 0)
      try Net.sendAll(fd: c.fd, e.bytes, name: name)
      try readStatusReply(&c, cookie: cookie, offset: 0, what: "flush")
    }
  }

  // MARK: Block status

  /// The allocation of `length` bytes at `offset` (one NBD_CMD_BLOCK_STATUS request; the
  /// server may answer for less than asked, never more: extents are clipped to the request).
  /// Throws `notSupported` when the server did not agree to base:allocation.
  public func blockStatus(at offset: UInt64, length: UInt32) throws -> [NBDExtent] {
    guard let context = allocationContext else {
      throw VMDKError(.notSupported, "the server offers no base:allocation block status", file: name)
    }
    guard offset < exportSize, length > 0 else { return [] }
    let asked = UInt32(min(UInt64(length), exportSize - offset))
    return try transact { c in
      let cookie = c.next()
      var e = NBDEncoder()
      NBDClient.request(&e, type: NBDWire.cmdBlockStatus, cookie: cookie, offset: offset, length: asked)
      try Net.sendAll(fd: c.fd, e.bytes, name: name)
      return try readBlockStatusReply(&c, cookie: cookie, offset: offset, length: asked, context: context)
    }
  }

  /// The allocation of the whole export, adjacent extents with the same flags merged.
  public func allocationMap() throws -> [NBDExtent] {
    var result: [NBDExtent] = []
    var at: UInt64 = 0
    while at < exportSize {
      let ask = UInt32(min(exportSize - at, 1 << 30))
      let extents = try blockStatus(at: at, length: ask)
      guard let last = extents.last else {
        throw VMDKError(.protocolError, "block status answered no extent", file: name, offset: at)
      }
      for x in extents {
        if let p = result.last, p.isHole == x.isHole, p.isZero == x.isZero, p.start + p.length == x.start {
          result[result.count - 1].length += x.length
        } else {
          result.append(x)
        }
      }
      at = last.start + last.length
    }
    return result
  }

  // MARK: Transmission

  /// Runs one request and its reply under the lock. A failure that leaves the stream out of
  /// step (anything but an error the server reported cleanly) closes the connection.
  private func transact<T>(_ body: (inout Connection) throws -> T) throws -> T {
    try connection.withLock { c in
      guard c.fd >= 0 else {
        throw VMDKError(.connectionLost, "the connection is closed", file: name, isRetryable: true)
      }
      do {
        return try body(&c)
      } catch let e as VMDKError where e.code == NBDClient.serverReported {
        throw e.withCode()
      } catch {
        shutdown(c.fd, Int32(SHUT_RDWR))
        closeSocket(c.fd)
        c.fd = -1
        throw error
      }
    }
  }

  /// A marker code for an error the server reported in a well-formed reply: the connection
  /// stays usable. `withCode()` turns it into the real code carried in `underlying`.
  fileprivate static let serverReported = VMDKError.Code(-1, "server reported")

  private func readPiece(_ c: inout Connection, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
    let cookie = c.next()
    let length = UInt32(buffer.count)
    var e = NBDEncoder()
    NBDClient.request(&e, type: NBDWire.cmdRead, cookie: cookie, offset: offset, length: length)
    try Net.sendAll(fd: c.fd, e.bytes, name: name)
    let magic = NBDDecoder(try recv(c, 4)).u32Value
    if magic == NBDWire.simpleReplyMagic {
      var d = NBDDecoder(try recv(c, 12))
      let error = d.u32()
      try checkCookie(d.u64(), cookie, offset)
      if error != 0 { throw serverError(error, offset: offset, what: "read", message: nil) }
      try Net.recvAll(fd: c.fd, into: buffer, name: name)
      return
    }
    guard magic == NBDWire.structuredReplyMagic, structuredReplies else {
      throw protocolError("a reply with magic 0x\(String(magic, radix: 16))", offset)
    }
    var covered: [(UInt64, UInt64)] = []
    var failure: VMDKError?
    let end = offset + UInt64(length)
    var first = true
    while true {
      let (flags, type, chunkLength) = try readChunkHeader(c, cookie: cookie, offset: offset, first: first)
      switch type {
      case NBDWire.chunkOffsetData:
        guard chunkLength > 8 else { throw protocolError("a data chunk of \(chunkLength) bytes", offset) }
        let at = NBDDecoder(try recv(c, 8)).u64Value
        let count = UInt64(chunkLength - 8)
        guard at >= offset, at <= end, count <= end - at else {
          throw protocolError("data for \(count) bytes at \(at), outside the request \(offset)+\(length)", offset)
        }
        let start = Int(at - offset)
        try Net.recvAll(
          fd: c.fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + Int(count))]), name: name)
        covered.append((at, count))
      case NBDWire.chunkOffsetHole:
        guard chunkLength == 12 else { throw protocolError("a hole chunk of \(chunkLength) bytes", offset) }
        var d = NBDDecoder(try recv(c, 12))
        let at = d.u64()
        let count = UInt64(d.u32())
        guard count > 0, at >= offset, at <= end, count <= end - at else {
          throw protocolError("a hole of \(count) bytes at \(at), outside the request \(offset)+\(length)", offset)
        }
        let start = Int(at - offset)
        UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + Int(count))]).initializeMemory(
          as: UInt8.self, repeating: 0)
        covered.append((at, count))
      default:
        if let e = try readNonDataChunk(c, type: type, length: chunkLength, offset: offset, what: "read") {
          failure = failure ?? e
        }
      }
      if flags & NBDWire.replyFlagDone != 0 { break }
      first = false
    }
    if let failure { throw failure }
    // Without an error the chunks must cover the request exactly once.
    covered.sort { $0.0 < $1.0 }
    var next = offset
    for (at, count) in covered {
      guard at == next else { throw protocolError("the read reply overlaps or leaves a gap at \(next)", offset) }
      next += count
    }
    guard next == end else { throw protocolError("the read reply ends at \(next), not \(end)", offset) }
  }

  /// The reply to a write or flush: a simple reply, or structured chunks without data.
  private func readStatusReply(_ c: inout Connection, cookie: UInt64, offset: UInt64, what: String) throws {
    let magic = NBDDecoder(try recv(c, 4)).u32Value
    if magic == NBDWire.simpleReplyMagic {
      var d = NBDDecoder(try recv(c, 12))
      let error = d.u32()
      try checkCookie(d.u64(), cookie, offset)
      if error != 0 { throw serverError(error, offset: offset, what: what, message: nil) }
      return
    }
    guard magic == NBDWire.structuredReplyMagic, structuredReplies else {
      throw protocolError("a reply with magic 0x\(String(magic, radix: 16))", offset)
    }
    var failure: VMDKError?
    var first = true
    while true {
      let (flags, type, length) = try readChunkHeader(c, cookie: cookie, offset: offset, first: first)
      if let e = try readNonDataChunk(c, type: type, length: length, offset: offset, what: what) {
        failure = failure ?? e
      }
      if flags & NBDWire.replyFlagDone != 0 { break }
      first = false
    }
    if let failure { throw failure }
  }

  private func readBlockStatusReply(
    _ c: inout Connection, cookie: UInt64, offset: UInt64, length: UInt32, context: UInt32
  ) throws -> [NBDExtent] {
    let magic = NBDDecoder(try recv(c, 4)).u32Value
    if magic == NBDWire.simpleReplyMagic {
      var d = NBDDecoder(try recv(c, 12))
      let error = d.u32()
      try checkCookie(d.u64(), cookie, offset)
      guard error != 0 else { throw protocolError("a simple reply without error to block status", offset) }
      throw serverError(error, offset: offset, what: "block status", message: nil)
    }
    guard magic == NBDWire.structuredReplyMagic, structuredReplies else {
      throw protocolError("a reply with magic 0x\(String(magic, radix: 16))", offset)
    }
    var extents: [NBDExtent] = []
    var failure: VMDKError?
    let end = offset + UInt64(length)
    var first = true
    while true {
      let (flags, type, chunkLength) = try readChunkHeader(c, cookie: cookie, offset: offset, first: first)
      if type == NBDWire.chunkBlockStatus {
        guard chunkLength >= 12, (chunkLength - 4) % 8 == 0, chunkLength <= NBDClient.maxControlPayload else {
          throw protocolError("a block status chunk of \(chunkLength) bytes", offset)
        }
        var d = NBDDecoder(try recv(c, Int(chunkLength)))
        let id = d.u32()
        guard id == context, extents.isEmpty else {
          throw protocolError("block status for context \(id) (asked for \(context)), or twice", offset)
        }
        var at = offset
        while d.remaining >= 8 {
          let count = UInt64(d.u32())
          let state = d.u32()
          guard count > 0 else { throw protocolError("an empty block status extent", offset) }
          guard at < end else { continue }  // the last extent may run past the request: clip
          let clipped = min(count, end - at)
          extents.append(
            NBDExtent(
              start: at, length: clipped, isHole: state & NBDWire.stateHole != 0,
              isZero: state & NBDWire.stateZero != 0))
          at += clipped
        }
      } else if let e = try readNonDataChunk(c, type: type, length: chunkLength, offset: offset, what: "block status") {
        failure = failure ?? e
      }
      if flags & NBDWire.replyFlagDone != 0 { break }
      first = false
    }
    if let failure { throw failure }
    guard !extents.isEmpty else { throw protocolError("block status answered no extent", offset) }
    return extents
  }

  /// Reads a structured chunk header: flags, type, payload length. The first chunk's magic
  /// was read by the caller; every later chunk starts with its own.
  private func readChunkHeader(_ c: Connection, cookie: UInt64, offset: UInt64, first: Bool) throws -> (
    UInt16, UInt16, UInt32
  ) {
    if !first {
      let magic = NBDDecoder(try recv(c, 4)).u32Value
      guard magic == NBDWire.structuredReplyMagic else {
        throw protocolError("a reply chunk with magic 0x\(String(magic, radix: 16))", offset)
      }
    }
    var d = NBDDecoder(try recv(c, 16))
    let flags = d.u16()
    let type = d.u16()
    try checkCookie(d.u64(), cookie, offset)
    let length = d.u32()
    // Only data chunks may be large; they are checked against the request by the caller.
    if type != NBDWire.chunkOffsetData && length > UInt32(NBDClient.maxControlPayload) {
      throw protocolError("a reply chunk of type \(type) with \(length) bytes", offset)
    }
    return (flags, type, length)
  }

  /// Reads a NONE or ERROR chunk (the error, if any, is returned to be thrown after DONE);
  /// any other chunk type is a protocol error here.
  private func readNonDataChunk(_ c: Connection, type: UInt16, length: UInt32, offset: UInt64, what: String) throws
    -> VMDKError?
  {
    if type == NBDWire.chunkNone {
      guard length == 0 else { throw protocolError("a NONE chunk of \(length) bytes", offset) }
      return nil
    }
    guard type & NBDWire.chunkErrorBit != 0 else {
      throw protocolError("an unexpected reply chunk of type \(type) to \(what)", offset)
    }
    guard length >= 6 else { throw protocolError("an error chunk of \(length) bytes", offset) }
    var d = NBDDecoder(try recv(c, Int(length)))
    let error = d.u32()
    let messageLength = Int(d.u16())
    guard messageLength <= d.remaining else {
      throw protocolError("an error message of \(messageLength) bytes in a chunk of \(length)", offset)
    }
    let message = String(decoding: d.take(messageLength), as: UTF8.self)
    var at = offset
    if type == NBDWire.chunkErrorOffset && d.remaining >= 8 { at = d.u64() }
    guard error != 0 else { throw protocolError("an error chunk with error 0", offset) }
    return serverError(error, offset: at, what: what, message: message.isEmpty ? nil : message)
  }

  private func checkCookie(_ got: UInt64, _ expected: UInt64, _ offset: UInt64) throws {
    guard got == expected else { throw protocolError("a reply to request \(got), expected \(expected)", offset) }
  }

  private func recv(_ c: Connection, _ count: Int) throws -> [UInt8] {
    try Net.recvBytes(fd: c.fd, count, name: name)
  }

  private func protocolError(_ what: String, _ offset: UInt64) -> VMDKError {
    VMDKError(.protocolError, "the server sent \(what)", file: name, offset: offset)
  }

  /// An error the server reported (the connection stays in step), wrapped for `transact`.
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
    let real = VMDKError(
      code, "the server refused the \(what) (\(meaning))\(text)", file: name, offset: offset, isRetryable: retry)
    return VMDKError(NBDClient.serverReported, real.message, file: name, offset: offset, underlying: real)
  }

  // MARK: Requests

  fileprivate static func request(
    _ e: inout NBDEncoder, type: UInt16, cookie: UInt64, offset: UInt64, length: UInt32
  ) {
    e.u32(NBDWire.requestMagic)
    e.u16(0)
    e.u16(type)
    e.u64(cookie)
    e.u64(offset)
    e.u32(length)
  }
}

extension VMDKError {
  /// The error a server reported, out of its `serverReported` wrapper.
  fileprivate func withCode() -> VMDKError {
    (underlying as? VMDKError) ?? self
  }
}

extension NBDDecoder {
  fileprivate var u32Value: UInt32 {
    var d = self
    return d.u32()
  }
  fileprivate var u64Value: UInt64 {
    var d = self
    return d.u64()
  }
}

// Placeholder until the pipelined client lands (branch t5-nbd): zero buffers written as data.
extension NBDClient {
  public func writeZeroes(at offset: UInt64, length: UInt64) throws {
    let zeros = [UInt8](repeating: 0, count: Int(min(length, 1 << 20)))
    var done: UInt64 = 0
    while done < length {
      let n = Int(min(UInt64(zeros.count), length - done))
      try zeros.withUnsafeBytes { try write(at: offset + done, from: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
      done += UInt64(n)
    }
  }
}
