// The HTTP transport against a real nginx on loopback: sizes, random ranges and whole-file
// digests equal to the local file's, 404, a server that is down or never answers (and how long
// the retries take), a restart in the middle of a long read, one connection shared by the
// files of a locator; against a scripted hostile server: a huge header, a wrong Content-Range,
// a 200 to a range, a chunked range, bad heads, every error status; HTTPLocator's resolution
// rules; and whole disks (TestImages, qemu's split, stream and snapshot images) opened by URL
// through the block layer. URL parsing is checked without a server.

import Dispatch
import Foundation
import Testing
import VMDKBlock
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#endif

// MARK: Fixtures

/// A deterministic generator (SplitMix64), so that a failing case can be replayed.
private struct SplitMix: RandomNumberGenerator {
  var state: UInt64
  mutating func next() -> UInt64 {
    state &+= 0x9e37_79b9_7f4a_7c15
    var z = state
    z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
    z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
    return z ^ (z >> 31)
  }
}

/// `count` bytes in which every MiB differs: one pseudo-random MiB with the MiB's number
/// stamped every 4 KiB, so that a block returned from the wrong place shows.
private func distinctBytes(_ count: Int) -> [UInt8] {
  var rng = SplitMix(state: 42)
  let mib = (0..<(1 << 20) / 8).flatMap { _ in withUnsafeBytes(of: rng.next()) { Array($0) } }
  var bytes = [UInt8](repeating: 0, count: count)
  bytes.withUnsafeMutableBytes { out in
    var at = 0
    var n: UInt32 = 0
    while at < count {
      let piece = min(mib.count, count - at)
      mib.withUnsafeBytes { out.baseAddress!.advanced(by: at).copyMemory(from: $0.baseAddress!, byteCount: piece) }
      var stamp = at
      while stamp + 4 <= at + piece {
        withUnsafeBytes(of: n.littleEndian) {
          (out.baseAddress! + stamp).copyMemory(from: $0.baseAddress!, byteCount: 4)
        }
        stamp += 4096
      }
      at += piece
      n += 1
    }
  }
  return bytes
}

/// Writes `bytes` to `path`, making the folders.
private func writeFile(_ path: String, _ bytes: [UInt8]) throws {
  try FileManager.default.createDirectory(
    atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
  guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
    throw ToolFailure("cannot write \(path)")
  }
}

/// Reads the whole store in pieces of `piece` bytes into a digest.
private func storeDigest(_ store: any ByteStore, piece: Int) throws -> String {
  let context = DigestContext(.sha256)
  var buffer = [UInt8](repeating: 0, count: piece)
  var offset: UInt64 = 0
  while true {
    let n = try buffer.withUnsafeMutableBytes { try store.read(at: offset, into: $0) }
    if n == 0 { break }
    buffer.withUnsafeBytes { context.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
    offset += UInt64(n)
  }
  return context.finalHex()
}

/// Options whose retries are quick, for tests.
private func quickOptions(retries: Int = 3) -> TransportOptions {
  var o = TransportOptions()
  o.retries = retries
  o.backoffInitial = 0.05
  o.backoffMax = 1
  o.connectTimeout = 5
  o.readTimeout = 10
  return o
}

// MARK: URLs

@Suite struct HTTPURLTests {
  @Test func parsesHostsPortsAndPaths() throws {
    let u = try HTTPURL("HTTP://Example.COM/disks/My%20Disk.vmdk")
    #expect(!u.isTLS && u.host == "example.com" && u.port == 80)
    #expect(u.segments == ["disks", "My Disk.vmdk"])
    #expect(u.description == "http://example.com/disks/My%20Disk.vmdk")
    let s = try HTTPURL("https://[::1]:8443/a/./b/../c.vmdk")
    #expect(s.isTLS && s.host == "::1" && s.port == 8443)
    #expect(s.segments == ["a", "c.vmdk"])
    #expect(s.description == "https://[::1]:8443/a/c.vmdk")
    #expect(try HTTPURL("https://h:443/x").description == "https://h/x")
    #expect(try HTTPURL("http://h").requestTarget == "/")
    // An encoded slash stays inside its segment; non-ASCII is encoded as UTF-8.
    #expect(try HTTPURL("http://h/a%2Fb/%C3%A9").segments == ["a/b", "é"])
    #expect(try HTTPURL("http://h/a%2Fb/%C3%A9").requestTarget == "/a%2Fb/%C3%A9")
  }

  @Test(arguments: [
    "ftp://h/x", "http://user:pw@h/x", "http://h/x?token=1", "http://h/x#frag", "http://h:0/x", "http://h:65536/x",
    "http://h:8o/x", "http://[::1/x", "http://[zz]/x", "http:///x", "http://h/a%2", "http://h/a%00b", "http://h/%ff",
    "http://h st/x",
  ])
  func refusesWhatItCannotUse(_ text: String) {
    let e = expectVMDKError(.invalidArgument) { _ = try HTTPURL(text) }
    #expect(e?.file == text)
  }

  @Test func tellsURLsFromPaths() {
    #expect(HTTPStore.isURL("http://h/x") && HTTPStore.isURL("HTTPS://h/x") && HTTPStore.isURL("Http://h"))
    #expect(!HTTPStore.isURL("/srv/http://x") && !HTTPStore.isURL("disk.vmdk") && !HTTPStore.isURL("http:/h"))
  }
}

// MARK: HTTPStore against nginx

@Suite struct HTTPStoreTests {
  @Test func randomRangesEqualTheFile() throws {
    try withTemporaryFolder { folder in
      let server = try NginxServer(prefix: folder)
      defer { server.stop() }
      let size = (5 << 20) + 777
      let bytes = distinctBytes(size)
      try writeFile("\(server.root)/disk.bin", bytes)
      let store = try HTTPStore("\(server.baseURL)/disk.bin", options: quickOptions())
      #expect(try store.size() == UInt64(size))
      #expect(store.name == "\(server.baseURL)/disk.bin")
      #expect(!store.isWritable)

      // Odd offsets and lengths: small (through the cache), medium, large (past it); across
      // the 1 MiB blocks; at and past the end. Four threads at once: the store is shared.
      let mib = 1 << 20
      let fixed: [(Int, Int)] = [
        (0, 1), (mib - 3, 10), (2 * mib - 1, 2), (mib - 1, 256 << 10), (size - 5, 100), (size - 1, 1), (size, 10),
        (size + 100, 10), (3, 3 * mib + 5), (0, size),
      ]
      var rng = SplitMix(state: 7)
      let random: [(Int, Int)] = (0..<400).map { i in
        let limit = [4096, 300 << 10, 3 << 20][i % 3]
        return (Int.random(in: 0..<size, using: &rng), Int.random(in: 1...limit, using: &rng))
      }
      let cases = fixed + random
      let failures = Locked<[String]>([])
      DispatchQueue.concurrentPerform(iterations: 4) { worker in
        for (i, (offset, count)) in cases.enumerated() where i % 4 == worker {
          do {
            let got = try store.readUpTo(at: UInt64(offset), count: count)
            let want = offset >= size ? [] : Array(bytes[offset..<min(size, offset + count)])
            if got != want { failures.withLock { $0.append("\(offset)+\(count): \(got.count) bytes differ") } }
          } catch {
            failures.withLock { $0.append("\(offset)+\(count): \(error)") }
          }
        }
      }
      #expect(failures.withLock { $0 } == [])
      #expect(store.reconnects == 0, "one keep-alive connection should carry every request")
    }
  }

  @Test func theWholeFileHasTheLocalDigest() throws {
    try withTemporaryFolder { folder in
      let server = try NginxServer(prefix: folder)
      defer { server.stop() }
      let path = "\(server.root)/big.bin"
      try writeFile(path, distinctBytes((21 << 20) + 4097))
      let store = try HTTPStore("\(server.baseURL)/big.bin")
      #expect(try storeDigest(store, piece: (3 << 20) + 1) == fileDigest(path, .sha256))
      // Small pieces go through the cache and still add up to the same file.
      #expect(try storeDigest(store, piece: 200_003) == fileDigest(path, .sha256))
    }
  }

  @Test func theFilesOfALocatorShareItsConnections() throws {
    try withTemporaryFolder { folder in
      let server = try NginxServer(prefix: folder)
      defer { server.stop() }
      let names = (0..<40).map { "extent-\($0).bin" }
      for (i, name) in names.enumerated() { try writeFile("\(server.root)/\(name)", [UInt8(i), 1, 2, 3]) }
      let locator = HTTPLocator(options: quickOptions())
      // Opened all at once, as a split disk's extents are, then read in turn.
      let stores = try names.map { try locator.open("\(server.baseURL)/\($0)", writable: false) }
      for (i, store) in stores.enumerated() { #expect(try store.readUpTo(at: 0, count: 1) == [UInt8(i)]) }
      let log = try server.requestLog()
      let connections = Set(log.map { $0.split(separator: " ")[0] })
      #expect(log.count == 80, "a HEAD and a GET per file")
      #expect(connections.count == 1, "one connection at a time was in use: \(connections.count) were made")
    }
  }

  @Test func aMissingFileIsFileNotFound() throws {
    try withTemporaryFolder { folder in
      let server = try NginxServer(prefix: folder)
      defer { server.stop() }
      let url = "\(server.baseURL)/no/such.vmdk"
      let e = expectVMDKError(.fileNotFound) { _ = try HTTPStore(url) }
      #expect(e?.file == url)
      #expect(e?.isRetryable == false)
      #expect(e?.message.contains("404") == true)
    }
  }

  @Test func writingIsRefused() throws {
    try withTemporaryFolder { folder in
      let server = try NginxServer(prefix: folder)
      defer { server.stop() }
      try writeFile("\(server.root)/d.bin", [1, 2, 3])
      let store = try HTTPStore("\(server.baseURL)/d.bin")
      expectVMDKError(.fileReadOnly) { try [9].withUnsafeBytes { try store.write(at: 0, from: $0) } }
      expectVMDKError(.fileReadOnly) { _ = try HTTPLocator().open("\(server.baseURL)/d.bin", writable: true) }
      #expect(try HTTPLocator().open("\(server.baseURL)/d.bin", writable: false).size() == 3)
    }
  }

  @Test func aServerThatIsDownIsARetryableRefusalWithinTheBackoffTime() throws {
    let port = try freeLoopbackPort()
    let options = quickOptions(retries: 3)
    let waits = (1...3).map { options.backoff(attempt: $0) }.reduce(0, +)
    let started = Date()
    let e = expectVMDKError(.connectionRefused) {
      _ = try HTTPStore("http://127.0.0.1:\(port)/d.vmdk", options: options)
    }
    let elapsed = Date().timeIntervalSince(started)
    #expect(e?.isRetryable == true)
    #expect(e?.file == "http://127.0.0.1:\(port)/d.vmdk")
    #expect(e?.message.contains("gave up after 3 retries") == true, "\(String(describing: e))")
    #expect(elapsed >= waits, "it should have waited between its retries")
    #expect(elapsed < waits + 2, "the retries took \(elapsed) s, the backoff allows \(waits) s")
  }

  @Test func aServerThatNeverAnswersTimesOutWithinTheReadTimeout() throws {
    // A listening socket nobody accepts from: the kernel completes the TCP handshake and
    // takes the request, and no answer ever comes.
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let listening = withUnsafeMutablePointer(to: &sa) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, $0, &length) == 0
      }
    }
    try #require(listening)
    var options = quickOptions(retries: 1)
    options.readTimeout = 0.3
    let started = Date()
    let e = expectVMDKError(.timeout) {
      _ = try HTTPStore("http://127.0.0.1:\(UInt16(bigEndian: sa.sin_port))/d.vmdk", options: options)
    }
    let elapsed = Date().timeIntervalSince(started)
    #expect(e?.isRetryable == true)
    #expect(elapsed >= 0.6 && elapsed < 0.6 + options.backoff(attempt: 1) + 2, "took \(elapsed) s")
  }

  @Test func aRestartInTheMiddleOfALongReadResumesWithTheRightBytes() throws {
    try withTemporaryFolder { folder in
      // 32 MiB/s per connection: the 64 MiB read takes about two seconds.
      let server = try NginxServer(prefix: folder, limitRate: 32 << 20)
      defer { server.stop() }
      let path = "\(server.root)/big.bin"
      let size = (64 << 20) + 12345
      try writeFile(path, distinctBytes(size))
      var options = quickOptions(retries: 5)
      options.backoffInitial = 0.2
      let store = try HTTPStore("\(server.baseURL)/big.bin", options: options)
      let outcome = Locked<Result<String, any Error>?>(nil)
      let done = DispatchSemaphore(value: 0)
      Thread.detachNewThread {
        defer { done.signal() }
        let r = Result { () throws -> String in
          var bytes = [UInt8](repeating: 0, count: size)
          let n = try bytes.withUnsafeMutableBytes { try store.read(at: 0, into: $0) }
          guard n == size else { throw ToolFailure("read \(n) of \(size) bytes") }
          let context = DigestContext(.sha256)
          bytes.withUnsafeBytes { context.update($0) }
          return context.finalHex()
        }
        outcome.withLock { $0 = r }
      }
      usleep(700_000)
      server.stop()
      try server.start()
      #expect(done.wait(timeout: .now() + 60) == .success, "the read did not finish")
      let digest = try #require(outcome.withLock { $0 }).get()
      #expect(digest == (try fileDigest(path, .sha256)))
      #expect(store.reconnects >= 1, "the server's restart should have cost a reconnect")
      // The restarted server was asked for the rest only: a range that starts where the data
      // stopped, not at the beginning of a request's piece.
      let resumed = try server.requestLog().compactMap { line -> UInt64? in
        guard let r = line.split(separator: " ").first(where: { $0.hasPrefix("bytes=") }) else { return nil }
        return UInt64(r.dropFirst(6).prefix { $0 != "-" })
      }
      #expect(resumed.contains { $0 % UInt64(HTTPStore.maxRequestBytes) != 0 }, "ranges asked for: \(resumed)")
    }
  }
}

// MARK: A hostile server

/// An HTTP server on loopback that answers each request (its head as text) with what the
/// script returns (nil: close the connection), to check that the client refuses answers that
/// break HTTP instead of trapping or allocating. Serves connections one after another.
private final class ScriptedHTTPServer: @unchecked Sendable {
  let port: UInt16
  private let listener: Int32
  private let done = DispatchSemaphore(value: 0)
  var url: String { "http://127.0.0.1:\(port)/disk.vmdk" }

  init(_ script: @escaping @Sendable (String) -> [UInt8]?) throws {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &sa) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, $0, &length) == 0
      }
    }
    guard fd >= 0, ok else { throw ToolFailure("cannot listen on loopback: \(String(cString: strerror(errno)))") }
    listener = fd
    port = UInt16(bigEndian: sa.sin_port)
    let done = self.done
    Thread.detachNewThread {
      defer { done.signal() }
      while true {
        let client = accept(fd, nil, nil)
        guard client >= 0 else { return }
        ScriptedHTTPServer.serve(client, script)
        close(client)
      }
    }
  }

  /// Stops accepting and waits for the serving thread.
  func finish() {
    shutdown(listener, Int32(SHUT_RDWR))
    _ = done.wait(timeout: .now() + 5)
    close(listener)
  }

  private static func serve(_ fd: Int32, _ script: (String) -> [UInt8]?) {
    var tv = timeval(tv_sec: 5, tv_usec: 0)
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var pending: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
      let end = Array("\r\n\r\n".utf8)
      if let at = (0..<max(0, pending.count - 3)).first(where: { Array(pending[$0..<($0 + 4)]) == end }) {
        let request = String(decoding: pending[..<at], as: UTF8.self)
        pending.removeFirst(at + 4)
        guard let answer = script(request) else { return }
        var sent = 0
        while sent < answer.count {
          let n = answer[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
          guard n > 0 else { return }
          sent += n
        }
        continue
      }
      let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
      guard n > 0, pending.count < 1 << 20 else { return }
      pending += chunk[0..<n]
    }
  }
}

/// The byte range a request asks for (`Range: bytes=A-B`).
private func requestedRange(_ request: String) -> (UInt64, UInt64)? {
  guard let line = request.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("range: bytes=") }) else {
    return nil
  }
  let bounds = line.dropFirst("range: bytes=".count).split(separator: "-").compactMap { UInt64($0) }
  return bounds.count == 2 ? (bounds[0], bounds[1]) : nil
}

/// A response head with `fields`, then `body`.
private func answer(_ status: String, _ fields: [String], body: [UInt8] = []) -> [UInt8] {
  Array(("HTTP/1.1 \(status)\r\n" + fields.map { "\($0)\r\n" }.joined() + "\r\n").utf8) + body
}

/// A server for a 4 MiB file of 0x5a bytes whose answers to ranges `broken` spoils.
private func scriptedDisk(_ broken: @escaping @Sendable (UInt64, UInt64) -> [UInt8]?) throws -> ScriptedHTTPServer {
  try ScriptedHTTPServer { request in
    if request.hasPrefix("HEAD ") { return answer("200 OK", ["Content-Length: 4194304"]) }
    guard let (first, last) = requestedRange(request) else { return nil }
    return broken(first, last)
  }
}

@Suite struct HTTPHostileServerTests {
  @Test func aHugeHeaderIsAProtocolErrorNotAnAllocation() throws {
    let filler = (0..<20_000).map { "X-Filler-\($0): \(String(repeating: "a", count: 40))" }
    let server = try ScriptedHTTPServer { _ in answer("200 OK", filler) }
    defer { server.finish() }
    let e = expectVMDKError(.protocolError) { _ = try HTTPStore(server.url, options: quickOptions()) }
    #expect(e?.message.contains("longer than 65536 bytes") == true, "\(String(describing: e))")
    #expect(e?.isRetryable == false)
    #expect(e?.file == server.url)
  }

  @Test func aWrongContentRangeIsAProtocolError() throws {
    let server = try scriptedDisk { first, last in
      let n = Int(last - first + 1)
      return answer(
        "206 Partial Content", ["Content-Range: bytes \(first + 512)-\(last + 512)/4194304", "Content-Length: \(n)"],
        body: [UInt8](repeating: 0x5a, count: n))
    }
    defer { server.finish() }
    let store = try HTTPStore(server.url, options: quickOptions())
    #expect(try store.size() == 4 << 20)
    let e = expectVMDKError(.protocolError) { _ = try store.readUpTo(at: 1000, count: 10) }
    #expect(e?.message.contains("the server sent bytes") == true, "\(String(describing: e))")
    #expect(e?.offset == 0, "a small read asks for its cache block at 0")
    let big = expectVMDKError(.protocolError) { _ = try store.readUpTo(at: 3, count: 1 << 20) }
    #expect(big?.offset == 3)
  }

  @Test func aWholeFileAnswerToARangeIsAProtocolError() throws {
    let server = try scriptedDisk { _, _ in
      answer("200 OK", ["Content-Length: 4194304"], body: [UInt8](repeating: 0x5a, count: 4 << 20))
    }
    defer { server.finish() }
    let store = try HTTPStore(server.url, options: quickOptions())
    let e = expectVMDKError(.protocolError) { _ = try store.readUpTo(at: 0, count: 512 << 10) }
    #expect(e?.message.contains("ignores range requests") == true, "\(String(describing: e))")
  }

  @Test func aChunkedRangeIsRefused() throws {
    let server = try scriptedDisk { first, last in
      answer(
        "206 Partial Content", ["Content-Range: bytes \(first)-\(last)/4194304", "Transfer-Encoding: chunked"],
        body: Array("10\r\n0123456789abcdef\r\n0\r\n\r\n".utf8))
    }
    defer { server.finish() }
    let store = try HTTPStore(server.url, options: quickOptions())
    let e = expectVMDKError(.protocolError) { _ = try store.readUpTo(at: 0, count: 512 << 10) }
    #expect(e?.message.contains("transfer coding") == true, "\(String(describing: e))")
  }

  @Test(arguments: [
    ["Content-Length: 99999999999999999999999"], ["Content-Length: -1"], ["Content-Length: 10", "Content-Length: 11"],
    [" folded: line"], ["no colon here"],
  ])
  func aBadHeadIsAProtocolError(_ fields: [String]) throws {
    let server = try ScriptedHTTPServer { _ in answer("200 OK", fields) }
    defer { server.finish() }
    expectVMDKError(.protocolError) { _ = try HTTPStore(server.url, options: quickOptions()) }
  }

  @Test func aGarbledStatusLineIsAProtocolError() throws {
    let server = try ScriptedHTTPServer { _ in Array("SSH-2.0-OpenSSH_9.2\r\n\r\n".utf8) }
    defer { server.finish() }
    expectVMDKError(.protocolError) { _ = try HTTPStore(server.url, options: quickOptions()) }
  }

  @Test func withoutHEADTheSizeComesFromAOneByteRange() throws {
    let server = try ScriptedHTTPServer { request in
      if request.hasPrefix("HEAD ") { return answer("405 Method Not Allowed", ["Content-Length: 0"]) }
      guard requestedRange(request)! == (0, 0) else { return nil }
      return answer("206 Partial Content", ["Content-Range: bytes 0-0/12345", "Content-Length: 1"], body: [7])
    }
    defer { server.finish() }
    #expect(try HTTPStore(server.url, options: quickOptions()).size() == 12345)
  }

  @Test func a503IsRetriedOnANewConnection() throws {
    let calls = Locked(0)
    let server = try scriptedDisk { first, last in
      let call = calls.withLock { c -> Int in
        c += 1
        return c
      }
      if call == 1 { return answer("503 Service Unavailable", ["Content-Length: 0", "Connection: close"]) }
      let n = Int(last - first + 1)
      return answer(
        "206 Partial Content", ["Content-Range: bytes \(first)-\(last)/4194304", "Content-Length: \(n)"],
        body: [UInt8](repeating: 0x5a, count: n))
    }
    defer { server.finish() }
    let store = try HTTPStore(server.url, options: quickOptions())
    #expect(try store.readUpTo(at: 4 << 20 - 3, count: 10) == [0x5a, 0x5a, 0x5a])
    #expect(store.reconnects == 1)
  }

  @Test func anIdleConnectionTheServerClosedIsMadeAgainWithoutARetry() throws {
    let gets = Locked(0)
    let server = try ScriptedHTTPServer { request in
      if request.hasPrefix("HEAD ") { return answer("200 OK", ["Content-Length: 4194304"]) }
      guard let (first, last) = requestedRange(request) else { return nil }
      // The first GET comes on the HEAD's connection: hang up as an idle server does.
      let get = gets.withLock { g -> Int in
        g += 1
        return g
      }
      if get == 1 { return nil }
      let n = Int(last - first + 1)
      return answer(
        "206 Partial Content", ["Content-Range: bytes \(first)-\(last)/4194304", "Content-Length: \(n)"],
        body: [UInt8](repeating: 0x5a, count: n))
    }
    defer { server.finish() }
    // No retries allowed: the new connection is not one.
    let store = try HTTPStore(server.url, options: quickOptions(retries: 0))
    #expect(try store.readUpTo(at: 0, count: 4) == [0x5a, 0x5a, 0x5a, 0x5a])
    #expect(store.reconnects == 1)
  }

  @Test(arguments: [
    (404, VMDKError.Code.fileNotFound, false), (410, .fileNotFound, false), (401, .fileAccess, false),
    (403, .fileAccess, false), (416, .outOfRange, false), (500, .serverNotAvailable, false),
    (502, .serverNotAvailable, true), (503, .serverNotAvailable, true), (504, .serverNotAvailable, true),
    (301, .notSupported, false), (400, .protocolError, false),
  ])
  func aStatusIsATypedError(status: Int, code: VMDKError.Code, retryable: Bool) throws {
    let server = try scriptedDisk { _, _ in answer("\(status) Status", ["Content-Length: 0"]) }
    defer { server.finish() }
    let store = try HTTPStore(server.url, options: quickOptions(retries: 1))
    let e = expectVMDKError(code) { _ = try store.readUpTo(at: 0, count: 16) }
    #expect(e?.isRetryable == retryable)
    #expect(e?.message.contains("\(status)") == true)
    #expect(store.reconnects == (retryable ? 1 : 0), "a retryable status is asked again once")
  }

  @Test func aChangedFileIsRefused() throws {
    let server = try ScriptedHTTPServer { request in
      if request.hasPrefix("HEAD ") { return answer("200 OK", ["Content-Length: 4194304", "ETag: \"v1\""]) }
      guard let (first, last) = requestedRange(request) else { return nil }
      let n = Int(last - first + 1)
      return answer(
        "206 Partial Content",
        ["Content-Range: bytes \(first)-\(last)/4194304", "Content-Length: \(n)", "ETag: \"v2\""],
        body: [UInt8](repeating: 0, count: n))
    }
    defer { server.finish() }
    let store = try HTTPStore(server.url, options: quickOptions())
    let e = expectVMDKError(.fileAccess) { _ = try store.readUpTo(at: 0, count: 16) }
    #expect(e?.message.contains("changed on the server") == true, "\(String(describing: e))")
  }
}

// MARK: HTTPLocator against nginx

@Suite struct HTTPLocatorTests {
  @Test func resolvesInsideTheFolderAndRefusesTheRest() throws {
    try withTemporaryFolder { folder in
      let server = try NginxServer(prefix: folder)
      defer { server.stop() }
      for name in [
        "disks/a/disk.vmdk", "disks/a/disk-s001.vmdk", "disks/a/sub/x.vmdk", "disks/other.vmdk", "disks/a/my disk.vmdk",
      ] {
        try writeFile("\(server.root)/\(name)", [1])
      }
      let locator = HTTPLocator(options: quickOptions())
      let base = server.baseURL
      let descriptor = "\(base)/disks/a/disk.vmdk"
      func resolve(_ name: String, external: Bool = false, missing: VMDKError.Code = .fileNotFound) throws -> String {
        try locator.resolve(name, from: descriptor, allowExternal: external, what: "extent", missingCode: missing)
      }
      #expect(locator.transport == .http && HTTPLocator(isTLS: true).transport == .https)
      #expect(try resolve("disk-s001.vmdk") == "\(base)/disks/a/disk-s001.vmdk")
      #expect(try resolve("sub\\x.vmdk") == "\(base)/disks/a/sub/x.vmdk")
      #expect(try resolve("sub/../disk-s001.vmdk") == "\(base)/disks/a/disk-s001.vmdk")
      #expect(try resolve("my disk.vmdk") == "\(base)/disks/a/my%20disk.vmdk")
      #expect(try resolve("\(base)/disks/a/sub/x.vmdk") == "\(base)/disks/a/sub/x.vmdk")

      // Out of the folder: "..", a path from the root, another host (the same server by
      // another name); each allowed when external paths are.
      let outside = [
        "../other.vmdk", "..\\other.vmdk", "/disks/other.vmdk", "http://localhost:\(server.port)/disks/other.vmdk",
      ]
      for name in outside {
        let e = expectVMDKError(.pathOutsideFolder) { _ = try resolve(name) }
        #expect(e?.file == descriptor)
        #expect(e?.message.contains("\"\(name)\"") == true)
      }
      #expect(try resolve("../other.vmdk", external: true) == "\(base)/disks/other.vmdk")
      #expect(try resolve("/disks/other.vmdk", external: true) == "\(base)/disks/other.vmdk")
      #expect(try resolve(outside[3], external: true) == "http://localhost:\(server.port)/disks/other.vmdk")

      // Missing: the caller's code, naming the file looked for.
      let e = expectVMDKError(.fileNotFound) { _ = try resolve("disk-s002.vmdk") }
      #expect(e?.file == "\(base)/disks/a/disk-s002.vmdk")
      expectVMDKError(.cannotOpenParent) { _ = try resolve("base.vmdk", missing: .cannotOpenParent) }

      #expect(locator.canonical("HTTP://127.0.0.1:80/a/./b/../c%41.vmdk") == "http://127.0.0.1/a/cA.vmdk")
      #expect(locator.canonical("/local/path.vmdk") == "/local/path.vmdk")
    }
  }
}

// MARK: Disks over HTTP (the block layer through HTTPLocator)

@Suite struct HTTPDiskTests {
  /// Every real image of TestImages, served by nginx: the digests digests.json records, or the
  /// error it records, as from the local file.
  @Test("Real images over HTTP: the recorded digests or errors", arguments: try CorpusEntry.load())
  func corpusImageOverHTTP(entry: CorpusEntry) throws {
    try withTemporaryFolder { folder in
      let server = try NginxServer(prefix: folder)
      defer { server.stop() }
      let served = "\(server.root)/TestImages"
      try FileManager.default.copyItem(atPath: testImagesFolder, toPath: served)
      // Images with gzipped extents: the prepared copy sits in www/prepared.
      let prepared = "\(server.root)/prepared"
      try FileManager.default.createDirectory(atPath: prepared, withIntermediateDirectories: true)
      let local = try CorpusTests.prepare(entry, in: prepared)
      let url =
        local.hasPrefix(prepared)
        ? "\(server.baseURL)/prepared/\((local as NSString).lastPathComponent)"
        : "\(server.baseURL)/TestImages/\(entry.image)"
      if let text = entry.expectError {
        let expected = try #require(CorpusEntry.expectedFailure(text), "unknown expectError wording: \(text)")
        let error = expectVMDKError(expected.code) { _ = try Disk.open(url) }
        if let name = expected.mentions {
          #expect(error?.description.contains(name) == true, "\(String(describing: error)) does not name \(name)")
        }
        return
      }
      let disk = try Disk.open(url)
      #expect(disk.transport == .http)
      if let size = entry.virtualSize { #expect(disk.capacityBytes == size) }
      for (algorithm, hex) in entry.digests {
        #expect(try disk.digest(algorithm) == hex, "\(algorithm)")
      }
    }
  }

  /// Images qemu makes: a split twoGbMaxExtentSparse disk (two extents, data across the 2 GiB
  /// border), the streamOptimized conversion of it, and a snapshot on top of it (the parent
  /// resolved through the locator): each URL's digest equals the local file's.
  @Test func qemuImagesOverHTTPHaveTheLocalDigests() throws {
    try withTemporaryFolder { folder in
      let server = try NginxServer(prefix: folder)
      defer { server.stop() }
      let www = server.root
      let split = "\(www)/split/disk.vmdk"
      try FileManager.default.createDirectory(atPath: "\(www)/split", withIntermediateDirectories: true)
      try Qemu.create(split, size: (2 << 30) + (64 << 20), options: ["subformat=twoGbMaxExtentSparse"])
      try Qemu.io(
        split,
        ["write -P 0x5a 0 1M", "write -P 0xa5 2047M 2M", "write -P 0x11 2090M 100k", "write -P 0x77 2111M 1M"])
      #expect(FileManager.default.fileExists(atPath: "\(www)/split/disk-s002.vmdk"), "the image should be split")
      let stream = "\(www)/stream/disk.vmdk"
      try FileManager.default.createDirectory(atPath: "\(www)/stream", withIntermediateDirectories: true)
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", split, stream)
      // A snapshot whose parent hint is relative: qemu resolves it next to the overlay.
      let snapshot = "\(www)/split/snap.vmdk"
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", "disk.vmdk", "-F", "vmdk", snapshot)
      try Qemu.io(snapshot, ["write -P 0x3c 2046M 4M"])

      for path in [split, stream, snapshot] {
        let url = server.baseURL + path.dropFirst(www.count)
        let disk = try Disk.open(url)
        #expect(disk.transport == .http)
        #expect(try disk.digest(.sha256) == Disk.open(path).digest(.sha256), "\(url)")
      }
    }
  }

  /// The tools take a URL where they take a path: vmdk-inspect's digest and info.
  @Test func vmdkInspectReadsAURL() throws {
    try withTemporaryFolder { folder in
      let server = try NginxServer(prefix: folder)
      defer { server.stop() }
      try FileManager.default.copyItem(atPath: "\(testImagesFolder)/vdiskmanager", toPath: "\(server.root)/vd")
      let url = "\(server.baseURL)/vd/twoGbMaxExtentSparse.vmdk"
      let digest = try vmdkInspect("digest", url).output
      #expect(digest.hasPrefix("a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727"), "\(digest)")
      let info = try vmdkInspect("info", url).output
      #expect(info.contains("transport: http\n"), "\(info)")
      #expect(info.contains("twoGbMaxExtentSparse-s001.vmdk"), "\(info)")
    }
  }

  /// The block layer's rules hold over HTTP: an extent outside the descriptor's folder is
  /// refused, a missing one is fileNotFound naming it, and a writable open is refused.
  @Test func descriptorRulesHoldOverHTTP() throws {
    try withTemporaryFolder { folder in
      let server = try NginxServer(prefix: folder)
      defer { server.stop() }
      let descriptor = { (extent: String) in
        """
        # Disk DescriptorFile
        version=1
        CID=fffffffe
        parentCID=ffffffff
        createType="monolithicFlat"
        RW 2048 FLAT "\(extent)" 0

        """
      }
      try writeFile("\(server.root)/d/outside.vmdk", Array(descriptor("../flat.bin").utf8))
      try writeFile("\(server.root)/d/missing.vmdk", Array(descriptor("gone-flat.vmdk").utf8))
      try writeFile("\(server.root)/d/good.vmdk", Array(descriptor("good-flat.vmdk").utf8))
      try writeFile("\(server.root)/flat.bin", [UInt8](repeating: 1, count: 1 << 20))
      try writeFile("\(server.root)/d/good-flat.vmdk", [UInt8](repeating: 2, count: 1 << 20))
      let base = "\(server.baseURL)/d"
      let outside = expectVMDKError(.pathOutsideFolder) { _ = try Disk.open("\(base)/outside.vmdk") }
      #expect(outside?.file == "\(base)/outside.vmdk")
      var external = OpenOptions()
      external.allowExternalPaths = true
      #expect(try Disk.open("\(base)/outside.vmdk", options: external).capacityBytes == 1 << 20)
      let missing = expectVMDKError(.fileNotFound) { _ = try Disk.open("\(base)/missing.vmdk") }
      #expect(missing?.description.contains("gone-flat.vmdk") == true, "\(String(describing: missing))")
      var writable = OpenOptions()
      writable.writable = true
      expectVMDKError(.fileReadOnly) { _ = try Disk.open("\(base)/good.vmdk", options: writable) }
      let good = try Disk.open("\(base)/good.vmdk")
      #expect(try good.digest(.sha256) == Disk.open("\(server.root)/d/good.vmdk").digest(.sha256))
    }
  }
}
