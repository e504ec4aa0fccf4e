// NBDClient: a client of the Network Block Device protocol (fixed newstyle handshake,
// optional STARTTLS, structured replies, base:allocation block status) over TCP or a Unix
// socket. An NBD export is a whole virtual disk (the server already resolved the format), so
// this is a ByteStore of the disk's bytes, not of a VMDK file.
//
// Every call becomes a batch of requests of `requestBytes` (at most 32 MiB and what the server
// allows) with up to `requestsInFlight` outstanding (NBDPipeline). Calls are serialized on the
// connection by a lock, so the client is safe to share between threads. Requests go out at the
// caller's offsets: the client does no read-modify-write for a server whose minimum block size
// (NBD_INFO_BLOCK_SIZE) is larger than the caller's alignment.
//
// Retries: a retryable failure (connection lost or refused, a timeout, the server shutting
// down) drops the connection, waits `options.backoff(attempt:)`, reconnects with the full
// handshake, checks that the export did not change, and sends again every request of the call
// that had not completed. `options.retries` bounds the failed attempts in a row without
// progress: an attempt that completed at least one request starts the count again, so a long
// transfer over a flaky server finishes, and a server that stays down fails within
// retries × (backoff + timeouts). Non-retryable errors (EIO, EPERM, protocol errors, an
// unknown export) fail at once. Retries and reconnects are logged at .warning.

import Logging

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
  public var end: UInt64 { start + length }
  public var description: String { "{\(start)+\(length) hole \(isHole) zero \(isZero)}" }
}

/// A client of one NBD export.
public final class NBDClient: BlockDevice {
  /// Where the server listens.
  public typealias Address = SocketAddress

  /// The largest request sent (reads and writes are split into pieces of at most this size).
  public static let maxRequest = TransportOptions.maxRequestBytes
  /// The largest write-zeroes or trim request: 2 GiB, a multiple of every block size.
  static let maxZeroRequest: UInt64 = 1 << 31
  /// The most requests kept in flight, whatever the options say.
  static let maxInFlight = 1024
  /// How much block status one request asks for.
  static let statusSpan: UInt64 = 1 << 30

  public let address: Address
  public let export: String
  /// `nbd://host:port/export` or `nbd+unix:///export?socket=PATH` (`nbds` with TLS).
  public let name: String
  public let isWritable: Bool
  /// Whether the session runs over TLS (NBD_OPT_STARTTLS).
  public let usesTLS: Bool
  public let options: TransportOptions
  /// The export's size in bytes, from NBD_INFO_EXPORT.
  public let exportSize: UInt64
  /// The transmission flags the server sent.
  public let transmissionFlags: UInt16
  /// Whether the server agreed to structured replies.
  public let structuredReplies: Bool
  /// Whether block status (base:allocation) is available.
  public let supportsBlockStatus: Bool
  /// Whether the server takes NBD_CMD_WRITE_ZEROES (otherwise zeros are written as data).
  public var supportsWriteZeroes: Bool { transmissionFlags & NBDWire.transSendWriteZeroes != 0 }
  /// Whether the server takes NBD_CMD_TRIM (otherwise trim does nothing).
  public var supportsTrim: Bool { transmissionFlags & NBDWire.transSendTrim != 0 }
  /// Bytes per read or write request: the options' size, at most 32 MiB and the server's
  /// maximum payload, a multiple of its minimum block size.
  public let requestBytes: Int

  private let state: Locked<State>

  private struct State {
    /// The live connection; nil after a failure until the next attempt reconnects.
    var link: NBDLink?
    /// close() was called: no more reconnects.
    var closed = false
    /// The last block status answer, for nextData/nextHole.
    var cache: [NBDExtent] = []
    /// Reconnections after failures so far.
    var reconnects = 0
  }

  /// The start of the message of the `tlsFailure` for a server that does not offer TLS (it
  /// refused NBD_OPT_STARTTLS), as opposed to a TLS session that failed.
  static let startTLSRefused = "the server refused STARTTLS"

  /// Whether `error` says the server does not offer TLS at all (it refused NBD_OPT_STARTTLS):
  /// only then may a client that prefers TLS fall back to plain NBD.
  public static func isTLSUnavailable(_ error: VMDKError) -> Bool {
    error.code == .tlsFailure && error.message.hasPrefix(startTLSRefused)
  }

  /// How many times the client reconnected after a failure (for tools and tests).
  public var reconnects: Int { state.withLock { $0.reconnects } }

  /// Connects, negotiates and opens `export`, retrying retryable failures as `options` say.
  /// With `tls`, the session is upgraded with NBD_OPT_STARTTLS before any other option; a server
  /// that requires TLS when `tls` is false, or refuses STARTTLS, gives `tlsFailure`. Throws
  /// `serverNotFound`, `connectionRefused`, `timeout`, `serverNotAvailable` (the server refused
  /// the export, naming it), `protocolError`, `tlsFailure`, `fileReadOnly` (a writable open of
  /// a read-only export).
  public init(
    _ address: Address, export: String, writable: Bool = false, tls: Bool = false,
    options: TransportOptions = TransportOptions()
  ) throws {
    self.address = address
    self.export = export
    self.isWritable = writable
    self.usesTLS = tls
    self.options = options
    let name = NBDClient.uri(address, export: export, tls: tls)
    self.name = name
    let link = try NBDClient.retrying(options: options, name: name) { _, _ in
      try NBDLink.open(address, export: export, writable: writable, tls: tls, options: options, name: name)
    }
    let n = link.negotiated
    exportSize = n.size
    transmissionFlags = n.flags
    structuredReplies = n.structured
    supportsBlockStatus = n.context != nil
    var bytes = min(max(options.requestBytes, 1), NBDClient.maxRequest, Int(n.maximumPayload))
    bytes -= bytes % Int(n.minimumBlock)
    requestBytes = max(bytes, Int(n.minimumBlock))
    state = Locked(State(link: link))
  }

  /// Connects like the designated initializer with `timeout` seconds for the connect and for
  /// every send and receive, and without retries: the first failure is thrown and a lost
  /// connection stays lost.
  public convenience init(_ address: Address, export: String, writable: Bool = false, timeout: Double) throws {
    var options = TransportOptions()
    options.connectTimeout = timeout
    options.readTimeout = timeout
    options.writeTimeout = timeout
    options.retries = 0
    try self.init(address, export: export, writable: writable, options: options)
  }

  deinit { close() }

  /// The URI of an export, as libnbd and qemu write it.
  static func uri(_ address: Address, export: String, tls: Bool) -> String {
    let scheme = tls ? "nbds" : "nbd"
    switch address {
    case .tcp(let host, let port):
      let h = host.contains(":") ? "[\(host)]" : host
      return "\(scheme)://\(h):\(port)/\(export)"
    case .unix(let path): return "\(scheme)+unix:///\(export)?socket=\(path)"
    }
  }

  /// Says goodbye (NBD_CMD_DISC) and closes. Further calls throw `connectionLost`.
  public func close() {
    state.withLock { s in
      s.closed = true
      s.link?.disconnect()
      s.link = nil
    }
  }

  // MARK: ByteStore

  public func size() throws -> UInt64 { exportSize }
  public var blockDevice: (any BlockDevice)? { self }

  /// Reads up to `buffer.count` bytes at `offset` (fewer only at the end of the export).
  public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    guard offset < exportSize, buffer.count > 0 else { return 0 }
    let total = Int(min(UInt64(buffer.count), exportSize - offset))
    let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<total])
    var batch = NBDBatch(
      command: NBDWire.cmdRead, what: "read", start: offset, length: UInt64(total), pieceSize: UInt64(requestBytes),
      payload: .read(target))
    try run(&batch)
    return total
  }

  /// Writes all of `buffer` at `offset`; it must end inside the export.
  public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
    try checkWritable(offset: offset, length: UInt64(buffer.count), what: "a write")
    guard buffer.count > 0 else { return }
    var batch = NBDBatch(
      command: NBDWire.cmdWrite, what: "write", start: offset, length: UInt64(buffer.count),
      pieceSize: UInt64(requestBytes), payload: .write(buffer))
    try run(&batch, changesAllocation: true)
  }

  /// NBD_CMD_FLUSH when the server offers it (NBD_FLAG_SEND_FLUSH); otherwise nothing to do.
  public func flush() throws {
    guard isWritable, transmissionFlags & NBDWire.transSendFlush != 0 else { return }
    var batch = NBDBatch(command: NBDWire.cmdFlush, what: "flush", start: 0, length: 0, pieceSize: 1, payload: .none)
    try run(&batch)
  }

  /// Makes `length` bytes at `offset` read as zeros: NBD_CMD_WRITE_ZEROES when the server
  /// offers it (it may free the space), otherwise writes of one zero-filled request buffer.
  public func writeZeroes(at offset: UInt64, length: UInt64) throws {
    try checkWritable(offset: offset, length: length, what: "write-zeroes")
    guard length > 0 else { return }
    if supportsWriteZeroes {
      var batch = NBDBatch(
        command: NBDWire.cmdWriteZeroes, what: "write-zeroes", start: offset, length: length,
        pieceSize: NBDClient.maxZeroRequest, payload: .none)
      try run(&batch, changesAllocation: true)
      return
    }
    let bytes = Int(min(length, UInt64(requestBytes)))
    let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 16)
    defer { zeros.deallocate() }
    zeros.initializeMemory(as: UInt8.self, repeating: 0)
    var batch = NBDBatch(
      command: NBDWire.cmdWrite, what: "write", start: offset, length: length, pieceSize: UInt64(bytes),
      payload: .repeated(UnsafeRawBufferPointer(zeros)))
    try run(&batch, changesAllocation: true)
  }

  /// Tells the server that `length` bytes at `offset` are no longer needed (NBD_CMD_TRIM; they
  /// may then read as anything). Does nothing when the server does not offer trim.
  public func trim(at offset: UInt64, length: UInt64) throws {
    try checkWritable(offset: offset, length: length, what: "a trim")
    guard length > 0, supportsTrim else { return }
    var batch = NBDBatch(
      command: NBDWire.cmdTrim, what: "trim", start: offset, length: length, pieceSize: NBDClient.maxZeroRequest,
      payload: .none)
    try run(&batch, changesAllocation: true)
  }

  private func checkWritable(offset: UInt64, length: UInt64, what: String) throws {
    guard isWritable else { throw VMDKError(.fileReadOnly, "opened read-only", file: name, offset: offset) }
    guard offset <= exportSize, length <= exportSize - offset else {
      throw VMDKError(
        .outOfRange, "\(what) of \(length) bytes ends past the export's \(exportSize) bytes", file: name,
        offset: offset)
    }
  }

  // MARK: Block status

  /// The allocation of `length` bytes at `offset` (one NBD_CMD_BLOCK_STATUS request; the
  /// server may answer for less than asked, never more: extents are clipped to the request).
  /// Throws `notSupported` when the server did not agree to base:allocation.
  public func blockStatus(at offset: UInt64, length: UInt32) throws -> [NBDExtent] {
    guard supportsBlockStatus else {
      throw VMDKError(.notSupported, "the server offers no base:allocation block status", file: name)
    }
    guard offset < exportSize, length > 0 else { return [] }
    var batch = NBDBatch(
      command: NBDWire.cmdBlockStatus, what: "block status", start: offset,
      length: min(UInt64(length), exportSize - offset), pieceSize: UInt64(UInt32.max), payload: .none)
    try run(&batch)
    return batch.extents
  }

  /// The allocation of the whole export, adjacent extents with the same flags merged.
  public func allocationMap() throws -> [NBDExtent] {
    var result: [NBDExtent] = []
    var at: UInt64 = 0
    while at < exportSize {
      let extents = try blockStatus(at: at, length: UInt32(min(exportSize - at, NBDClient.statusSpan)))
      for x in extents {
        if let p = result.last, p.isHole == x.isHole, p.isZero == x.isZero, p.end == x.start {
          result[result.count - 1].length += x.length
        } else {
          result.append(x)
        }
      }
      guard let last = extents.last else {
        throw VMDKError(.protocolError, "block status answered no extent", file: name, offset: at)
      }
      at = last.end
    }
    return result
  }

  /// The first byte at or after `offset` that holds data: not NBD_STATE_ZERO (a hole that does
  /// not read as zeros is data). `UInt64.max` when no data follows; nil without block status.
  public func nextData(from offset: UInt64) throws -> UInt64? {
    try scan(from: offset, toZero: false)
  }

  /// The first byte at or after `offset` that reads as zeros (NBD_STATE_ZERO); the end of the
  /// export counts as a hole. nil without block status.
  public func nextHole(from offset: UInt64) throws -> UInt64? {
    try scan(from: offset, toZero: true)
  }

  /// The block-status extent that contains `offset` (from the cached answer when it covers
  /// it), or nil without block status or past the end. What qemu's map calls a hole is an
  /// extent with both flags; zeros that are allocated have only `isZero`.
  public func status(at offset: UInt64) throws -> NBDExtent? {
    guard supportsBlockStatus, offset < exportSize else { return nil }
    return try state.withLock { s in try extent(containing: offset, &s) }
  }

  /// Walks the extents from `offset` to the first one whose zero flag is `toZero`, asking the
  /// server only when the cached answer does not cover the position. One lock for the whole
  /// walk, so that a write on another thread cannot slip in between an answer and its caching.
  private func scan(from offset: UInt64, toZero: Bool) throws -> UInt64? {
    guard supportsBlockStatus else { return nil }
    return try state.withLock { s in
      var at = offset
      while at < exportSize {
        let extent = try extent(containing: at, &s)
        if extent.isZero == toZero { return at }
        at = extent.end
      }
      return toZero ? max(offset, exportSize) : UInt64.max
    }
  }

  /// The extent holding byte `at` (< exportSize), from the cache or a new block status request
  /// whose answer replaces the cache.
  private func extent(containing at: UInt64, _ s: inout State) throws -> NBDExtent {
    if let cached = NBDClient.lookup(at, in: s.cache) { return cached }
    var batch = NBDBatch(
      command: NBDWire.cmdBlockStatus, what: "block status", start: at,
      length: min(exportSize - at, NBDClient.statusSpan), pieceSize: UInt64(UInt32.max), payload: .none)
    try perform(&batch, &s)
    s.cache = batch.extents
    return batch.extents[0]  // the pipeline never completes block status without an extent
  }

  /// Binary search of sorted, adjacent extents.
  private static func lookup(_ at: UInt64, in extents: [NBDExtent]) -> NBDExtent? {
    var low = 0
    var high = extents.count
    while low < high {
      let mid = (low + high) / 2
      if extents[mid].end <= at {
        low = mid + 1
      } else {
        high = mid
      }
    }
    return low < extents.count && extents[low].start <= at ? extents[low] : nil
  }

  // MARK: Retries

  /// Runs a batch on the connection under the lock. `changesAllocation` drops the cached
  /// block status.
  private func run(_ batch: inout NBDBatch, changesAllocation: Bool = false) throws {
    try state.withLock { s in
      if changesAllocation { s.cache = [] }
      try perform(&batch, &s)
    }
  }

  /// Runs a batch, reconnecting and sending again what did not complete after a retryable
  /// failure. The caller holds the lock.
  private func perform(_ batch: inout NBDBatch, _ s: inout State) throws {
    guard !s.closed else { throw VMDKError(.connectionLost, "the client was closed", file: name) }
    let window = min(max(options.requestsInFlight, 1), NBDClient.maxInFlight)
    try NBDClient.retrying(options: options, name: name) { attempt, progressed in
      let link = try connection(&s, attempt: attempt)
      batch.resetUnfinished()
      let before = batch.doneCount
      defer { progressed = batch.doneCount > before }
      do {
        try NBDPipeline(link: link, name: name, window: window).pump(&batch)
      } catch let e as VMDKError where e.code == NBDPipeline.serverReported {
        // Still in step, nothing in flight. ESHUTDOWN obliges the client to a soft disconnect
        // (NBD_CMD_DISC); another retryable error drops the link only to reconnect for a retry.
        let real = (e.underlying as? VMDKError) ?? e
        if real.code == .serverShutdown || (real.isRetryable && options.retries > 0) {
          link.disconnect()
          s.link = nil
        }
        throw real
      } catch {
        s.link = nil
        throw error
      }
    }
  }

  /// The live link, or a new one when an earlier attempt lost it. A call that finds the link
  /// lost by an earlier call fails its first attempt with `connectionLost`, so that without
  /// retries a lost connection stays lost.
  private func connection(_ s: inout State, attempt: Int) throws -> NBDLink {
    if let link = s.link { return link }
    guard attempt > 0 else { throw Net.closedError(name) }
    let link = try NBDLink.open(
      address, export: export, writable: isWritable, tls: usesTLS, options: options, name: name)
    let n = link.negotiated
    guard n.size == exportSize, UInt64(requestBytes) <= UInt64(n.maximumPayload),
      requestBytes % Int(n.minimumBlock) == 0
    else {
      throw VMDKError(
        .protocolError, "after reconnecting, the export has \(n.size) bytes (was \(exportSize)) or new block sizes",
        file: name)
    }
    Logger(label: LogLabel.nbd).warning("\(name): reconnected (attempt \(attempt))")
    s.link = link
    s.reconnects += 1
    return link
  }

  /// Runs `body(attempt, &progressed)` until it succeeds, a non-retryable error, or
  /// `options.retries` failed attempts in a row; an attempt that set `progressed` (completed
  /// some requests) before failing starts the count again. Waits `options.backoff(attempt:)`
  /// between attempts. Errors that are not VMDKErrors are not retried.
  private static func retrying<T>(
    options: TransportOptions, name: String, _ body: (Int, inout Bool) throws -> T
  ) throws -> T {
    var failures = 0
    var attempt = 0
    while true {
      var progressed = false
      do {
        return try body(attempt, &progressed)
      } catch let e as VMDKError where e.isRetryable {
        failures = progressed ? 1 : failures + 1
        guard options.pauseBeforeRetry(failures, after: e, name: name, what: "a request") else { throw e }
        attempt += 1
      }
    }
  }
}
