// NBD servers for the client's tests, all on loopback and stopped by the test: qemu-nbd and
// nbdkit child processes (which can be killed and restarted on the same port), and a scripted
// one-connection server that breaks the protocol on purpose.

import Dispatch
import Foundation
import Testing
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#endif

/// An NBD server child process on 127.0.0.1 (or a Unix socket), stopped in `stop()` (and by
/// deinit). `restart()` starts the same command again, on the same port.
class NBDServerProcess {
  private var process = Process()
  let tool: String
  let arguments: [String]
  let port: UInt16
  let socketPath: String?
  private(set) var running = false

  init(tool: String, arguments: [String], port: UInt16, socketPath: String?) throws {
    self.tool = tool
    self.arguments = arguments
    self.port = port
    self.socketPath = socketPath
    try start()
  }

  deinit { stop() }

  var address: NBDClient.Address {
    socketPath.map { .unix(path: $0) } ?? .tcp(host: "127.0.0.1", port: port)
  }

  /// The server's URI for libnbd's tools (nbdcopy, nbdinfo).
  func uri(export: String) -> String {
    socketPath.map { "nbd+unix:///\(export)?socket=\($0)" } ?? "nbd://127.0.0.1:\(port)/\(export)"
  }

  /// Starts the process and waits (up to 5 s) until it accepts connections.
  private func start() throws {
    process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = arguments
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = FileHandle.nullDevice
    // Quiet: the readiness probes make servers complain about clients that left early.
    process.standardError = FileHandle.nullDevice
    try process.run()
    running = true
    let deadline = Date().addingTimeInterval(5)
    while !canConnect() {
      guard process.isRunning, Date() < deadline else {
        stop()
        throw ToolFailure("\(tool) \(arguments.joined(separator: " ")) did not start listening")
      }
      usleep(20_000)
    }
  }

  /// Starts the same server again (after `stop()`), on the same port or socket.
  func restart() throws {
    stop()
    if let socketPath { try? FileManager.default.removeItem(atPath: socketPath) }
    try start()
  }

  /// Kills the server and waits. SIGKILL: the child inherits the test runner's blocked signal
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

/// qemu-nbd serving one file as export `export`.
final class QemuNBDServer: NBDServerProcess {
  /// `extra` are more qemu-nbd options (`--discard=unmap`).
  init(
    file: String, format: String, export: String = "disk", readOnly: Bool = false, socketPath: String? = nil,
    extra: [String] = []
  ) throws {
    let port = socketPath == nil ? try freeLoopbackPort() : 0
    var arguments = ["--export-name", export, "--persistent", "--shared", "8", "-f", format] + extra
    if let socketPath {
      arguments += ["--socket", socketPath]
    } else {
      arguments += ["--bind", "127.0.0.1", "--port", String(port)]
    }
    if readOnly { arguments.append("--read-only") }
    arguments.append(file)
    try super.init(tool: try requireTool("qemu-nbd"), arguments: arguments, port: port, socketPath: socketPath)
  }
}

/// nbdkit (foreground, exiting with the test runner) with `filters` in front of `plugin`,
/// configured by `parameters` (`key=value`, the plugin's and the filters'); `serverOptions`
/// go before the plugin (`--tls=require`). nbdkit serves its one export under any name.
final class Nbdkit: NBDServerProcess {
  init(
    plugin: String, _ parameters: [String], filters: [String] = [], serverOptions: [String] = [],
    readOnly: Bool = false, socketPath: String? = nil
  ) throws {
    let port = socketPath == nil ? try freeLoopbackPort() : 0
    var arguments = ["-f", "--exit-with-parent"] + serverOptions
    if let socketPath {
      arguments += ["-U", socketPath]
    } else {
      arguments += ["-i", "127.0.0.1", "-p", String(port)]
    }
    if readOnly { arguments.append("-r") }
    arguments += filters.map { "--filter=\($0)" }
    arguments.append(plugin)
    arguments += parameters
    try super.init(tool: try requireTool("nbdkit"), arguments: arguments, port: port, socketPath: socketPath)
  }
}

func loopback(_ port: UInt16) -> sockaddr_in {
  var sa = sockaddr_in()
  sa.sin_family = sa_family_t(AF_INET)
  sa.sin_port = port.bigEndian
  sa.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
  return sa
}

/// A socket bound to 127.0.0.1 on a port the kernel chose; `listening` also calls listen().
func boundLoopbackSocket(listening: Bool) throws -> (fd: Int32, port: UInt16) {
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

// MARK: A hostile server

/// A one-connection NBD server on loopback that follows a script, to check that the client
/// refuses replies that break the protocol instead of allocating or trapping.
final class ScriptedServer: @unchecked Sendable {
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

  private let finished = Locked(false)

  /// Waits for the script to end (the client closed or the script finished), then closes.
  /// Later calls do nothing.
  func finish() {
    guard
      finished.withLock({ f in
        defer { f = true }
        return !f
      })
    else { return }
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

/// `value` as `count` big-endian bytes.
func be(_ value: UInt64, _ count: Int) -> [UInt8] {
  (0..<count).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * (count - 1 - $0))) }
}

/// A big-endian number.
func number(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }
