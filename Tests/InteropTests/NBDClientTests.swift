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

      // One call for the whole disk: the client splits it into requests, several in flight.
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
    var options = TransportOptions()
    options.retries = 2
    options.backoffInitial = 0.05
    let e = expectVMDKError(.connectionRefused) {
      _ = try NBDClient(.tcp(host: "127.0.0.1", port: port), export: "disk", options: options)
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
    // No retries: the scripted server takes one connection.
    let client = try NBDClient(.tcp(host: "127.0.0.1", port: server.port), export: "x", timeout: 5)
    #expect(try client.size() == 1 << 20)
    #expect(!client.supportsBlockStatus)
    expectVMDKError(.notSupported) { _ = try client.blockStatus(at: 0, length: 512) }
    let e = expectVMDKError(.protocolError) { _ = try client.readUpTo(at: 4096, count: 16) }
    #expect(e?.isRetryable == false)
    // The stream is out of step after that: the connection is closed.
    expectVMDKError(.connectionLost) { _ = try client.readUpTo(at: 0, count: 16) }
  }

  @Test func serverErrorChunksAreTypedAndESHUTDOWNEndsTheSessionSoftly() throws {
    let sawDisconnect = Flag()
    let server = try ScriptedServer { peer in
      try peer.handshake()
      func errorChunk(_ request: [UInt8], _ error: UInt64, _ text: String) throws {
        let message = Array(text.utf8)
        try peer.send(
          be(0x668e_33ef, 4) + be(1, 2) + be(0x8001, 2) + request[8..<16] + be(UInt64(6 + message.count), 4)
            + be(error, 4) + be(UInt64(message.count), 2) + message)
      }
      // First read: an ERROR chunk, EIO with a message.
      try errorChunk(try peer.receive(28), 5, "bad sector")
      // Second read, on the same connection: a simple reply with the data.
      let request = try peer.receive(28)
      try peer.send(be(0x6744_6698, 4) + be(0, 4) + request[8..<16] + [UInt8](repeating: 0x42, count: 16))
      // Third read: ESHUTDOWN. The client must answer with NBD_CMD_DISC.
      try errorChunk(try peer.receive(28), 108, "going down")
      let goodbye = try peer.receive(28)
      sawDisconnect.set(number(goodbye[6..<8]) == 2)
      _ = try? peer.receive(1)
    }
    defer { server.finish() }
    // No retries: the errors reach the caller.
    let client = try NBDClient(.tcp(host: "127.0.0.1", port: server.port), export: "x", timeout: 5)
    let eio = expectVMDKError(.fileAccess) { _ = try client.readUpTo(at: 1024, count: 16) }
    #expect(eio?.isRetryable == false)
    #expect(eio?.message.contains("bad sector") == true)
    #expect(eio?.offset == 1024)
    #expect(try client.readUpTo(at: 0, count: 16) == [UInt8](repeating: 0x42, count: 16))
    let e = expectVMDKError(.serverShutdown) { _ = try client.readUpTo(at: 512, count: 16) }
    #expect(e?.isRetryable == true)
    #expect(e?.message.contains("going down") == true)
    #expect(e?.offset == 512)
    // The session ended with a soft disconnect, as the protocol requires after ESHUTDOWN.
    expectVMDKError(.connectionLost) { _ = try client.readUpTo(at: 0, count: 16) }
    server.finish()
    #expect(sawDisconnect.value)
  }
}

/// A flag set on one thread and read on another.
final class Flag: Sendable {
  private let state = Locked(false)
  func set(_ value: Bool) { state.withLock { $0 = value } }
  var value: Bool { state.withLock { $0 } }
}

// MARK: Requests in flight, write-zeroes, trim, holes

/// The SHA-256 of a buffer, as hex.
func sha256Hex(_ bytes: UnsafeRawBufferPointer) -> String {
  let context = DigestContext(.sha256)
  context.update(bytes)
  return context.finalHex()
}

/// Options with `inFlight` requests of `bytes` bytes.
private func pipelined(_ inFlight: Int, _ bytes: Int) -> TransportOptions {
  var options = TransportOptions()
  options.requestsInFlight = inFlight
  options.requestBytes = bytes
  return options
}

/// A 70.5 MiB VMDK mixing data, written zeros and never-written holes, with an odd-sized tail.
private func mixedFixture(_ folder: String) throws -> (image: String, size: UInt64) {
  let image = "\(folder)/mixed.vmdk"
  let size: UInt64 = (70 << 20) + (512 << 10)
  try Qemu.create(image, size: size)
  try Qemu.io(
    image,
    [
      "write -P 0x5a 0 1M", "write -P 0xa5 3M 5M", "write -z 12M 2M", "write -P 0x11 33M 100k",
      "write -P 0x77 40M 17M", "write -P 0x3c 70M 512k",
    ])
  return (image, size)
}

extension NBDClientTests {
  @Test func everyWindowAndRequestSizeReadsTheDiskLikeQemu() throws {
    try withTemporaryFolder { folder in
      let (image, size) = try mixedFixture(folder)
      let reference = try Qemu.rawSHA256(image, scratch: folder)
      let server = try QemuNBDServer(file: image, format: "vmdk", readOnly: true)
      defer { server.stop() }
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(size), alignment: 64)
      defer { buffer.deallocate() }
      for inFlight in [1, 4, 64] {
        for bytes in [64 << 10, 2 << 20, 32 << 20] {
          let client = try NBDClient(server.address, export: "disk", options: pipelined(inFlight, bytes))
          defer { client.close() }
          #expect(client.requestBytes == bytes)
          buffer.initializeMemory(as: UInt8.self, repeating: 0xee)
          #expect(try client.read(at: 0, into: buffer) == Int(size))
          #expect(sha256Hex(UnsafeRawBufferPointer(buffer)) == reference, "\(inFlight) × \(bytes) bytes")
        }
      }
    }
  }

  @Test func threadsSharingAClientReadTheirOwnBytes() throws {
    try withTemporaryFolder { folder in
      let (image, size) = try mixedFixture(folder)
      let raw = "\(folder)/mixed.raw"
      try Qemu.img("convert", "-O", "raw", image, raw)
      let expected = try #require(FileManager.default.contents(atPath: raw))
      let server = try QemuNBDServer(file: image, format: "vmdk", readOnly: true)
      defer { server.stop() }
      // Socket buffers set too (SO_SNDBUF/SO_RCVBUF before the connect).
      var options = pipelined(8, 256 << 10)
      options.sendBufferBytes = 1 << 20
      options.receiveBufferBytes = 1 << 20
      let client = try NBDClient(server.address, export: "disk", options: options)
      defer { client.close() }
      // Eight threads, each reading its own slices in an order of its own.
      let slice = 3 << 20 + 4096
      let failures = Locked(0)
      DispatchQueue.concurrentPerform(iterations: 8) { thread in
        var bytes = [UInt8](repeating: 0, count: slice)
        for k in 0..<6 {
          let offset = UInt64(((thread * 7 + k * 13) % 23) * slice)
          guard offset < size else { continue }
          let n = (try? bytes.withUnsafeMutableBytes { try client.read(at: offset, into: $0) }) ?? -1
          let want = expected[Int(offset)..<min(Int(offset) + slice, expected.count)]
          if n != want.count || !bytes[0..<max(n, 0)].elementsEqual(want) { failures.withLock { $0 += 1 } }
        }
      }
      #expect(failures.withLock { $0 } == 0)
    }
  }

  @Test func nextDataAndNextHoleFollowQemusMap() throws {
    try withTemporaryFolder { folder in
      let (image, size) = try mixedFixture(folder)
      let qemuMap = try Qemu.map(image)
      let server = try QemuNBDServer(file: image, format: "vmdk", readOnly: true)
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "disk")
      defer { client.close() }
      // The runs that do not read as zeros, by qemu-img map and by walking nextData/nextHole.
      var theirs: [Range<UInt64>] = []
      for r in qemuMap where !r.zero {
        if let last = theirs.last, last.upperBound == r.start {
          theirs[theirs.count - 1] = last.lowerBound..<(r.start + r.length)
        } else {
          theirs.append(r.start..<(r.start + r.length))
        }
      }
      var ours: [Range<UInt64>] = []
      var at: UInt64 = 0
      while let data = try client.nextData(from: at), data < size {
        let hole = try #require(try client.nextHole(from: data))
        #expect(hole > data && hole <= size)
        ours.append(data..<hole)
        at = hole
      }
      #expect(ours == theirs)
      #expect(theirs.count >= 4, "the fixture should mix data and zeros: \(theirs)")
      #expect(try client.nextHole(from: size) == size)
      #expect(try client.nextData(from: size) == UInt64.max)
      // In the middle of a data run: data right here, the hole at its end.
      let run = try #require(theirs.last)
      #expect(try client.nextData(from: run.lowerBound + 1) == run.lowerBound + 1)
      #expect(try client.nextHole(from: run.lowerBound + 1) == run.upperBound)
    }
  }

  @Test func aSequentialHoleScanAsksTheServerOnce() throws {
    try withTemporaryFolder { folder in
      // A sparse 64 MiB file with five 1 MiB islands of data.
      let file = "\(folder)/sparse.raw"
      let islands: [UInt64] = [1, 5, 9, 20, 40].map { $0 << 20 }
      #expect(FileManager.default.createFile(atPath: file, contents: nil))
      let handle = try #require(FileHandle(forWritingAtPath: file))
      for at in islands {
        try handle.seek(toOffset: at)
        try handle.write(contentsOf: Data(repeating: 0x5a, count: 1 << 20))
      }
      try handle.truncate(atOffset: 64 << 20)
      try handle.close()
      // nbdkit's log filter records every request the client makes.
      let log = "\(folder)/requests.log"
      let server = try Nbdkit(plugin: "file", [file, "logfile=\(log)"], filters: ["log"], readOnly: true)
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "")
      var ours: [Range<UInt64>] = []
      var at: UInt64 = 0
      while let data = try client.nextData(from: at), data != UInt64.max {
        let hole = try #require(try client.nextHole(from: data))
        ours.append(data..<hole)
        at = hole
      }
      client.close()
      server.stop()
      #expect(ours == islands.map { $0..<($0 + (1 << 20)) })
      let requests = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").filter {
        $0.contains(" Extents id=")
      }
      #expect(requests.count == 1, "one block status request for the whole scan: \(requests)")
    }
  }

  @Test func writeZeroesTrimAndPipelinedWritesLandInTheFile() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      let size = 48 << 20
      let pattern = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ $0 >> 12) }
      #expect(FileManager.default.createFile(atPath: file, contents: Data(pattern)))
      let server = try QemuNBDServer(file: file, format: "raw", extra: ["--discard=unmap"])
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "disk", writable: true, options: pipelined(16, 1 << 20))
      #expect(client.supportsWriteZeroes && client.supportsTrim)
      // 20 MiB of new data in 1 MiB requests, 16 in flight, from an unaligned offset.
      let written = (0..<(20 << 20)).map { UInt8(truncatingIfNeeded: ($0 >> 9) &* 7 &+ 1) }
      let at = 5 << 20 + 777
      try written.withUnsafeBytes { try client.write(at: UInt64(at), from: $0) }
      try client.writeZeroes(at: (30 << 20) + 512, length: 3 << 20)
      try client.trim(at: 40 << 20, length: 4 << 20)
      try client.flush()
      client.close()
      server.stop()

      var expected = pattern
      expected.replaceSubrange(at..<(at + written.count), with: written)
      expected.replaceSubrange(((30 << 20) + 512)..<((33 << 20) + 512), with: repeatElement(0, count: 3 << 20))
      let stored = Array(try #require(FileManager.default.contents(atPath: file)))
      #expect(stored.count == size)
      // A trimmed range may read as anything; qemu-nbd with --discard=unmap punches a hole.
      #expect(stored[(40 << 20)..<(44 << 20)].allSatisfy { $0 == 0 })
      expected.replaceSubrange((40 << 20)..<(44 << 20), with: repeatElement(0, count: 4 << 20))
      #expect(stored == expected)
    }
  }

  @Test func writeZeroesWithoutServerSupportWritesZeroBuffers() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      let size = 40 << 20
      #expect(FileManager.default.createFile(atPath: file, contents: Data(repeating: 0x6b, count: size)))
      // nbdkit's nozero filter hides NBD_CMD_WRITE_ZEROES.
      let server = try Nbdkit(plugin: "file", [file], filters: ["nozero"])
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "", writable: true, options: pipelined(4, 1 << 20))
      #expect(!client.supportsWriteZeroes)
      try client.writeZeroes(at: 4096 + 3, length: (9 << 20) + 5)
      try client.flush()
      client.close()
      server.stop()
      let stored = Array(try #require(FileManager.default.contents(atPath: file)))
      let zeroed = (4096 + 3)..<(4096 + 3 + (9 << 20) + 5)
      #expect(stored[zeroed].allSatisfy { $0 == 0 })
      #expect(stored[..<zeroed.lowerBound].allSatisfy { $0 == 0x6b })
      #expect(stored[zeroed.upperBound...].allSatisfy { $0 == 0x6b })
    }
  }

  @Test func theServersMaximumPayloadBoundsTheRequestSize() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      let bytes = (0..<(6 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 16) }
      #expect(FileManager.default.createFile(atPath: file, contents: Data(bytes)))
      let server = try Nbdkit(
        plugin: "file", [file, "blocksize-maximum=1M"], filters: ["blocksize-policy"], readOnly: true)
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "", options: pipelined(4, 32 << 20))
      defer { client.close() }
      #expect(client.requestBytes == 1 << 20)
      #expect(try client.readExactly(at: 0, count: bytes.count, what: "disk") == bytes)
    }
  }

  @Test func aNbdkitExportOverAUnixSocket() throws {
    try withTemporaryFolder { folder in
      let file = "\(folder)/disk.raw"
      let bytes = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 29 &+ 3) }
      #expect(FileManager.default.createFile(atPath: file, contents: Data(bytes)))
      let socket = "\(folder)/nbdkit.sock"
      let server = try Nbdkit(plugin: "file", [file], readOnly: true, socketPath: socket)
      defer { server.stop() }
      let client = try NBDClient(server.address, export: "", options: pipelined(8, 256 << 10))
      defer { client.close() }
      #expect(client.name == "nbd+unix:///?socket=\(socket)")
      #expect(!client.usesTLS)
      #expect(try client.size() == UInt64(bytes.count))
      #expect(try client.readExactly(at: 0, count: bytes.count, what: "disk") == bytes)
    }
  }
}
