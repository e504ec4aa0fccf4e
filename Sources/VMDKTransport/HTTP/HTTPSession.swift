// The request side of HTTPStore: a keep-alive connection borrowed from a pool for each
// exchange, the retry loop around it, and the two requests the store makes (the size, and a
// byte range into the caller's memory), with every status, length and range the server sends
// checked against what was asked.

import Logging

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// What HTTPStore keeps under its lock: where its connections come from and the facts the
/// first answer gave. Unchecked Sendable: HTTPStore only touches it under its mutex, one
/// request at a time.
final class HTTPSession: @unchecked Sendable {
  let url: HTTPURL
  let name: String
  let options: TransportOptions
  let pool: HTTPConnectionPool
  /// Exchanges asked again on a new connection after a failure, for diagnostics and tests.
  private(set) var reconnects = 0
  /// The ETag the server gave when the store opened: a range answered from another version
  /// of the file is refused.
  var entityTag: String?

  init(url: HTTPURL, options: TransportOptions, pool: HTTPConnectionPool) {
    self.url = url
    self.name = url.description
    self.options = options
    self.pool = pool
  }

  // MARK: Retries

  /// Runs `body` on a connection from the pool (a new one when it has none) and gives the
  /// connection back after a complete exchange. A failure closes the connection; a retryable
  /// one (connection errors, timeouts, 502/503/504) is retried on a new connection after
  /// `options.backoff(attempt:)`, up to `options.retries` times, logged as a warning. A reused
  /// connection that the server closed before answering (an idle keep-alive timeout) is made
  /// again at once, without counting as a retry.
  func perform<T>(_ what: String, offset: UInt64?, _ body: (HTTPConnection) throws -> T) throws -> T {
    var attempt = 0
    var reopenedIdle = false
    var fresh = false
    while true {
      var used: HTTPConnection?
      var reused = false
      var answered = false
      do {
        let c = try fresh ? HTTPConnection(url, options: options, name: name) : connection()
        used = c
        reused = c.responsesRead > 0
        let before = c.bytesReceived
        defer { answered = c.bytesReceived > before }
        let result = try body(c)
        pool.giveBack(c, for: url)
        return result
      } catch let e as VMDKError {
        used?.close()
        // Pooled connections may all be stale alike: the next try makes a new one.
        fresh = true
        if reused && !answered && !reopenedIdle && e.code == .connectionLost {
          reopenedIdle = true
          reconnects += 1
          Logger(label: LogLabel.http).info("\(name): the server closed the idle connection; connecting again")
          continue
        }
        guard e.isRetryable else { throw e.at(file: name, offset: offset) }
        attempt += 1
        guard options.pauseBeforeRetry(attempt, after: e, name: name, what: what) else {
          var last = e.at(file: name, offset: offset)
          if options.retries > 0 { last.message += " (gave up after \(options.retries) retries)" }
          throw last
        }
        reconnects += 1
      } catch {
        used?.close()
        throw error
      }
    }
  }

  /// An idle connection from the pool, or a new one.
  private func connection() throws -> HTTPConnection {
    try pool.take(for: url) ?? HTTPConnection(url, options: options, name: name)
  }

  // MARK: Requests

  /// The file's size: HEAD's Content-Length, or, when HEAD does not give it, the total of a
  /// one-byte range's Content-Range. Also records the ETag.
  func fetchSize() throws -> UInt64 {
    let head = try perform("HEAD", offset: nil) { c -> HTTPResponse in
      try c.send(method: "HEAD", url: url, fields: [])
      let r = try c.readHead()
      c.finishedResponseWithoutBody()
      // 405/501: no HEAD here; the range below tells the size instead.
      guard r.status == 200 || r.status == 405 || r.status == 501 else {
        throw HTTPSession.statusError(r, name: name, offset: nil)
      }
      if !r.keepsAlive || r.status != 200 { c.close() }
      return r
    }
    if head.status == 200, let length = try head.contentLength(url: name) {
      entityTag = head.field("etag")
      return length
    }
    return try fetchSizeFromRange()
  }

  /// The size from `Range: bytes=0-0`: 206's Content-Range total, or 416's `bytes */0` (an
  /// empty file).
  private func fetchSizeFromRange() throws -> UInt64 {
    try perform("GET bytes=0-0", offset: 0) { c -> UInt64 in
      try c.send(method: "GET", url: url, fields: [("Range", "bytes=0-0")])
      let r = try c.readHead()
      if r.status == 416, let total = r.unsatisfiedRangeTotal() {
        c.close()
        return total
      }
      guard r.status == 206 else { throw rangeStatusError(r, offset: 0, last: 0) }
      guard let range = try r.contentRange(url: name), let total = range.total, range.first == 0, range.last == 0
      else {
        throw VMDKError(.protocolError, "the answer to bytes=0-0 gives no total size in Content-Range", file: name)
      }
      var one: UInt8 = 0
      var received = 0
      try withUnsafeMutableBytes(of: &one) { try c.readBody(into: $0, received: &received) }
      if !r.keepsAlive { c.close() }
      entityTag = r.field("etag")
      return total
    }
  }

  /// Fetches `buffer.count` bytes at `offset` (which the caller keeps inside the file of
  /// `size` bytes) with one range request; `received` counts the bytes that have landed in
  /// `buffer`, also when the request fails halfway. The answer must be 206 with exactly the
  /// range asked for.
  func fetchRange(
    _ c: HTTPConnection, offset: UInt64, size: UInt64, into buffer: UnsafeMutableRawBufferPointer,
    received: inout Int
  ) throws {
    let last = offset + UInt64(buffer.count) - 1
    try c.send(method: "GET", url: url, fields: [("Range", "bytes=\(offset)-\(last)")])
    let r = try c.readHead()
    guard r.status == 206 else { throw rangeStatusError(r, offset: offset, last: last) }
    let delimited = try check(r, offset: offset, last: last, size: size)
    try c.readBody(into: buffer, received: &received)
    if !r.keepsAlive || !delimited { c.close() }
  }

  /// A 206 must carry exactly the range asked for, of a file of the size known, with a
  /// Content-Length (when given) of the range's length, without a transfer coding, and of the
  /// same version (ETag) as when the store opened. Returns whether a Content-Length delimits
  /// the body (else the server ends it by closing, and the connection cannot be reused).
  private func check(_ r: HTTPResponse, offset: UInt64, last: UInt64, size: UInt64) throws -> Bool {
    func refuse(_ code: VMDKError.Code, _ why: String) -> VMDKError {
      VMDKError(code, "bad answer to bytes=\(offset)-\(last): \(why)", file: name, offset: offset)
    }
    if r.hasTransferCoding {
      throw refuse(
        .protocolError, "a transfer coding (\(r.field("transfer-encoding")!.prefix(40))) is not supported for ranges")
    }
    guard let range = try r.contentRange(url: name) else {
      throw refuse(.protocolError, "no Content-Range (a multipart answer?)")
    }
    guard range.first == offset, range.last == last else {
      throw refuse(.protocolError, "the server sent bytes \(range.first)-\(range.last)")
    }
    if let total = range.total, total != size {
      throw refuse(.fileAccess, "the file's size changed on the server from \(size) to \(total) bytes")
    }
    let length = try r.contentLength(url: name)
    if let length, length != last - offset + 1 {
      throw refuse(.protocolError, "Content-Length is \(length), the range holds \(last - offset + 1) bytes")
    }
    if let entityTag, let now = r.field("etag"), now != entityTag {
      throw refuse(.fileAccess, "the file changed on the server (ETag \(entityTag), now \(now.prefix(80)))")
    }
    return length != nil
  }

  /// The error for an answer to a range request that is not 206: a 200 means the server
  /// ignores ranges (and would send the whole file).
  private func rangeStatusError(_ r: HTTPResponse, offset: UInt64, last: UInt64) -> VMDKError {
    guard r.status == 200 else { return HTTPSession.statusError(r, name: name, offset: offset) }
    return VMDKError(
      .protocolError, "the server ignores range requests (it answered 200 to bytes=\(offset)-\(last))", file: name,
      offset: offset)
  }

  /// The error for a status that is not the one asked for.
  static func statusError(_ r: HTTPResponse, name: String, offset: UInt64?) -> VMDKError {
    let text = "the server answered \(r.status) \(r.reason.prefix(100))"
    switch r.status {
    case 404, 410: return VMDKError(.fileNotFound, text, file: name, offset: offset)
    case 401, 403: return VMDKError(.fileAccess, text, file: name, offset: offset)
    case 416: return VMDKError(.outOfRange, text, file: name, offset: offset)
    case 502, 503, 504: return VMDKError(.serverNotAvailable, text, file: name, offset: offset, isRetryable: true)
    case 500...599: return VMDKError(.serverNotAvailable, text, file: name, offset: offset)
    case 300...399:
      let target = r.field("location").map { " to \($0.prefix(200))" } ?? ""
      return VMDKError(.notSupported, "\(text): a redirect\(target), which is not followed", file: name, offset: offset)
    default: return VMDKError(.protocolError, "\(text), which was not expected", file: name, offset: offset)
    }
  }
}
