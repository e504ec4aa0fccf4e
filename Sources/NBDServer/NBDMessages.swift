// NBDMessages: the server's parsers and encoders, pure functions over bytes (no sockets),
// so that the unit tests and the fuzz target run them alone. Every parser checks every length
// against the bytes it was given and throws an `NBDParseError` instead of reading past them.

/// Why a client's message was refused.
public enum NBDParseError: Error, Equatable, Sendable {
  /// Fewer bytes than the message needs.
  case truncated(field: String, offset: Int, needed: Int)
  /// A magic number that is not the protocol's.
  case badMagic(field: String, found: UInt64)
  /// A length field larger than the protocol allows.
  case tooLong(field: String, length: UInt64, limit: UInt64)
  /// Bytes left over after the message.
  case trailingBytes(field: String, count: Int)
  /// A name that is not UTF-8.
  case notUTF8(field: String)
}

/// Big-endian reads from a byte buffer, bounds-checked.
public struct NBDReader {
  public let bytes: [UInt8]
  public private(set) var index = 0
  public init(_ bytes: [UInt8]) { self.bytes = bytes }
  public var remaining: Int { bytes.count - index }

  mutating func need(_ n: Int, _ field: String) throws(NBDParseError) {
    guard n >= 0, remaining >= n else { throw .truncated(field: field, offset: index, needed: n) }
  }
  public mutating func u16(_ field: String) throws(NBDParseError) -> UInt16 {
    try need(2, field)
    defer { index += 2 }
    return UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
  }
  public mutating func u32(_ field: String) throws(NBDParseError) -> UInt32 {
    try need(4, field)
    var v: UInt32 = 0
    for i in 0..<4 { v = v << 8 | UInt32(bytes[index + i]) }
    index += 4
    return v
  }
  public mutating func u64(_ field: String) throws(NBDParseError) -> UInt64 {
    try need(8, field)
    var v: UInt64 = 0
    for i in 0..<8 { v = v << 8 | UInt64(bytes[index + i]) }
    index += 8
    return v
  }
  /// A string of `length` bytes (a length read from the message, checked here).
  public mutating func string(_ length: UInt32, _ field: String, limit: Int) throws(NBDParseError) -> String {
    guard length <= UInt32(limit) else { throw .tooLong(field: field, length: UInt64(length), limit: UInt64(limit)) }
    let n = Int(length)
    try need(n, field)
    let slice = bytes[index..<(index + n)]
    index += n
    guard let s = String(validating: slice, as: UTF8.self) else { throw .notUTF8(field: field) }
    return s
  }
  public func expectEnd(_ field: String) throws(NBDParseError) {
    guard remaining == 0 else { throw .trailingBytes(field: field, count: remaining) }
  }
}

/// Big-endian writes into a growing byte array.
public struct NBDWriter {
  public var bytes: [UInt8] = []
  public init(capacity: Int = 32) { bytes.reserveCapacity(capacity) }
  public mutating func u16(_ v: UInt16) {
    bytes.append(UInt8(v >> 8))
    bytes.append(UInt8(truncatingIfNeeded: v))
  }
  public mutating func u32(_ v: UInt32) {
    for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) }
  }
  public mutating func u64(_ v: UInt64) {
    for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
  }
  public mutating func string(_ s: String) { bytes.append(contentsOf: Array(s.utf8)) }
}

// MARK: Handshake

/// An option's header: magic (8), option (4), length of its data (4).
public struct NBDOptionHeader: Equatable, Sendable {
  public var option: UInt32
  public var length: UInt32

  /// Bytes of an option header.
  public static let bytes = 16

  public init(option: UInt32, length: UInt32) {
    self.option = option
    self.length = length
  }

  /// Parses the 16 bytes of an option header; the magic must be IHAVEOPT.
  public init(parsing bytes: [UInt8]) throws(NBDParseError) {
    var r = NBDReader(bytes)
    let magic = try r.u64("option magic")
    guard magic == NBDProtocol.optionMagic else { throw .badMagic(field: "option magic", found: magic) }
    option = try r.u32("option")
    length = try r.u32("option length")
    try r.expectEnd("option header")
  }
}

/// The data of NBD_OPT_INFO and NBD_OPT_GO: the export's name and the information asked for.
public struct NBDExportQuery: Equatable, Sendable {
  public var name: String
  public var infoRequests: [UInt16]

  /// name length (4), name, number of requests (2), each request (2).
  public init(parsing bytes: [UInt8]) throws(NBDParseError) {
    var r = NBDReader(bytes)
    let length = try r.u32("export name length")
    name = try r.string(length, "export name", limit: NBDProtocol.maxNameBytes)
    let count = try r.u16("information request count")
    // Checked before the array is made: each request is 2 bytes of what is left.
    try r.need(Int(count) * 2, "information requests")
    var requests: [UInt16] = []
    requests.reserveCapacity(Int(count))
    for _ in 0..<count { requests.append(try r.u16("information request")) }
    infoRequests = requests
    try r.expectEnd("information requests")
  }
}

/// The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: the export and the
/// queries.
public struct NBDMetaContextQuery: Equatable, Sendable {
  public var exportName: String
  public var queries: [String]

  /// The most queries in one option (each is at least 4 bytes of a 64 KiB option anyway).
  public static let maxQueries = 256

  /// export name length (4), name, number of queries (4), each: length (4), query.
  public init(parsing bytes: [UInt8]) throws(NBDParseError) {
    var r = NBDReader(bytes)
    let length = try r.u32("export name length")
    exportName = try r.string(length, "export name", limit: NBDProtocol.maxNameBytes)
    let count = try r.u32("meta context query count")
    guard count <= UInt32(Self.maxQueries) else {
      throw .tooLong(field: "meta context query count", length: UInt64(count), limit: UInt64(Self.maxQueries))
    }
    var out: [String] = []
    for _ in 0..<count {
      let n = try r.u32("meta context query length")
      out.append(try r.string(n, "meta context query", limit: NBDProtocol.maxNameBytes))
    }
    queries = out
    try r.expectEnd("meta context queries")
  }
}

/// The contexts a query selects, among `available`: the exact name, or for a LIST, a
/// namespace ("base:") selects every context in it. An empty LIST selects everything.
public func nbdSelectContexts(_ queries: [String], available: [String], listing: Bool) -> [String] {
  if queries.isEmpty { return listing ? available : [] }
  var out: [String] = []
  for q in queries {
    for name in available where !out.contains(name) {
      if name == q || (listing && q.hasSuffix(":") && name.hasPrefix(q)) { out.append(name) }
    }
  }
  return out
}

/// An option reply: magic (8), option (4), reply type (4), length (4), data.
public func nbdOptionReply(option: UInt32, type: UInt32, data: [UInt8] = []) -> [UInt8] {
  var w = NBDWriter(capacity: 20 + data.count)
  w.u64(NBDProtocol.optionReplyMagic)
  w.u32(option)
  w.u32(type)
  w.u32(UInt32(clamping: data.count))
  w.bytes.append(contentsOf: data)
  return w.bytes
}

/// An error reply with a message for people.
public func nbdOptionError(option: UInt32, type: UInt32, _ message: String) -> [UInt8] {
  nbdOptionReply(option: option, type: type, data: Array(message.utf8.prefix(1024)))
}

// MARK: Transmission

/// A request header: magic (4), command flags (2), type (2), cookie (8), offset (8), length (4).
public struct NBDRequest: Equatable, Sendable {
  public var flags: UInt16
  public var type: UInt16
  public var cookie: UInt64
  public var offset: UInt64
  public var length: UInt32

  public init(flags: UInt16, type: UInt16, cookie: UInt64, offset: UInt64, length: UInt32) {
    self.flags = flags
    self.type = type
    self.cookie = cookie
    self.offset = offset
    self.length = length
  }

  /// Parses the 28 bytes of a request header; the magic must be the request magic.
  public init(parsing bytes: [UInt8]) throws(NBDParseError) {
    var r = NBDReader(bytes)
    let magic = try r.u32("request magic")
    guard magic == NBDProtocol.requestMagic else { throw .badMagic(field: "request magic", found: UInt64(magic)) }
    flags = try r.u16("command flags")
    type = try r.u16("command")
    cookie = try r.u64("cookie")
    offset = try r.u64("offset")
    length = try r.u32("length")
    try r.expectEnd("request header")
  }

  /// The header's 28 bytes.
  public var encoded: [UInt8] {
    var w = NBDWriter(capacity: 28)
    w.u32(NBDProtocol.requestMagic)
    w.u16(flags)
    w.u16(type)
    w.u64(cookie)
    w.u64(offset)
    w.u32(length)
    return w.bytes
  }
}

/// What the server does with a request, decided before it touches the disk.
public enum NBDRequestVerdict: Equatable, Sendable {
  /// Serve it.
  case serve
  /// Reply with this error (after reading a WRITE's payload) and go on.
  case reject(UInt32)
  /// Reply with this error, then close the connection: the stream cannot be trusted any more
  /// (a WRITE payload too large to read, say).
  case rejectAndClose(UInt32)
}

/// What a connection negotiated, as the request check needs it.
public struct NBDSession: Equatable, Sendable {
  public var exportSize: UInt64
  public var readOnly: Bool
  public var structuredReplies: Bool
  public var contextCount: Int
  public var maxPayload: Int

  public init(exportSize: UInt64, readOnly: Bool, structuredReplies: Bool, contextCount: Int, maxPayload: Int) {
    self.exportSize = exportSize
    self.readOnly = readOnly
    self.structuredReplies = structuredReplies
    self.contextCount = contextCount
    self.maxPayload = maxPayload
  }
}

/// Checks a request completely (flags, command, offset + length within the export, length
/// within the payload limit) before it reaches the disk, as the protocol asks. A WRITE that is
/// rejected still has its payload on the wire: the caller reads it (it is within the limit)
/// unless the verdict is `rejectAndClose`.
public func nbdCheck(_ request: NBDRequest, session: NBDSession) -> NBDRequestVerdict {
  let p = NBDProtocol.self
  let length = UInt64(request.length)
  // A payload longer than the limit cannot be read into a bounded buffer: the stream is lost.
  if request.type == p.cmdWrite && length > UInt64(session.maxPayload) { return .rejectAndClose(p.eOverflow) }
  let inRange = request.offset <= session.exportSize && length <= session.exportSize - request.offset
  // The flags each command takes; any other flag, known or not, is invalid.
  let allowed: UInt16
  switch request.type {
  case p.cmdRead: allowed = session.structuredReplies ? p.cmdFlagDF : 0
  case p.cmdWrite, p.cmdTrim: allowed = p.cmdFlagFUA
  case p.cmdWriteZeroes: allowed = p.cmdFlagFUA | p.cmdFlagNoHole | p.cmdFlagFastZero
  case p.cmdBlockStatus: allowed = p.cmdFlagReqOne
  default: allowed = 0
  }
  if request.flags & ~allowed != 0 { return .reject(p.eInval) }
  switch request.type {
  case p.cmdRead:
    guard request.length > 0 else { return .reject(p.eInval) }
    guard length <= UInt64(session.maxPayload) else { return .reject(p.eOverflow) }
    return inRange ? .serve : .reject(p.eInval)
  case p.cmdWrite:
    if session.readOnly { return .reject(p.ePerm) }
    guard request.length > 0 else { return .reject(p.eInval) }
    return inRange ? .serve : .reject(p.eNoSpc)
  case p.cmdDisc:
    return .serve
  case p.cmdFlush:
    return request.offset == 0 && request.length == 0 ? .serve : .reject(p.eInval)
  case p.cmdTrim, p.cmdWriteZeroes:
    if session.readOnly { return .reject(p.ePerm) }
    guard request.length > 0 else { return .reject(p.eInval) }
    // Fast zeroing is not offered (NBD_FLAG_SEND_FAST_ZERO is not set): say so at once.
    if request.flags & p.cmdFlagFastZero != 0 { return .reject(p.eNotSup) }
    return inRange ? .serve : .reject(p.eNoSpc)
  case p.cmdCache:
    return inRange ? .serve : .reject(p.eInval)
  case p.cmdBlockStatus:
    guard session.structuredReplies, session.contextCount > 0, request.length > 0 else { return .reject(p.eInval) }
    return inRange ? .serve : .reject(p.eInval)
  default:
    return .reject(p.eInval)
  }
}

/// A simple reply's header: magic (4), error (4), cookie (8).
public func nbdSimpleReply(cookie: UInt64, error: UInt32) -> [UInt8] {
  var w = NBDWriter(capacity: 16)
  w.u32(NBDProtocol.simpleReplyMagic)
  w.u32(error)
  w.u64(cookie)
  return w.bytes
}

/// A structured reply chunk's header: magic (4), flags (2), type (2), cookie (8), length (4).
public func nbdChunkHeader(cookie: UInt64, flags: UInt16, type: UInt16, length: UInt32) -> [UInt8] {
  var w = NBDWriter(capacity: 28)
  w.u32(NBDProtocol.structuredReplyMagic)
  w.u16(flags)
  w.u16(type)
  w.u64(cookie)
  w.u32(length)
  return w.bytes
}

/// An NBD_REPLY_TYPE_ERROR chunk (with the done flag): error (4), message length (2), message.
public func nbdErrorChunk(cookie: UInt64, error: UInt32, message: String) -> [UInt8] {
  let text = Array(message.utf8.prefix(512))
  var w = NBDWriter(capacity: 26 + text.count)
  w.bytes = nbdChunkHeader(
    cookie: cookie, flags: NBDProtocol.replyFlagDone, type: NBDProtocol.chunkError, length: UInt32(6 + text.count))
  w.u32(error)
  w.u16(UInt16(text.count))
  w.bytes.append(contentsOf: text)
  return w.bytes
}

/// One extent of a block status reply: length (4) and flags or value (4).
public struct NBDExtent: Equatable, Sendable {
  public var length: UInt32
  public var flags: UInt32
  public init(length: UInt32, flags: UInt32) {
    self.length = length
    self.flags = flags
  }
}

/// Adds `length` bytes with `flags` to `extents`, merging with the last one when the flags are
/// equal and the sum fits.
public func nbdAppendExtent(_ extents: inout [NBDExtent], length: UInt64, flags: UInt32) {
  var left = length
  while left > 0 {
    if let last = extents.last, last.flags == flags, last.length < UInt32.max {
      let room = UInt64(UInt32.max - last.length)
      let n = min(room, left)
      extents[extents.count - 1].length += UInt32(n)
      left -= n
    } else {
      let n = min(UInt64(UInt32.max), left)
      extents.append(NBDExtent(length: UInt32(n), flags: flags))
      left -= n
    }
  }
}

/// A BLOCK_STATUS chunk: context id (4), then each extent's length (4) and flags (4).
public func nbdBlockStatusChunk(cookie: UInt64, done: Bool, contextID: UInt32, extents: [NBDExtent]) -> [UInt8] {
  var w = NBDWriter(capacity: 24 + extents.count * 8)
  w.bytes = nbdChunkHeader(
    cookie: cookie, flags: done ? NBDProtocol.replyFlagDone : 0, type: NBDProtocol.chunkBlockStatus,
    length: UInt32(4 + extents.count * 8))
  w.u32(contextID)
  for e in extents {
    w.u32(e.length)
    w.u32(e.flags)
  }
  return w.bytes
}
