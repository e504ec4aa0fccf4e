// vmdk-serve under load: 200 clients connected at once, every one in transmission with reads
// in flight, every reply checked against the local file, and the server's peak RSS (VmHWM of
// the vmdk-serve process) printed and bounded.

import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

/// A bare NBD client (fixed newstyle, NBD_OPT_EXPORT_NAME, simple replies) on 127.0.0.1.
final class LoadClient {
  let fd: Int32

  init(port: UInt16) throws {
    fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ToolFailure("socket: \(String(cString: strerror(errno)))") }
    var sa = loopback(port)
    let rc = withUnsafePointer(to: &sa) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard rc == 0 else {
      close(fd)
      throw ToolFailure("connect: \(String(cString: strerror(errno)))")
    }
    var tv = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
  }

  deinit { close(fd) }

  func send(_ bytes: [UInt8]) throws {
    var done = 0
    while done < bytes.count {
      let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
      guard n > 0 else { throw ToolFailure("send: \(String(cString: strerror(errno)))") }
      done += n
    }
  }

  func recv(_ count: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
      let n = out.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress! + done, count - done, 0) }
      guard n > 0 else { throw ToolFailure("the server closed the connection (\(String(cString: strerror(errno))))") }
      done += n
    }
    return out
  }

  static func be(_ value: UInt64, _ bytes: Int) -> [UInt8] {
    (0..<bytes).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64(bytes - 1 - $0))) }
  }

  static func value(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }

  /// Greeting, client flags, NBD_OPT_EXPORT_NAME of the default export; its size.
  func handshake() throws -> UInt64 {
    let greeting = try recv(18)
    guard Self.value(greeting[0..<8]) == 0x4e42_444d_4147_4943 else { throw ToolFailure("bad greeting") }
    try send(Self.be(3, 4))  // fixed newstyle, no zeroes
    try send(Self.be(0x4948_4156_454F_5054, 8) + Self.be(1, 4) + Self.be(0, 4))
    let reply = try recv(10)
    return Self.value(reply[0..<8])
  }

  func read(cookie: UInt64, offset: UInt64, length: UInt32) throws {
    try send(
      Self.be(0x2560_9513, 4) + Self.be(0, 2) + Self.be(0, 2) + Self.be(cookie, 8) + Self.be(offset, 8)
        + Self.be(UInt64(length), 4))
  }

  /// One simple reply with its data: cookie and bytes.
  func readReply(length: Int) throws -> (cookie: UInt64, data: [UInt8]) {
    let header = try recv(16)
    guard Self.value(header[0..<4]) == 0x6744_6698 else { throw ToolFailure("not a simple reply") }
    guard Self.value(header[4..<8]) == 0 else { throw ToolFailure("error \(Self.value(header[4..<8]))") }
    return (Self.value(header[8..<16]), try recv(length))
  }
}

/// The peak resident set (VmHWM) of a process, in KiB.
func peakRSSKiB(pid: Int32) throws -> Int {
  let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
  guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
    let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
  else { throw ToolFailure("no VmHWM for process \(pid)") }
  return kib
}

@Suite(.serialized) struct ServeLoadTests {
  @Test func twoHundredConnectionsAtOnceWithBoundedRSS() throws {
    try withTemporaryFolder { folder in
      let image = "\(folder)/load.vmdk"
      try Qemu.create(image, size: 64 << 20)
      try Qemu.io(image, (0..<16).map { "write -P \($0 + 1) \($0 * 4)M 1M" })
      let local = try Disk.open(image)
      defer { try? local.close() }
      let pidFile = "\(folder)/serve.pid"
      let server = try VMDKServeProcess([image, "--connections", "200", "--pid-file", pidFile])
      defer { server.stop() }
      for _ in 0..<200 where !FileManager.default.fileExists(atPath: pidFile) { usleep(10_000) }
      let pid = try #require(
        Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
      let before = try peakRSSKiB(pid: pid)
      let started = Date()
      var clients: [LoadClient] = []
      for _ in 0..<200 { clients.append(try LoadClient(port: server.port)) }
      for c in clients { #expect(try c.handshake() == 64 << 20) }
      // Every client has four 256 KiB reads in flight before any reply is read.
      let length = 256 << 10
      for (i, c) in clients.enumerated() {
        for k in 0..<4 {
          let offset = UInt64(((i * 4 + k) * length) % (64 << 20))
          try c.read(cookie: UInt64(i * 4 + k), offset: offset, length: UInt32(length))
        }
      }
      var checked = 0
      for (i, c) in clients.enumerated() {
        var seen = Set<UInt64>()
        for _ in 0..<4 {
          let (cookie, data) = try c.readReply(length: length)
          #expect(cookie / 4 == UInt64(i) && seen.insert(cookie).inserted)
          let offset = (Int(cookie) * length) % (64 << 20)
          if data == (try local.read(at: UInt64(offset), count: length)) { checked += 1 }
        }
      }
      let seconds = Date().timeIntervalSince(started)
      #expect(checked == 800)
      let peak = try peakRSSKiB(pid: pid)
      print(
        "vmdk-serve, 200 connections x 4 reads of 256 KiB in \(String(format: "%.2f", seconds)) s: peak RSS "
          + "\(peak / 1024) MiB (\(before / 1024) MiB before the clients)")
      #expect(peak < 256 << 10, "peak RSS \(peak) KiB")
      clients = []
    }
  }
}
