// A TLS connection is served like a plain one: several requests in flight at once, replies in
// the order they are ready. A client (OpenSSL, TLS-PSK) sends many reads before it reads any
// reply; every reply must carry the right bytes for its cookie, and the server must have had
// more than one of them in flight at once (serving in order on the reader would keep it at 1).

import CSSL
import Foundation
import NBDServer
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

/// The client's PSK: identity "alice", 32 bytes of 0x3c.
private let pskIdentity = Array("alice".utf8)
private let pskKey = [UInt8](repeating: 0x3c, count: 32)

private let pskClientCallback:
  @convention(c) (
    OpaquePointer?, UnsafePointer<CChar>?, UnsafeMutablePointer<CChar>?, UInt32, UnsafeMutablePointer<UInt8>?, UInt32
  ) -> UInt32 = { _, _, identity, maxIdentity, psk, maxPSK in
    guard let identity, let psk, Int(maxIdentity) > pskIdentity.count, Int(maxPSK) >= pskKey.count else { return 0 }
    for (i, b) in pskIdentity.enumerated() { identity[i] = CChar(bitPattern: b) }
    identity[pskIdentity.count] = 0
    for (i, b) in pskKey.enumerated() { psk[i] = b }
    return UInt32(pskKey.count)
  }

/// A raw client that switches to TLS (NBD_OPT_STARTTLS) and then speaks through OpenSSL.
final class TLSRawClient {
  let raw: RawClient
  private let context: OpaquePointer
  private let ssl: OpaquePointer

  init(port: UInt16) throws {
    raw = try RawClient(port: port)
    try raw.greet()
    raw.option(NBDProtocol.optStartTLS, [])
    #expect(try raw.optionReply().type == NBDProtocol.repAck)
    context = try #require(SSL_CTX_new(TLS_client_method()))
    SSL_CTX_set_psk_client_callback(context, pskClientCallback)
    SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
    ssl = try #require(SSL_new(context))
    SSL_set_fd(ssl, raw.fd)
    guard SSL_connect(ssl) == 1 else { throw VMDKError(.tlsFailure, "the TLS handshake failed") }
  }

  deinit {
    SSL_shutdown(ssl)
    SSL_free(ssl)
    SSL_CTX_free(context)
  }

  func send(_ bytes: [UInt8]) {
    var done = 0
    while done < bytes.count {
      let n = bytes.withUnsafeBytes { SSL_write(ssl, $0.baseAddress! + done, Int32($0.count - done)) }
      guard n > 0 else { return }
      done += Int(n)
    }
  }

  func recv(_ count: Int) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
      let n = out.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress! + done, Int32(count - done)) }
      guard n > 0 else { return nil }
      done += Int(n)
    }
    return out
  }

  /// NBD_OPT_EXPORT_NAME over TLS; the export size.
  func exportName(_ name: String) throws -> UInt64 {
    var w = NBDWriter()
    w.u64(NBDProtocol.optionMagic)
    w.u32(NBDProtocol.optExportName)
    w.u32(UInt32(name.utf8.count))
    w.string(name)
    send(w.bytes)
    var r = NBDReader(try #require(recv(10)))
    return try r.u64("size")
  }
}

@Suite(.serialized) struct TLSPipelineTests {
  @Test func manyReadsInFlightOverTLSAreServedConcurrently() throws {
    let folder = FileManager.default.temporaryDirectory.path + "/nbd-tls-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let keys = folder + "/keys.psk"
    try "alice:\(String(repeating: "3c", count: 32))\n".write(toFile: keys, atomically: true, encoding: .utf8)
    let disk = try Disk.open(testImage)
    defer { try? disk.close() }
    var config = NBDServerConfiguration()
    config.tls = NBDTLSConfiguration(mode: .require, pskFile: keys)
    let server = try NBDServer(exports: [NBDExport(name: "disk", disk: disk)], configuration: config)
    let bound = try server.listen(.tcp(host: "127.0.0.1", port: 0))
    guard case .tcp(_, let port) = bound[0] else { throw VMDKError(.failure, "no port") }
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
      server.serve()
      done.signal()
    }
    let c = try TLSRawClient(port: port)
    #expect(try c.exportName("disk") == 10 << 20)
    // 48 reads (1 MiB, then 4 KiB pieces) before any reply is read.
    var expected: [UInt64: (offset: UInt64, length: Int)] = [:]
    for i in 0..<48 {
      let offset = UInt64(i % 10) << 20 + UInt64(i) * 4096
      let length = i % 3 == 0 ? 1 << 20 : 4096
      let clipped = min(length, Int((10 << 20) - offset))
      expected[UInt64(1000 + i)] = (offset, clipped)
      c.send(
        NBDRequest(
          flags: 0, type: NBDProtocol.cmdRead, cookie: UInt64(1000 + i), offset: offset, length: UInt32(clipped)
        )
        .encoded)
    }
    var order: [UInt64] = []
    for _ in 0..<48 {
      var r = NBDReader(try #require(c.recv(16)))
      #expect(try r.u32("magic") == NBDProtocol.simpleReplyMagic)
      #expect(try r.u32("error") == 0)
      let cookie = try r.u64("cookie")
      let removed = expected.removeValue(forKey: cookie)
      let want = try #require(removed, "cookie \(cookie) unknown or answered twice")
      let data = try #require(c.recv(want.length))
      #expect(data == (try disk.read(at: want.offset, count: want.length)), "cookie \(cookie)")
      order.append(cookie)
    }
    #expect(expected.isEmpty)
    #expect(server.peakRequestsInFlight > 1, "peak \(server.peakRequestsInFlight)")
    let outOfOrder = zip(order, order.dropFirst()).filter { $0 > $1 }.count
    print("TLS: 48 reads, at most \(server.peakRequestsInFlight) in flight, \(outOfOrder) replies out of order")
    server.stop()
    #expect(done.wait(timeout: .now() + 10) == .success)
  }
}
