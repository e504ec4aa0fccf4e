// NBDClient against a real qemu-nbd on loopback (TCP and a Unix socket): size, the whole disk's
// bytes against qemu-img's decoding, block status against qemu-img map, a write that the file
// holds after the server stops, and the typed network errors (unknown export, refused
// connection, a server killed mid-session, a server that never answers).

import Dispatch
import Foundation
import Testing
import VMDKBlock
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#endif

/// A qemu-nbd child process serving one file on 127.0.0.1 (or a Unix socket), stopped in
/// `stop()` (and by the test's defer).
final class QemuNBDServer {
  let process = Process()
  let port: UInt16
  let socketPath: String?
  private(set) var running = true

  init(file: String, format: String, export: String = "disk", readOnly: Bool = false, socketPath: String? = nil)
    throws
  {
    let tool = try requireTool("qemu-nbd")
    self.port = socketPath == nil ? try freeLoopbackPort() : 0
    self.socketPath = socketPath
    var arguments = ["--export-name", export, "--persistent", "--shared", "4", "-f", format]
    if let socketPath {
      arguments += ["--socket", socketPath]
    } else {
      arguments += ["--bind", "127.0.0.1", "--port", String(port)]
    }
    if readOnly { arguments.append("--read-only") }
    arguments.append(file)
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = arguments
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = FileHandle.nullDevice
    // Quiet: the readiness probes make it complain about clients that left before the handshake.
    process.standardError = FileHandle.nullDevice
    try process.run()
    // Wait (up to 5 s) until the server accepts connections.
    let deadline = Date().addingTimeInterval(5)
    while !canConnect() {
      guard process.isRunning, Date() < deadline else {
        stop()
        throw ToolFailure("qemu-nbd \(arguments.joined(separator: " ")) did not start listening")
      }
      usleep(20_000)
    }
  }

  deinit { stop() }

  var address: NBDClient.Address {
    socketPath.map { .unix(path: $0) } ?? .tcp(host: "127.0.0.1", port: port)
  }

  /// Kills the server and waits. SIGKILL: qemu-nbd inherits the test runner's blocked signal
  /// mask (SIGTERM included) and would never see a SIGTERM. The client flushes what it wrote
  /// (NBD_CMD_FLUSH) before the server stops.
  func stop(signal: Int32 = SIGKILL) {
    guard running else { return }
    running = false
    if process.isRunning { kill(process.processIdentifier, signal) }
    process.waitUntilExit()
  }

  private func canConnect() -> Bool {
    if let socketPath { return FileManager.default.fileExists(atPath: socketPath) }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var sa = loopback(port)
    return withUnsafePointer(to: &sa) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
      }
    }
  }
}

private func loopback(_ port: UInt16) -> sockaddr_in {
  var sa = sockaddr_in()
  sa.sin_family = sa_family_t(AF_INET)
  sa.sin_port = port.bigEndian
  sa.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
  return sa
}

/// A socket bound to 127.0.0.1 on a port the kernel chose; `listening` also calls listen().
private func boundLoopbackSocket(listening: Bool) throws -> (fd: Int32, port: UInt16) {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  var sa = loopback(0)
  let bound = withUnsafePointer(to: &sa) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
  }
  guard fd >= 0, bound == 0, !listening || listen(fd, 4) == 0 else {
    throw ToolFailure("cannot bind a loopback socket: \(String(cString: strerror(errno)))")
  }
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  _ = withUnsafeMutablePointer(to: &sa) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
  }
  return (fd, UInt16(bigEndian: sa.sin_port))
}

/// A loopback port nobody listens on right now.
func freeLoopbackPort() throws -> UInt16 {
  let (fd, port) = try boundLoopbackSocket(listening: false)
  close(fd)
  return port
}

/// Merges adjacent runs with the same (data, zero) flags: qemu-img map splits runs by host
/// offset, NBD block status by the server's own granularity.
private func mergedRuns(_ runs: [(start: UInt64, length: UInt64, data: Bool, zero: Bool)]) -> [String] {
  var out: [(start: UInt64, length: UInt64, data: Bool, zero: Bool)] = []
  for r in runs {
    if let last = out.last, last.data == r.data, last.zero == r.zero, last.start + last.length == r.start {
      out[out.count - 1].length += r.length
    } else {
      out.append(r)
    }
  }
  return out.map { "\($0.start)+\($0.length) data \($0.data) zero \($0.zero)" }
}

@Suite struct NBDClientTests {
  @Test func readsTheWholeDiskAndItsAllocationLikeQemu() throws {
    try withTemporaryFolder { folder in
      let image = "\(folder)/disk.vmdk"
      let size: UInt64 = 48 << 20
      try Qemu.create(image, size: size)
      try Qemu.io(
        image,
        [
          "write -P 0x5a 0 1M", "write -P 0xa5 5M 3M", "write -z 12M 2M", "write -P 0x11 33M 100k",
          "write -P 0x77 47M 1M",
        ])
      // The references first: qemu-nbd holds the image's lock while it serves.
      let reference = try Qemu.rawSHA256(image, scratch: folder)
      let qemuMap = try Qemu.map(image)
      let server = try QemuNBDServer(file: image, format: "vmdk", readOnly: true)
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "disk")
      defer { client.close() }
      #expect(try client.size() == size)
      #expect(client.name == "nbd://127.0.0.1:\(server.port)/disk")
      #expect(client.structuredReplies && client.supportsBlockStatus)

      // One call for the whole disk: the client splits it into 32 MiB requests.
      var bytes = [UInt8](repeating: 0xee, count: Int(size))
      let n = try bytes.withUnsafeMutableBytes { try client.read(at: 0, into: $0) }
      #expect(n == Int(size))
      let context = DigestContext(.sha256)
      bytes.withUnsafeBytes { context.update($0) }
      #expect(context.finalHex() == reference)
      // Past the end: short, then nothing.
      #expect(try client.readUpTo(at: size - 10, count: 100).count == 10)
      #expect(try client.readUpTo(at: size, count: 100).isEmpty)

      let ours = mergedRuns(try client.allocationMap().map { ($0.start, $0.length, !$0.isHole, $0.isZero) })
      let theirs = mergedRuns(qemuMap.map { ($0.start, $0.length, $0.data, $0.zero) })
      #expect(ours == theirs)
      #expect(theirs.count >= 4, "the fixture should mix data, zeros and holes: \(theirs)")
    }
  }

  @Test func writesReadBackAndStayInTheFileAfterTheServerStops() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      try Qemu.img("create", "-q", "-f", "raw", file, "8M")
      let server = try QemuNBDServer(file: file, format: "raw")
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "disk", writable: true)
      let offset: UInt64 = (1 << 20) + 4097
      let pattern = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
      try pattern.withUnsafeBytes { try client.write(at: offset, from: $0) }
      try client.flush()
      #expect(try client.readExactly(at: offset, count: pattern.count, what: "back") == pattern)
      expectVMDKError(.outOfRange) { try [1, 2, 3].withUnsafeBytes { try client.write(at: (8 << 20) - 2, from: $0) } }
      client.close()
      server.stop()
      let handle = try #require(FileHandle(forReadingAtPath: file))
      defer { try? handle.close() }
      try handle.seek(toOffset: offset - 1)
      let stored = Array(try handle.read(upToCount: pattern.count + 2) ?? Data())
      #expect(stored == [0] + pattern + [0])
    }
  }

  @Test func servesOverAUnixSocket() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      try Qemu.img("create", "-q", "-f", "raw", file, "1M")
      let handle = try #require(FileHandle(forWritingAtPath: file))
      try handle.seek(toOffset: 512)
      try handle.write(contentsOf: Data([1, 2, 3, 4]))
      try handle.close()
      let server = try QemuNBDServer(file: file, format: "raw", readOnly: true, socketPath: "\(folder)/nbd.sock")
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "disk")
      #expect(client.name == "nbd+unix:///disk?socket=\(folder)/nbd.sock")
      #expect(try client.size() == 1 << 20)
      #expect(try client.readExactly(at: 510, count: 8, what: "bytes") == [0, 0, 1, 2, 3, 4, 0, 0])
      // A read-only export refuses a writable open.
      expectVMDKError(.fileReadOnly) { _ = try NBDClient(server.address, export: "disk", writable: true) }
    }
  }

  @Test func anUnknownExportIsATypedErrorNamingIt() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      try Qemu.img("create", "-q", "-f", "raw", file, "1M")
      let server = try QemuNBDServer(file: file, format: "raw", readOnly: true)
      defer { server.stop() }
      let e = expectVMDKError(.serverNotAvailable) { _ = try NBDClient(server.address, export: "no-such-export") }
      #expect(e?.message.contains("'no-such-export'") == true, "\(String(describing: e))")
      #expect(e?.file == "nbd://127.0.0.1:\(server.port)/no-such-export")
    }
  }

  @Test func aClosedPortIsARetryableRefusal() throws {
    let port = try freeLoopbackPort()
    let e = expectVMDKError(.connectionRefused) {
      _ = try NBDClient(.tcp(host: "127.0.0.1", port: port), export: "disk")
    }
    #expect(e?.isRetryable == true)
    #expect(e?.description.contains("nbd://127.0.0.1:\(port)/disk") == true)
  }

  @Test func anUnknownHostIsServerNotFound() {
    // .invalid is reserved (RFC 2606): resolvers answer at once that it does not exist.
    let e = expectVMDKError(.serverNotFound) {
      _ = try NBDClient(.tcp(host: "no-such-host.invalid", port: 10809), export: "disk")
    }
    #expect(e?.file == "nbd://no-such-host.invalid:10809/disk")
    #expect(e?.message.contains("no-such-host.invalid") == true)
  }

  @Test func aServerKilledMidSessionLosesTheConnection() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      try Qemu.img("create", "-q", "-f", "raw", file, "4M")
      let server = try QemuNBDServer(file: file, format: "raw", readOnly: true)
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "disk", timeout: 5)
      #expect(try client.readUpTo(at: 0, count: 4096).count == 4096)
      server.stop(signal: SIGKILL)
      let e = expectVMDKError(.connectionLost) { _ = try client.readUpTo(at: 4096, count: 4096) }
      #expect(e?.isRetryable == true)
      // The connection stays closed.
      expectVMDKError(.connectionLost) { _ = try client.readUpTo(at: 0, count: 512) }
    }
  }

  @Test func aServerThatNeverAnswersTimesOut() throws {
    // A listening socket nobody accepts from: the kernel completes the TCP handshake, and the
    // NBD greeting never comes.
    let (fd, port) = try boundLoopbackSocket(listening: true)
    defer { close(fd) }
    let started = Date()
    let e = expectVMDKError(.timeout) {
      _ = try NBDClient(.tcp(host: "127.0.0.1", port: port), export: "x", timeout: 0.3)
    }
    #expect(e?.isRetryable == true)
    #expect(Date().timeIntervalSince(started) < 5)
  }

  @Test func networkCodesAreVixDiskLibs() {
    #expect(VMDKError.Code.serverNotFound.rawValue == 14008)
    #expect(VMDKError.Code.connectionRefused.rawValue == 14009)
    #expect(VMDKError.Code.connectionLost.rawValue == 14011)
    #expect(VMDKError.Code.serverShutdown.rawValue == 14014)
    #expect(VMDKError.Code.serverNotAvailable.rawValue == 14015)
    #expect(Set(VMDKError.Code.all.map(\.rawValue)).count == VMDKError.Code.all.count)
  }
}

// MARK: A hostile server

/// A one-connection NBD server on loopback that follows a script, to check that the client
/// refuses replies that break the protocol instead of allocating or trapping.
private final class ScriptedServer: @unchecked Sendable {
  let port: UInt16
  private let listener: Int32
  private let done = DispatchSemaphore(value: 0)

  init(_ script: @escaping @Sendable (ScriptedServer.Peer) throws -> Void) throws {
    (listener, port) = try boundLoopbackSocket(listening: true)
    let listener = self.listener
    let done = self.done
    Thread.detachNewThread {
      defer { done.signal() }
      let fd = accept(listener, nil, nil)
      guard fd >= 0 else { return }
      defer { close(fd) }
      try? script(Peer(fd: fd))
    }
  }

  /// Waits for the script to end (the client closed or the script finished), then closes.
  func finish() {
    _ = done.wait(timeout: .now() + 5)
    close(listener)
  }

  struct Peer {
    let fd: Int32
    func send(_ bytes: [UInt8]) throws {
      var done = 0
      while done < bytes.count {
        let n = bytes[done...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { throw ToolFailure("scripted server: send failed") }
        done += n
      }
    }
    func receive(_ count: Int) throws -> [UInt8] {
      var bytes = [UInt8](repeating: 0, count: count)
      var done = 0
      while done < count {
        let n = bytes[done...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw ToolFailure("scripted server: the client left") }
        done += n
      }
      return bytes
    }
    /// NBDMAGIC, IHAVEOPT, fixed newstyle + no zeroes; then the client's flags.
    func greet() throws {
      try send(be(0x4e42_444d_4147_4943, 8) + be(0x4948_4156_454f_5054, 8) + be(3, 2))
      _ = try receive(4)
    }
    /// Reads one option request; returns its number.
    func option() throws -> UInt64 {
      let header = try receive(16)
      let option = number(header[8..<12])
      _ = try receive(Int(number(header[12..<16])))
      return option
    }
    /// Structured replies yes, meta contexts no, then a 1 MiB read-only export.
    func handshake() throws {
      try greet()
      guard try option() == 8 else { throw ToolFailure("expected STRUCTURED_REPLY") }
      try optionReply(8, type: 1, [])
      guard try option() == 10 else { throw ToolFailure("expected SET_META_CONTEXT") }
      try optionReply(10, type: 0x8000_0001, [])
      guard try option() == 7 else { throw ToolFailure("expected GO") }
      try optionReply(7, type: 3, be(0, 2) + be(1 << 20, 8) + be(3, 2))
      try optionReply(7, type: 1, [])
    }
    func optionReply(_ option: UInt64, type: UInt64, _ payload: [UInt8], length: UInt64? = nil) throws {
      try send(
        be(0x0003_e889_0455_65a9, 8) + be(option, 4) + be(type, 4) + be(length ?? UInt64(payload.count), 4) + payload)
    }
  }
}

private func be(_ value: UInt64, _ count: Int) -> [UInt8] {
  (0..<count).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * (count - 1 - $0))) }
}

private func number(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }

extension NBDClientTests {
  @Test func aHugeOptionReplyIsAProtocolErrorNotAnAllocation() throws {
    let server = try ScriptedServer { peer in
      try peer.greet()
      let option = try peer.option()
      try peer.optionReply(option, type: 1, [], length: 0xffff_fff0)
    }
    defer { server.finish() }
    expectVMDKError(.protocolError) { _ = try NBDClient(.tcp(host: "127.0.0.1", port: server.port), export: "x") }
  }

  @Test func readDataOutsideTheRequestIsAProtocolError() throws {
    let server = try ScriptedServer { peer in
      try peer.greet()
      #expect(try peer.option() == 8)  // STRUCTURED_REPLY
      try peer.optionReply(8, type: 1, [])
      #expect(try peer.option() == 10)  // SET_META_CONTEXT: unsupported here
      try peer.optionReply(10, type: 0x8000_0001, [])
      #expect(try peer.option() == 7)  // GO: a 1 MiB read-only export
      try peer.optionReply(7, type: 3, be(0, 2) + be(1 << 20, 8) + be(3, 2))
      try peer.optionReply(7, type: 1, [])
      let request = try peer.receive(28)
      let cookie = number(request[8..<16])
      let offset = number(request[16..<24])
      // An OFFSET_DATA chunk 1 MiB past the request, claiming 16 bytes.
      try peer.send(be(0x668e_33ef, 4) + be(1, 2) + be(1, 2) + be(cookie, 8) + be(24, 4) + be(offset + (1 << 20), 8))
      try peer.send([UInt8](repeating: 0x41, count: 16))
      _ = try? peer.receive(1)  // until the client hangs up
    }
    defer { server.finish() }
    let client = try NBDClient(.tcp(host: "127.0.0.1", port: server.port), export: "x")
    #expect(try client.size() == 1 << 20)
    #expect(!client.supportsBlockStatus)
    expectVMDKError(.notSupported) { _ = try client.blockStatus(at: 0, length: 512) }
    let e = expectVMDKError(.protocolError) { _ = try client.readUpTo(at: 4096, count: 16) }
    #expect(e?.isRetryable == false)
    // The stream is out of step after that: the connection is closed.
    expectVMDKError(.connectionLost) { _ = try client.readUpTo(at: 0, count: 16) }
  }

  @Test func aServerErrorChunkIsTypedAndKeepsTheConnection() throws {
    let server = try ScriptedServer { peer in
      try peer.handshake()
      // First read: an ERROR chunk, ESHUTDOWN with a message.
      var request = try peer.receive(28)
      let message = Array("going down".utf8)
      try peer.send(
        be(0x668e_33ef, 4) + be(1, 2) + be(0x8001, 2) + request[8..<16] + be(UInt64(6 + message.count), 4)
          + be(108, 4) + be(UInt64(message.count), 2) + message)
      // Second read: a simple reply with the data.
      request = try peer.receive(28)
      try peer.send(be(0x6744_6698, 4) + be(0, 4) + request[8..<16] + [UInt8](repeating: 0x42, count: 16))
      _ = try? peer.receive(1)
    }
    defer { server.finish() }
    let client = try NBDClient(.tcp(host: "127.0.0.1", port: server.port), export: "x")
    let e = expectVMDKError(.serverShutdown) { _ = try client.readUpTo(at: 512, count: 16) }
    #expect(e?.isRetryable == true)
    #expect(e?.message.contains("going down") == true)
    #expect(e?.offset == 512)
    #expect(try client.readUpTo(at: 0, count: 16) == [UInt8](repeating: 0x42, count: 16))
  }
}
