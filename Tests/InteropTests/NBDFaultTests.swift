// NBDClient under faults, with real servers on loopback: nbdkit's error filter (ESHUTDOWN is
// retried until the read is right, EIO fails at once), its delay filter (a typed timeout
// within the bound the options give), qemu-nbd killed and restarted in the middle of a read
// (the read completes with the right bytes), a server that stays down (the typed error within
// the time the options allow), and the TLS paths of the handshake that need no TLS library.

import Dispatch
import Foundation
import Synchronization
import Testing
import VMDKBlock
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#endif

/// A raw file of `size` bytes (a multiple of 1 MiB) whose every 4 KiB block differs from the
/// others, and its SHA-256.
private func patternFile(_ path: String, size: Int) throws -> String {
  guard FileManager.default.createFile(atPath: path, contents: nil),
    let handle = FileHandle(forWritingAtPath: path)
  else { throw ToolFailure("cannot create \(path)") }
  defer { try? handle.close() }
  let context = DigestContext(.sha256)
  let base = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 ^ ($0 >> 12) &* 7) }
  for mib in 0..<(size >> 20) {
    var block = base
    // Stamp the MiB's number at the start of each of its 4 KiB blocks.
    for at in stride(from: 0, to: block.count, by: 4096) {
      block[at] = UInt8(truncatingIfNeeded: mib)
      block[at + 1] = UInt8(truncatingIfNeeded: mib >> 8)
    }
    block.withUnsafeBytes { context.update($0) }
    try handle.write(contentsOf: Data(block))
  }
  return context.finalHex()
}

/// Options that retry quickly.
private func quickRetries(_ retries: Int, backoff: Double = 0.01) -> TransportOptions {
  var options = TransportOptions()
  options.retries = retries
  options.backoffInitial = backoff
  options.backoffMax = backoff * 8
  options.connectTimeout = 2
  options.readTimeout = 5
  options.writeTimeout = 5
  return options
}

/// The whole export's SHA-256, read in one call.
private func exportDigest(_ client: NBDClient) throws -> String {
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(client.exportSize), alignment: 64)
  defer { buffer.deallocate() }
  _ = try client.read(at: 0, into: buffer)
  return sha256Hex(UnsafeRawBufferPointer(buffer))
}

/// The longest a call may take to fail with `options`: every backoff, a connect and a read
/// timeout per attempt, plus `slack` seconds.
private func failureBound(_ options: TransportOptions, slack: Double = 2) -> Double {
  let waits = (1...max(options.retries, 1)).map { options.backoff(attempt: $0) }.reduce(0, +)
  return waits + Double(options.retries + 1) * (options.connectTimeout + options.readTimeout) + slack
}

@Suite struct NBDFaultTests {
  @Test func injectedShutdownsAreRetriedUntilTheReadIsRight() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      let digest = try patternFile(file, size: 24 << 20)
      let server = try Nbdkit(
        plugin: "file", [file, "error=ESHUTDOWN", "error-pread-rate=20%"], filters: ["error"], readOnly: true)
      defer { server.stop() }
      var options = quickRetries(8)
      options.requestsInFlight = 8
      options.requestBytes = 256 << 10
      let client = try NBDClient(server.address, export: "", options: options)
      defer { client.close() }
      // 96 requests at 20 % each: some fail in nearly every round.
      #expect(try exportDigest(client) == digest)
      #expect(client.reconnects > 0)

      options.retries = 0
      let once = try NBDClient(server.address, export: "", options: options)
      defer { once.close() }
      let e = expectVMDKError(.serverShutdown) { _ = try exportDigest(once) }
      #expect(e?.isRetryable == true)
      #expect(e?.file == once.name)
      #expect(once.reconnects == 0)
    }
  }

  @Test func anIOErrorFailsAtOnceWithoutRetries() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      _ = try patternFile(file, size: 4 << 20)
      let server = try Nbdkit(
        plugin: "file", [file, "error=EIO", "error-pread-rate=100%"], filters: ["error"], readOnly: true)
      defer { server.stop() }
      // Long backoffs: a retry would show in the elapsed time.
      let client = try NBDClient(server.address, export: "", options: quickRetries(5, backoff: 2))
      defer { client.close() }
      let started = Date()
      let e = expectVMDKError(.fileAccess) { _ = try client.readUpTo(at: 8192, count: 1 << 20) }
      #expect(Date().timeIntervalSince(started) < 1.5)
      #expect(e?.isRetryable == false)
      #expect(e?.message.contains("EIO") == true)
      #expect(e?.offset == 8192)
      #expect(client.reconnects == 0)
    }
  }

  @Test func aSlowServerTimesOutWithinTheBound() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      _ = try patternFile(file, size: 1 << 20)
      let server = try Nbdkit(plugin: "file", [file, "delay-read=4"], filters: ["delay"], readOnly: true)
      defer { server.stop() }
      var options = quickRetries(2, backoff: 0.1)
      options.readTimeout = 0.4
      options.connectTimeout = 1
      let client = try NBDClient(server.address, export: "", options: options)
      defer { client.close() }
      let started = Date()
      let e = expectVMDKError(.timeout) { _ = try client.readUpTo(at: 0, count: 4096) }
      let elapsed = Date().timeIntervalSince(started)
      #expect(e?.isRetryable == true)
      // Three attempts of one read timeout each, two backoffs between them.
      #expect(elapsed >= 3 * options.readTimeout + options.backoff(attempt: 1) + options.backoff(attempt: 2) - 0.05)
      #expect(elapsed < failureBound(options), "\(elapsed) s")
      #expect((1...2).contains(client.reconnects), "a reconnect before each retry (one may time out under load)")
    }
  }

  @Test func aReadSurvivesTheServerBeingKilledAndRestarted() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      let size = 256 << 20
      let digest = try patternFile(file, size: size)
      let server = try QemuNBDServer(file: file, format: "raw", readOnly: true)
      defer { server.stop() }
      var options = quickRetries(10, backoff: 0.1)
      options.backoffMax = 0.4
      options.requestsInFlight = 16
      options.requestBytes = 1 << 20
      let client = try NBDClient(server.address, export: "disk", options: options)
      defer { client.close() }

      // A background thread reads the export in 8 MiB calls; the test kills the server once a
      // quarter is read and restarts it half a second later.
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
      defer { buffer.deallocate() }
      let transfer = Transfer(buffer)
      transfer.start(client, writing: false, in: 8 << 20)
      let killedAt = try transfer.killAndRestart(server, downtime: 0.5)
      let failure = transfer.failure.withLock { $0 }
      #expect(failure == nil, "\(String(describing: failure))")
      #expect(killedAt < size, "the server should stop in the middle of the read")
      #expect(client.reconnects >= 1)
      #expect(sha256Hex(UnsafeRawBufferPointer(buffer)) == digest)
    }
  }

  @Test func writesSurviveTheServerBeingKilledAndRestarted() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      let source = "\(folder)/source.raw"
      let size = 128 << 20
      let digest = try patternFile(source, size: size)
      try Qemu.img("create", "-q", "-f", "raw", file, String(size))
      let server = try QemuNBDServer(file: file, format: "raw")
      defer { server.stop() }
      var options = quickRetries(10, backoff: 0.1)
      options.backoffMax = 0.4
      options.requestBytes = 1 << 20
      let client = try NBDClient(server.address, export: "disk", writable: true, options: options)
      defer { client.close() }
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
      defer { buffer.deallocate() }
      let data = try #require(FileManager.default.contents(atPath: source))
      data.withUnsafeBytes { buffer.copyMemory(from: $0) }

      let transfer = Transfer(buffer)
      transfer.start(client, writing: true, in: 8 << 20)
      let killedAt = try transfer.killAndRestart(server, downtime: 0.3)
      let failure = transfer.failure.withLock { $0 }
      #expect(failure == nil, "\(String(describing: failure))")
      #expect(killedAt < size, "the server should stop in the middle of the writes")
      #expect(client.reconnects >= 1)
      client.close()
      server.stop()
      #expect(try fileDigest(file, .sha256) == digest)
    }
  }

  @Test func aServerThatStaysDownGivesTheTypedErrorInTime() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      _ = try patternFile(file, size: 4 << 20)
      let server = try QemuNBDServer(file: file, format: "raw", readOnly: true)
      var options = quickRetries(3, backoff: 0.1)
      options.connectTimeout = 1
      options.readTimeout = 1
      let client = try NBDClient(server.address, export: "disk", options: options)
      defer { client.close() }
      #expect(try client.readUpTo(at: 0, count: 4096).count == 4096)
      server.stop(signal: SIGKILL)
      let started = Date()
      let e = expectVMDKError(.connectionRefused) { _ = try client.readUpTo(at: 4096, count: 4096) }
      let elapsed = Date().timeIntervalSince(started)
      #expect(e?.isRetryable == true)
      let waits = (1...options.retries).map { options.backoff(attempt: $0) }.reduce(0, +)
      #expect(elapsed >= waits - 0.05, "every retry waits its backoff")
      #expect(elapsed < failureBound(options), "\(elapsed) s")
      // An open against the stopped server fails the same way, after its own retries.
      let opening = Date()
      expectVMDKError(.connectionRefused) { _ = try NBDClient(server.address, export: "disk", options: options) }
      #expect(Date().timeIntervalSince(opening) < failureBound(options))
    }
  }

  @Test func anExportThatChangedSizeIsRefusedAfterReconnecting() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      _ = try patternFile(file, size: 4 << 20)
      let server = try QemuNBDServer(file: file, format: "raw", readOnly: true)
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "disk", options: quickRetries(5, backoff: 0.1))
      defer { client.close() }
      #expect(try client.readUpTo(at: 0, count: 4096).count == 4096)
      server.stop(signal: SIGKILL)
      let handle = try #require(FileHandle(forWritingAtPath: file))
      try handle.truncate(atOffset: 8 << 20)
      try handle.close()
      try server.restart()
      let e = expectVMDKError(.protocolError) { _ = try client.readUpTo(at: 4096, count: 4096) }
      #expect(e?.isRetryable == false)
      #expect(e?.message.contains("\(8 << 20) bytes (was \(4 << 20))") == true, "\(String(describing: e))")
    }
  }

  @Test func aServerThatRequiresTLSSaysSo() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      _ = try patternFile(file, size: 1 << 20)
      let psk = "\(folder)/keys.psk"
      try "alice:000102030405060708090a0b0c0d0e0f\n".write(toFile: psk, atomically: true, encoding: .utf8)
      let server = try Nbdkit(
        plugin: "file", [file], serverOptions: ["--tls=require", "--tls-psk=\(psk)"], readOnly: true)
      defer { server.stop() }
      let e = expectVMDKError(.tlsFailure) { _ = try NBDClient(server.address, export: "", options: quickRetries(3)) }
      #expect(e?.message.contains("nbds://") == true, "\(String(describing: e))")
      #expect(e?.isRetryable == false)
    }
  }

  @Test func aServerRefusingStartTLSIsATLSFailure() throws {
    let server = try ScriptedServer { peer in
      try peer.greet()
      guard try peer.option() == 5 else { throw ToolFailure("expected STARTTLS") }
      let message = Array("no TLS here".utf8)
      try peer.optionReply(5, type: 0x8000_0002, message)  // NBD_REP_ERR_POLICY
      _ = try? peer.receive(1)
    }
    defer { server.finish() }
    let e = expectVMDKError(.tlsFailure) {
      _ = try NBDClient(.tcp(host: "127.0.0.1", port: server.port), export: "x", tls: true, options: quickRetries(0))
    }
    #expect(e?.message.contains("STARTTLS") == true)
    #expect(e?.message.contains("no TLS here") == true)
    #expect(e?.file?.hasPrefix("nbds://127.0.0.1:") == true)
  }

  @Test func theConnectTimeoutBoundsTheWholeHandshake() throws {
    // Every step answers within the timeout, but all of them together take longer.
    let server = try ScriptedServer { peer in
      try peer.greet()
      for _ in 0..<3 {
        let option = try peer.option()
        usleep(300_000)
        try peer.optionReply(option, type: 0x8000_0001, [])  // NBD_REP_ERR_UNSUP
      }
      _ = try? peer.receive(1)
    }
    defer { server.finish() }
    var options = quickRetries(0)
    options.connectTimeout = 0.5
    let started = Date()
    let e = expectVMDKError(.timeout) {
      _ = try NBDClient(.tcp(host: "127.0.0.1", port: server.port), export: "x", options: options)
    }
    #expect(e?.isRetryable == true)
    #expect(Date().timeIntervalSince(started) < options.connectTimeout + 0.4)
  }

  @Test func interleavedChunksOfRequestsInFlightLandInPlace() throws {
    let server = try ScriptedServer { peer in
      try peer.handshake()
      let first = try peer.receive(28)
      let second = try peer.receive(28)
      let (c1, o1) = (number(first[8..<16]), number(first[16..<24]))
      let (c2, o2) = (number(second[8..<16]), number(second[16..<24]))
      func chunk(_ cookie: UInt64, done: Bool, type: UInt64, _ payload: [UInt8]) throws {
        try peer.send(
          be(0x668e_33ef, 4) + be(done ? 1 : 0, 2) + be(type, 2) + be(cookie, 8) + be(UInt64(payload.count), 4)
            + payload)
      }
      // The second request's tail first, then the whole first, then the second's head as a hole.
      try chunk(c2, done: false, type: 1, be(o2 + 2048, 8) + [UInt8](repeating: 0xbb, count: 2048))
      try chunk(c1, done: true, type: 1, be(o1, 8) + [UInt8](repeating: 0xaa, count: 4096))
      try chunk(c2, done: true, type: 2, be(o2, 8) + be(2048, 4))
      _ = try? peer.receive(1)
    }
    defer { server.finish() }
    var options = quickRetries(0)
    options.requestsInFlight = 2
    options.requestBytes = 4096
    let client = try NBDClient(.tcp(host: "127.0.0.1", port: server.port), export: "x", options: options)
    var bytes = [UInt8](repeating: 0xee, count: 8192)
    #expect(try bytes.withUnsafeMutableBytes { try client.read(at: 4096, into: $0) } == 8192)
    let expected =
      [UInt8](repeating: 0xaa, count: 4096) + [UInt8](repeating: 0, count: 2048) + [UInt8](repeating: 0xbb, count: 2048)
    #expect(bytes == expected)
  }

  @Test func overlappingChunksThatAddUpAreStillAProtocolError() throws {
    let server = try ScriptedServer { peer in
      try peer.handshake()
      let request = try peer.receive(28)
      let (cookie, offset) = (number(request[8..<16]), number(request[16..<24]))
      // 4096 bytes asked; two chunks of 2048 that overlap by 1024 and leave a gap at the end.
      for (at, done) in [(offset, false), (offset + 1024, true)] {
        try peer.send(
          be(0x668e_33ef, 4) + be(done ? 1 : 0, 2) + be(1, 2) + be(cookie, 8) + be(2048 + 8, 4) + be(at, 8)
            + [UInt8](repeating: 0x55, count: 2048))
      }
      _ = try? peer.receive(1)
    }
    defer { server.finish() }
    let client = try NBDClient(.tcp(host: "127.0.0.1", port: server.port), export: "x", options: quickRetries(0))
    let e = expectVMDKError(.protocolError) { _ = try client.readUpTo(at: 0, count: 4096) }
    #expect(e?.isRetryable == false)
  }
}

extension NBDFaultTests {
  @Test func anOpenWaitsForAServerThatStartsLate() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      let digest = try patternFile(file, size: 4 << 20)
      let server = try QemuNBDServer(file: file, format: "raw", readOnly: true)
      defer { server.stop() }
      server.stop(signal: SIGKILL)
      let address = server.address
      let options = quickRetries(8, backoff: 0.1)
      // The open starts while nothing listens; the server comes back 0.3 s later.
      let opening = Opening()
      Thread.detachNewThread { opening.finish(Result { try NBDClient(address, export: "disk", options: options) }) }
      usleep(300_000)
      try server.restart()
      let client = try opening.wait().get()
      defer { client.close() }
      #expect(try exportDigest(client) == digest)
    }
  }

  @Test func anErrorOffsetOutsideTheRequestIsAProtocolError() throws {
    let server = try ScriptedServer { peer in
      try peer.handshake()
      let request = try peer.receive(28)
      let message = Array("elsewhere".utf8)
      // NBD_REPLY_TYPE_ERROR_OFFSET, EIO, naming a byte 1 MiB past the request.
      try peer.send(
        be(0x668e_33ef, 4) + be(1, 2) + be(0x8002, 2) + request[8..<16] + be(UInt64(6 + message.count + 8), 4)
          + be(5, 4) + be(UInt64(message.count), 2) + message + be(number(request[16..<24]) + (1 << 20), 8))
      _ = try? peer.receive(1)
    }
    defer { server.finish() }
    let client = try NBDClient(.tcp(host: "127.0.0.1", port: server.port), export: "x", options: quickRetries(0))
    let e = expectVMDKError(.protocolError) { _ = try client.readUpTo(at: 4096, count: 512) }
    #expect(e?.message.contains("outside the request") == true, "\(String(describing: e))")
  }
}

/// The result of an open on another thread.
private final class Opening: Sendable {
  private let result = Locked<Result<NBDClient, any Error>?>(nil)
  private let done = DispatchSemaphore(value: 0)

  func finish(_ outcome: Result<NBDClient, any Error>) {
    result.withLock { $0 = outcome }
    done.signal()
  }

  func wait() throws -> Result<NBDClient, any Error> {
    guard done.wait(timeout: .now() + 30) == .success, let outcome = result.withLock({ $0 }) else {
      throw ToolFailure("the open did not finish within 30 s")
    }
    return outcome
  }
}

/// Reads a whole export into the test's buffer, or writes the buffer to it, on another thread,
/// in calls of a given size, publishing how far it got. The test waits for `finished` before
/// it reads or frees the buffer.
private final class Transfer: @unchecked Sendable {
  let buffer: UnsafeMutableRawBufferPointer
  let progress = Atomic<Int>(0)
  let failure = Locked<(any Error)?>(nil)
  let finished = DispatchSemaphore(value: 0)

  init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }

  /// Starts the thread; `writing` writes the buffer (then flushes), otherwise it reads.
  func start(_ client: NBDClient, writing: Bool, in calls: Int) {
    Thread.detachNewThread { [self] in
      defer { finished.signal() }
      do {
        var at = 0
        while at < buffer.count {
          let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[at..<min(at + calls, buffer.count)])
          if writing {
            try client.write(at: UInt64(at), from: UnsafeRawBufferPointer(piece))
          } else {
            _ = try client.read(at: UInt64(at), into: piece)
          }
          at += piece.count
          progress.store(at, ordering: .releasing)
        }
        if writing { try client.flush() }
      } catch {
        failure.withLock { $0 = error }
      }
    }
  }

  /// Waits until a quarter is done, kills the server, restarts it `downtime` seconds later,
  /// and waits for the end. Returns how far the transfer was when the server died.
  func killAndRestart(_ server: NBDServerProcess, downtime: Double) throws -> Int {
    while progress.load(ordering: .acquiring) < buffer.count / 4 { usleep(200) }
    server.stop(signal: SIGKILL)
    let killedAt = progress.load(ordering: .acquiring)
    usleep(UInt32(downtime * 1e6))
    try server.restart()
    finished.wait()
    return killedAt
  }
}
