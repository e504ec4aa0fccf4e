// A real NBDServer in this process on loopback, and a client that breaks the protocol on
// purpose: bad magic, oversized requests, lengths past the end, unknown commands and options,
// options out of order, a flood of connections. Each gets the protocol's error and, where the
// stream cannot be trusted, a closed connection; the server keeps serving.

import Foundation
import NBDServer
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

let testImage =
  URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent().path + "/TestImages/vdiskmanager/monolithicSparse.vmdk"

/// A server on 127.0.0.1 with a kernel-chosen port, serving on its own thread.
final class RunningServer: @unchecked Sendable {
  let server: NBDServer
  let port: UInt16
  private let done = DispatchSemaphore(value: 0)

  init(maxConnections: Int = 16, path: String = testImage, writable: Bool = false) throws {
    var options = OpenOptions()
    options.writable = writable
    let disk = try Disk.open(path, options: options)
    var config = NBDServerConfiguration()
    config.maxConnections = maxConnections
    server = try NBDServer(exports: [NBDExport(name: "disk", disk: disk)], configuration: config)
    let bound = try server.listen(.tcp(host: "127.0.0.1", port: 0))
    guard case .tcp(_, let p) = bound[0] else { throw VMDKError(.failure, "no port") }
    port = p
    let server = self.server
    let done = self.done
    Thread.detachNewThread {
      server.serve()
      done.signal()
    }
  }

  /// Stops the server and waits for `serve()` to return.
  func stop() -> Bool {
    server.stop()
    return done.wait(timeout: .now() + 10) == .success
  }
}

/// A raw client socket.
final class RawClient {
  let fd: Int32
  init(port: UInt16) throws {
    fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    sa.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    let rc = withUnsafePointer(to: &sa) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard rc == 0 else { throw VMDKError(.connectionRefused, "connect failed") }
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
  }
  deinit { close(fd) }

  func send(_ bytes: [UInt8]) {
    _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
  }

  /// Exactly `n` bytes, or nil when the server closed first.
  func recv(_ n: Int) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: n)
    var done = 0
    while done < n {
      let r = out.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress! + done, n - done, 0) }
      if r <= 0 { return nil }
      done += r
    }
    return out
  }

  /// Whether the server closed the connection (end of stream, nothing more).
  var isClosedByServer: Bool {
    var b: UInt8 = 0
    return Glibc.recv(fd, &b, 1, 0) == 0
  }

  /// Greeting and client flags (fixed newstyle, no zeroes).
  func greet() throws {
    let g = try #require(recv(18))
    var r = NBDReader(g)
    #expect(try r.u64("magic") == NBDProtocol.nbdMagic)
    var w = NBDWriter()
    w.u32(3)
    send(w.bytes)
  }

  func option(_ option: UInt32, _ data: [UInt8], length: UInt32? = nil) {
    var w = NBDWriter()
    w.u64(NBDProtocol.optionMagic)
    w.u32(option)
    w.u32(length ?? UInt32(data.count))
    send(w.bytes + data)
  }

  /// One option reply: its type and data.
  func optionReply() throws -> (type: UInt32, data: [UInt8]) {
    var r = NBDReader(try #require(recv(20)))
    #expect(try r.u64("magic") == NBDProtocol.optionReplyMagic)
    _ = try r.u32("option")
    let type = try r.u32("type")
    let n = try r.u32("length")
    return (type, try #require(recv(Int(n))))
  }

  /// Into transmission through NBD_OPT_EXPORT_NAME; the export size.
  func exportName(_ name: String) throws -> UInt64 {
    option(NBDProtocol.optExportName, Array(name.utf8))
    var r = NBDReader(try #require(recv(10)))
    return try r.u64("size")
  }

  func request(_ type: UInt16, _ offset: UInt64, _ length: UInt32, flags: UInt16 = 0, payload: [UInt8] = []) {
    send(NBDRequest(flags: flags, type: type, cookie: 42, offset: offset, length: length).encoded + payload)
  }

  /// A simple reply's error.
  func simpleReply() throws -> UInt32 {
    var r = NBDReader(try #require(recv(16)))
    #expect(try r.u32("magic") == NBDProtocol.simpleReplyMagic)
    let e = try r.u32("error")
    #expect(try r.u64("cookie") == 42)
    return e
  }
}

@Suite(.serialized) struct HostileClientTests {
  let p = NBDProtocol.self

  @Test func badRequestsGetErrorsAndTheConnectionGoesOn() throws {
    let s = try RunningServer()
    let c = try RawClient(port: s.port)
    try c.greet()
    #expect(try c.exportName("disk") == 10 << 20)
    c.request(99, 0, 512)
    #expect(try c.simpleReply() == p.eInval)
    c.request(p.cmdRead, 10 << 20, 512)
    #expect(try c.simpleReply() == p.eInval)
    c.request(p.cmdRead, UInt64.max - 10, 512)
    #expect(try c.simpleReply() == p.eInval)
    c.request(p.cmdRead, 0, 64 << 20)
    #expect(try c.simpleReply() == p.eOverflow)
    // A write on a read-only export: its payload is read past.
    c.request(p.cmdWrite, 0, 512, payload: [UInt8](repeating: 0xee, count: 512))
    #expect(try c.simpleReply() == p.ePerm)
    c.request(p.cmdRead, 0, 512)
    #expect(try c.simpleReply() == 0)
    let data = try #require(c.recv(512))
    #expect(data[510] == 0x55 && data[511] == 0xaa)
    // A write whose payload is larger than any buffer: an error, then the connection closes.
    c.request(p.cmdWrite, 0, 64 << 20)
    #expect(try c.simpleReply() == p.eOverflow)
    #expect(c.isClosedByServer)
    // Bad magic: closed at once.
    let d = try RawClient(port: s.port)
    try d.greet()
    _ = try d.exportName("")
    d.send([UInt8](repeating: 0x41, count: 28))
    #expect(d.isClosedByServer)
    #expect(s.stop())
  }

  @Test func optionsOutOfOrderAndUnknown() throws {
    let s = try RunningServer()
    let c = try RawClient(port: s.port)
    try c.greet()
    var q = NBDWriter()
    q.u32(4)
    q.string("disk")
    q.u32(1)
    q.u32(15)
    q.string("base:allocation")
    c.option(p.optSetMetaContext, q.bytes)
    #expect(try c.optionReply().type == p.repErrInvalid)
    c.option(200, [1, 2, 3])
    #expect(try c.optionReply().type == p.repErrUnsup)
    c.option(p.optGo, [0, 0, 0xff, 0xff])
    #expect(try c.optionReply().type == p.repErrInvalid)
    var go = NBDWriter()
    go.u32(7)
    go.string("nothere")
    go.u16(0)
    c.option(p.optGo, go.bytes)
    #expect(try c.optionReply().type == p.repErrUnknown)
    c.option(p.optList, [])
    let listed = try c.optionReply()
    #expect(listed.type == p.repServer && listed.data == [0, 0, 0, 4] + Array("disk".utf8))
    #expect(try c.optionReply().type == p.repAck)
    // An option too long to read: NBD_REP_ERR_TOO_BIG and a close.
    c.option(p.optInfo, [], length: 1 << 30)
    #expect(try c.optionReply().type == p.repErrTooBig)
    #expect(c.isClosedByServer)
    #expect(s.stop())
  }

  @Test func floodOfConnectionsIsCappedAndTheServerGoesOn() throws {
    let s = try RunningServer(maxConnections: 8)
    var clients: [RawClient] = []
    for _ in 0..<200 { clients.append(try RawClient(port: s.port)) }
    var greeted = 0
    for c in clients where c.recv(18) != nil { greeted += 1 }
    #expect(greeted == 8)
    #expect(s.server.connectionCount <= 8)
    clients = []
    // Once they are gone, a new client is served.
    for _ in 0..<100 where s.server.connectionCount > 0 { usleep(20_000) }
    let c = try RawClient(port: s.port)
    try c.greet()
    #expect(try c.exportName("disk") == 10 << 20)
    #expect(s.stop())
  }

  @Test func clientsThatReadNoRepliesDoNotStallTheOthers() throws {
    let s = try RunningServer()
    // Six clients each ask for 32 MiB and read none of it: more than the socket buffers
    // hold, so their replies wait. Before the connections had sender threads, the workers
    // that wrote those replies blocked, and once the pool had no worker left nobody was served.
    var stuck: [RawClient] = []
    for _ in 0..<6 {
      let c = try RawClient(port: s.port)
      try c.greet()
      _ = try c.exportName("disk")
      for k in 0..<32 { c.request(p.cmdRead, UInt64(k % 8) << 20, 1 << 20) }
      stuck.append(c)
    }
    let started = Date()
    let c = try RawClient(port: s.port)
    try c.greet()
    _ = try c.exportName("disk")
    for _ in 0..<16 {
      c.request(p.cmdRead, 0, 64 << 10)
      #expect(try c.simpleReply() == 0)
      let data = try #require(c.recv(64 << 10))
      #expect(data[510] == 0x55 && data[511] == 0xaa)
    }
    #expect(Date().timeIntervalSince(started) < 10)
    // The stuck clients get their replies once they read.
    for k in 0..<32 {
      #expect(try stuck[0].simpleReply() == 0)
      #expect(stuck[0].recv(1 << 20)?.count == 1 << 20, "reply \(k)")
    }
    stuck = []
    #expect(s.stop())
  }

  @Test func stopAnswersInFlightRequestsAndEnds() throws {
    let s = try RunningServer()
    let c = try RawClient(port: s.port)
    try c.greet()
    _ = try c.exportName("disk")
    for _ in 0..<8 { c.request(p.cmdRead, 0, 1 << 20) }
    #expect(try c.simpleReply() == 0)
    #expect(c.recv(1 << 20) != nil)
    // Requests the server read are answered whole; then the connection ends. The stop runs
    // beside the reads: the replies it waits for may need the client to drain the socket.
    let stopped = Locked<Bool?>(nil)
    let stopper = Thread { stopped.withLock { $0 = s.stop() } }
    stopper.start()
    var answered = 1
    while let h = c.recv(16), h[4..<8].allSatisfy({ $0 == 0 }), c.recv(1 << 20) != nil { answered += 1 }
    for _ in 0..<2000 where stopped.withLock({ $0 }) == nil { usleep(10_000) }
    #expect(stopped.withLock { $0 } == true)
    #expect(answered >= 1 && answered <= 8)
    #expect(s.server.connectionCount == 0)
  }

  @Test func aClientKilledMidWriteLosesNothingAcknowledged() throws {
    let folder = FileManager.default.temporaryDirectory.path + "/nbd-serve-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let path = folder + "/disk.vmdk"
    try FileManager.default.copyItem(atPath: testImage, toPath: path)
    let s = try RunningServer(path: path, writable: true)
    let c = try RawClient(port: s.port)
    try c.greet()
    _ = try c.exportName("disk")
    c.request(p.cmdWrite, 1 << 20, 4096, flags: p.cmdFlagFUA, payload: [UInt8](repeating: 0xab, count: 4096))
    #expect(try c.simpleReply() == 0)
    // A second write whose payload never fully arrives: the client dies.
    c.request(p.cmdWrite, 2 << 20, 65536, payload: [UInt8](repeating: 0xcd, count: 1000))
    close(c.fd)
    for _ in 0..<100 where s.server.connectionCount > 0 { usleep(20_000) }
    #expect(s.server.connectionCount == 0)
    // The server goes on serving.
    let d = try RawClient(port: s.port)
    try d.greet()
    _ = try d.exportName("disk")
    d.request(p.cmdRead, 1 << 20, 4096)
    #expect(try d.simpleReply() == 0)
    #expect(d.recv(4096) == [UInt8](repeating: 0xab, count: 4096))
    #expect(s.stop())
    try s.server.exports[0].disk.close()
    let again = try Disk.open(path)
    #expect(try again.read(at: 1 << 20, count: 4096) == [UInt8](repeating: 0xab, count: 4096))
    #expect(try again.read(at: 2 << 20, count: 1000).allSatisfy { $0 != 0xcd })
    #expect(try again.check().isClean)
  }
}
