// libFuzzer entry point for the transport layer's parsers of untrusted bytes: what a web
// server or an NBD server sends, and the URLs, NBD URIs and configuration files users write.
// Built by `Fuzz/run.sh transport` together with the VMDKTransport sources but Net/TLS.swift
// (OpenSSL; Fuzz/TLSStandIn.swift stands in) and LocalFile.swift (C shims), as one module.
//
// Every input goes to every parser: as a response head, as the byte stream of a web server
// answering a HEAD and two range requests, as lines of URLs, extent names and URIs, as a
// configuration file, and as the byte stream of an NBD server answering the handshake, a read,
// a block status and a write. A trap, an ASan report, a large allocation, a hang, or a broken
// invariant (checked with `check`, which traps) is a finding.

#if canImport(Glibc)
  import Glibc
#endif

/// FUZZ_TRACE=1 prints how far each input got (to check that a seed gets through).
private let tracing = getenv("FUZZ_TRACE") != nil
private func trace(_ line: @autoclosure () -> String) {
  if tracing {
    print(line())
    fflush(stdout)
  }
}

/// Traps when `condition` is false: an invariant the parsers promise.
private func check(_ condition: @autoclosure () -> Bool, _ what: @autoclosure () -> String) {
  if !condition() { fatalError("invariant broken: \(what())") }
}

/// A server whose answers are the fuzz input: every receive takes the next bytes (a few at a
/// time for `recvSome`, so that heads and blank lines split across receives); what the client
/// sends is dropped. The end of the input is the server closing the connection.
final class FakeServer: ByteChannel {
  private let bytes: [UInt8]
  private var at = 0
  private var closed = false
  private var receives = 0
  /// How many bytes each `recvSome` hands out at most, in turn.
  private static let pieces = [5, 1, 64, 3, 4096, 2]

  init(_ bytes: [UInt8]) { self.bytes = bytes }

  func sendAll(_ buffer: UnsafeRawBufferPointer) throws {
    guard !closed else { throw Net.closedError("fuzz") }
  }
  func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws {
    guard !closed, bytes.count - at >= buffer.count else {
      at = bytes.count
      throw VMDKError(.connectionLost, "the fake server has no more bytes", file: "fuzz", isRetryable: true)
    }
    if buffer.count > 0 {
      bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + at, byteCount: buffer.count) }
    }
    at += buffer.count
  }
  func recvSome(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    guard !closed else { throw Net.closedError("fuzz") }
    receives += 1
    let n = min(buffer.count, bytes.count - at, FakeServer.pieces[receives % FakeServer.pieces.count])
    if n > 0 {
      bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + at, byteCount: n) }
    }
    at += n
    return n
  }
  func close() { closed = true }
}

// MARK: HTTP

/// The input as a response head: parsed, then every value read from it.
private func httpHead(_ bytes: [UInt8]) {
  guard let r = try? HTTPResponse.parse(bytes[...], url: "fuzz") else { return }
  check((100...999).contains(r.status), "status \(r.status)")
  _ = (r.keepsAlive, r.hasTransferCoding, r.field("etag"), r.field("location"))
  _ = HTTPSession.statusError(r, name: "fuzz", offset: nil)
  if let n = try? r.contentLength(url: "fuzz") { check(n < 1_000_000_000_000_000_000, "Content-Length \(n)") }
  if let range = try? r.contentRange(url: "fuzz") {
    check(range.first <= range.last && range.total.map { range.last < $0 } ?? true, "Content-Range \(range)")
  }
  _ = r.unsatisfiedRangeTotal()
}

/// The input as what a web server sends on one keep-alive connection to HEAD and then two
/// range requests (the first KiB of the file, then the next), as HTTPSession asks them.
private func httpExchange(_ bytes: [UInt8]) {
  let url = HTTPURL(isTLS: false, host: "fuzz.example", segments: ["disk.vmdk"])
  let c = HTTPConnection(channel: FakeServer(bytes), name: "fuzz")
  let session = HTTPSession(url: url, options: TransportOptions(), pool: HTTPConnectionPool())
  guard let head = try? c.readHead() else { return }
  c.finishedResponseWithoutBody()
  trace("http: HEAD answered \(head.status)")
  guard head.status == 200, let size = try? head.contentLength(url: "fuzz"), size > 0 else { return }
  session.entityTag = head.field("etag")
  var offset: UInt64 = 0
  for _ in 0..<2 where offset < size && c.isOpen {
    var buffer = [UInt8](repeating: 0, count: Int(min(size - offset, 1024)))
    var received = 0
    do {
      try buffer.withUnsafeMutableBytes {
        try session.fetchRange(c, offset: offset, size: size, into: $0, received: &received)
      }
    } catch {
      trace("http: range \(offset): \(error)")
      check(error is VMDKError, "\(error)")
      check(received <= buffer.count, "received \(received) of \(buffer.count)")
      return
    }
    check(received == buffer.count, "received \(received) of \(buffer.count)")
    trace("http: range \(offset)+\(buffer.count) read")
    offset += UInt64(buffer.count)
  }
}

// MARK: Locations

/// The descriptor URL extent names are resolved against.
private let locatorBase = HTTPURL(isTLS: false, host: "fuzz.example", segments: ["vms", "disk.vmdk"])

/// Each line of the input (at most 16) as an http(s) URL, an extent name in a descriptor on a
/// web server, a disk location and a percent-encoded string. A URL or NBD URI that parses must
/// print as one that parses to the same thing.
private func locations(_ text: String) {
  for line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).prefix(16) {
    let s = String(line)
    _ = HTTPURL.isURL(s)
    if let u = try? HTTPURL(s) {
      let printed = u.description
      check(printed.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f }, "HTTPURL \(printed) is not printable ASCII")
      check(u.requestTarget.hasPrefix("/"), "request target \(u.requestTarget)")
      let again = try? HTTPURL(printed)
      check(again == u, "HTTPURL \(s) printed as \(printed), parsed again as \(String(describing: again))")
      _ = (u.hostHeader, u.sameOrigin(u))
    }
    // The line as an extent's file name in a descriptor at `locatorBase` (HTTPLocator): the URL
    // it resolves to prints in a canonical form that parses to the same form.
    if let (target, _) = try? HTTPLocator.target(of: s, base: locatorBase) {
      let printed = target.description
      check(printed.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f }, "\(s) resolves to \(printed), not printable ASCII")
      let again = (try? HTTPURL(printed))?.description
      check(again == printed, "\(s.debugDescription) resolves to \(printed), which parses as \(again ?? "nothing")")
    }
    if let d = PercentEncoding.decoded(line) {
      check(PercentEncoding.decoded(PercentEncoding.encodedPath(d)) == d, "encodedPath of \(d) does not decode back")
    }
    if let loc = try? DiskLocation(parsing: s) {
      let printed = loc.description
      trace("location: \(loc)")
      _ = loc.transport
      if case .nbd = loc {
        let again = try? DiskLocation(parsing: printed)
        check(again == loc, "\(s) is \(loc), printed as \(printed), parsed again as \(String(describing: again))")
      }
    }
  }
}

// MARK: Configuration

/// The input as a configuration file.
private func configuration(_ text: String) {
  guard let c = try? TransportConfig(parsing: text, file: "fuzz.conf") else { return }
  trace("config: parsed")
  let t = c.transport
  check(t.backoffMax >= t.backoffInitial, "backoff \(t.backoffInitial) … \(t.backoffMax)")
  check((1...256).contains(t.requestsInFlight), "requestsInFlight \(t.requestsInFlight)")
  check(
    t.requestBytes >= 4096 && t.requestBytes <= TransportOptions.maxRequestBytes && t.requestBytes % 4096 == 0,
    "requestSize \(t.requestBytes)")
  check(Set(c.transportOrder).count == c.transportOrder.count, "transports \(c.transportOrder)")
}

// MARK: NBD

/// Runs `batch` on `link`; false when the link is out of step (any error but one the server
/// reported in a well-formed reply).
private func pump(_ link: NBDLink, _ batch: inout NBDBatch) -> Bool {
  do {
    try NBDPipeline(link: link, name: "fuzz", window: 2).pump(&batch)
    trace("nbd: \(batch.what) done, \(batch.extents.count) extents")
    return true
  } catch let e as VMDKError {
    trace("nbd: \(batch.what): \(e)")
    return e.code == NBDPipeline.serverReported
  } catch {
    check(false, "\(error)")
    return false
  }
}

/// The input as an NBD server's bytes: the handshake for export "disk" (structured replies,
/// base:allocation, GO with block sizes), then, as NBDClient asks them with 4 KiB requests and
/// two in flight, a read of the first two requests, a block status of up to 1 GiB, and a
/// write of one request.
private func nbd(_ bytes: [UInt8]) {
  let server = FakeServer(bytes)
  let n: NBDNegotiated
  do {
    n = try NBDHandshake.run(channel: server, export: "disk", name: "fuzz")
  } catch {
    return
  }
  trace("nbd: negotiated \(n)")
  check(n.minimumBlock.nonzeroBitCount == 1 && n.minimumBlock <= 1 << 16, "minimum block \(n.minimumBlock)")
  check(n.maximumPayload >= n.minimumBlock, "maximum payload \(n.maximumPayload)")
  check(n.size <= UInt64(Int64.max), "export size \(n.size)")
  guard n.size > 0 else { return }
  let link = NBDLink(channel: server, negotiated: n)
  // The request size as NBDClient.init derives it from the options (here 4 KiB).
  var piece = min(4096, Int(n.maximumPayload))
  piece -= piece % Int(n.minimumBlock)
  piece = max(piece, Int(n.minimumBlock))

  let readLength = Int(min(n.size, UInt64(2 * piece)))
  var data = [UInt8](repeating: 0xA5, count: readLength)
  let readOK = data.withUnsafeMutableBytes { buffer -> Bool in
    var batch = NBDBatch(
      command: NBDWire.cmdRead, what: "read", start: 0, length: UInt64(readLength), pieceSize: UInt64(piece),
      payload: .read(buffer))
    let inStep = pump(link, &batch)
    if inStep && batch.failure == nil {
      check(batch.doneCount == batch.requests.count, "a read done with \(batch.doneCount) requests answered")
    }
    return inStep
  }
  guard readOK else { return }

  if n.context != nil {
    let span = min(n.size, 1 << 30)
    var batch = NBDBatch(
      command: NBDWire.cmdBlockStatus, what: "block status", start: 0, length: span, pieceSize: UInt64(UInt32.max),
      payload: .none)
    guard pump(link, &batch) else { return }
    if batch.failure == nil {
      // NBDClient takes the first extent of every answer.
      check(!batch.extents.isEmpty, "block status done without an extent")
      // Extents are adjacent, non-empty, from the request's start, inside it.
      var at: UInt64 = 0
      for x in batch.extents {
        check(x.start == at && x.length > 0 && x.end <= span, "extent \(x) after \(at) of \(span)")
        at = x.end
      }
    }
  }

  let writeLength = Int(min(n.size, UInt64(piece)))
  let source = [UInt8](repeating: 0x5A, count: writeLength)
  _ = source.withUnsafeBytes { buffer -> Bool in
    var batch = NBDBatch(
      command: NBDWire.cmdWrite, what: "write", start: 0, length: UInt64(writeLength), pieceSize: UInt64(piece),
      payload: .write(buffer))
    return pump(link, &batch)
  }
}

/// Feeds `bytes` to every parser of untrusted input. Errors are the expected outcome.
private func exercise(_ bytes: [UInt8]) {
  let text = String(decoding: bytes, as: UTF8.self)
  httpHead(bytes)
  httpExchange(bytes)
  locations(text)
  configuration(text)
  nbd(bytes)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  exercise(Array(UnsafeBufferPointer(start: data, count: size)))
  return 0
}
