// TLSChannel against real TLS servers on loopback: `openssl s_server` (an echo server that
// reverses lines) and nbdkit after NBD_OPT_STARTTLS, with a CA, server and client
// certificates and an unrelated second CA made by the openssl tool at test time. Shows the
// handshake and an exchange, verification with the right CA, refusal of the wrong CA and of a
// wrong host name (tlsFailure naming the problem), verification turned off, client
// certificates, TLS-PSK (TLS 1.3 and 1.2, and against nbdkit's GnuTLS), unreadable files
// named, and I/O failures under TLS mapped like plain sockets.

import Foundation
import Testing
import VMDKBlock

@testable import VMDKTransport

#if canImport(Glibc)
  import Glibc
#endif

// MARK: Certificates

/// A CA, a server certificate for localhost and 127.0.0.1, a client certificate, and a second
/// CA that signed none of them, as PEM files in a folder. The server files carry the names
/// nbdkit and qemu look for in a certificates folder (ca-cert.pem, server-cert.pem,
/// server-key.pem).
struct TestPKI {
  let folder: String
  var caCert: String { "\(folder)/ca-cert.pem" }
  var serverCert: String { "\(folder)/server-cert.pem" }
  var serverKey: String { "\(folder)/server-key.pem" }
  var clientCert: String { "\(folder)/client-cert.pem" }
  var clientKey: String { "\(folder)/client-key.pem" }
  var otherCACert: String { "\(folder)/other/ca-cert.pem" }

  /// Makes every file in `folder` (which exists) with `openssl`.
  init(folder: String) throws {
    self.folder = folder
    try FileManager.default.createDirectory(atPath: "\(folder)/other", withIntermediateDirectories: true)
    try Self.makeCA(key: "\(folder)/ca-key.pem", cert: caCert, name: "VMDK test CA")
    try Self.makeCA(key: "\(folder)/other/ca-key.pem", cert: otherCACert, name: "Unrelated CA")
    try issue(
      key: serverKey, cert: serverCert, name: "localhost",
      extensions: ["extendedKeyUsage=serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
    try issue(key: clientKey, cert: clientCert, name: "vmdk client", extensions: ["extendedKeyUsage=clientAuth"])
  }

  /// `openssl req` arguments for a new unencrypted key: EC P-256, quick to make (RSA keys made
  /// the tests several times slower) and accepted by OpenSSL, GnuTLS and qemu.
  private static let newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

  private static func makeCA(key: String, cert: String, name: String) throws {
    try runChecked(
      try requireTool("openssl"),
      ["req", "-x509"] + newKey + [
        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=\(name)",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
      ])
  }

  /// A leaf certificate signed by the first CA.
  private func issue(key: String, cert: String, name: String, extensions: [String]) throws {
    let openssl = try requireTool("openssl")
    let request = "\(cert).csr"
    let extensionFile = "\(cert).ext"
    let lines =
      ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"] + extensions
    try (lines.joined(separator: "\n") + "\n").write(toFile: extensionFile, atomically: true, encoding: .utf8)
    try runChecked(
      openssl,
      ["req"] + Self.newKey + ["-keyout", key, "-out", request, "-subj", "/CN=\(name)"])
    try runChecked(
      openssl,
      [
        "x509", "-req", "-in", request, "-CA", caCert, "-CAkey", "\(folder)/ca-key.pem", "-set_serial",
        String(UInt32.random(in: 1...UInt32.max)), "-days", "2", "-out", cert, "-extfile", extensionFile,
      ])
  }
}

/// Runs `body` with a fresh PKI in a temporary folder.
func withTestPKI<T>(_ body: (TestPKI) throws -> T) throws -> T {
  try withTemporaryFolder { folder in try body(try TestPKI(folder: folder)) }
}

// MARK: Servers

/// A server child process listening on 127.0.0.1:`port`, killed in `stop()` and on deinit.
final class LoopbackServer {
  let process = Process()
  let port: UInt16
  private(set) var running = true

  /// Starts `tool arguments(port)` and waits (up to 10 s) until the port accepts connections.
  init(_ tool: String, port: UInt16? = nil, _ arguments: (UInt16) -> [String]) throws {
    let path = try requireTool(tool)
    self.port = try port ?? freeLoopbackPort()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments(self.port)
    process.standardInput = Pipe()  // s_server ends at the end of its input: keep it open
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    let deadline = Date().addingTimeInterval(10)
    while !canConnect() {
      guard process.isRunning, Date() < deadline else {
        stop()
        throw ToolFailure("\(tool) \(process.arguments!.joined(separator: " ")) did not start listening")
      }
      usleep(20_000)
    }
  }

  deinit { stop() }

  /// SIGKILL: the test runner's blocked signal mask is inherited, a SIGTERM might never arrive.
  func stop() {
    guard running else { return }
    running = false
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
  }

  /// A plain TCP connection to the server.
  func connect(timeout: Double = 10) throws -> SocketChannel {
    try SocketChannel.connect(.tcp(host: "127.0.0.1", port: port), name: uri, timeout: timeout)
  }

  var uri: String { "tls://127.0.0.1:\(port)" }

  private func canConnect() -> Bool {
    (try? SocketChannel.connect(.tcp(host: "127.0.0.1", port: port), name: "probe", timeout: 1)) != nil
  }
}

/// `openssl s_server` answering each line with the line reversed (`-rev`).
func reversingServer(_ extra: [String]) throws -> LoopbackServer {
  try LoopbackServer("openssl") { port in
    ["s_server", "-accept", "127.0.0.1:\(port)", "-rev", "-quiet"] + extra
  }
}

/// TLS options trusting `caFile`.
func tlsOptions(caFile: String? = nil, verify: Bool = true) -> TLSOptions {
  var options = TLSOptions()
  options.caFile = caFile
  options.verifyPeer = verify
  return options
}

/// Connects to `server`, runs the TLS handshake, sends a line and expects it back reversed.
func exchangeReversed(_ server: LoopbackServer, _ options: TLSOptions, host: String? = "127.0.0.1") throws {
  let channel = try TLSChannel(socket: try server.connect(), options: options, host: host, name: server.uri)
  defer { channel.close() }
  try channel.sendAll(Array("disk image\n".utf8))
  #expect(String(decoding: try channel.recvBytes(11), as: UTF8.self) == "egami ksid\n")
}

/// Expects a non-retryable tlsFailure whose message contains `text`.
func expectTLSFailure(_ text: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
  let error = expectVMDKError(.tlsFailure, sourceLocation: sourceLocation, body)
  if let error {
    #expect(error.message.contains(text), "message: \(error)", sourceLocation: sourceLocation)
    #expect(!error.isRetryable, "\(error)", sourceLocation: sourceLocation)
  }
}

// MARK: NBD over TLS, by hand

/// The NBD fixed-newstyle handshake up to NBD_OPT_STARTTLS, then TLS, then NBD_OPT_LIST over
/// TLS: enough of NBD to reach nbdkit's TLS without the NBD client. Returns the export names
/// (nbdkit's memory plugin lists one, "").
func nbdStartTLSAndList(_ server: LoopbackServer, _ options: TLSOptions) throws -> [String] {
  let socket = try server.connect()
  #expect(try socket.recvBytes(18).prefix(16).elementsEqual(Array("NBDMAGICIHAVEOPT".utf8)))
  try socket.sendAll(bigEndian(1, 4))  // NBD_FLAG_C_FIXED_NEWSTYLE
  try sendOption(5, on: socket)  // NBD_OPT_STARTTLS
  let (type, _) = try optionReply(5, on: socket)
  guard type == 1 else { throw ToolFailure("STARTTLS refused with reply type \(type)") }
  let channel = try TLSChannel(socket: socket, options: options, host: "127.0.0.1", name: server.uri)
  defer { channel.close() }
  try sendOption(3, on: channel)  // NBD_OPT_LIST
  var names: [String] = []
  while true {
    let (type, payload) = try optionReply(3, on: channel)
    if type == 1 { return names }  // NBD_REP_ACK
    guard type == 2, payload.count >= 4 else { throw ToolFailure("unexpected NBD_OPT_LIST reply \(type)") }
    let length = Int(payload.prefix(4).reduce(0) { $0 << 8 | UInt32($1) })
    names.append(String(decoding: payload.dropFirst(4).prefix(length), as: UTF8.self))
  }
}

private func bigEndian(_ value: UInt64, _ count: Int) -> [UInt8] {
  (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64(count - 1 - $0))) }
}

private func sendOption(_ option: UInt64, on channel: ByteChannel) throws {
  try channel.sendAll(Array("IHAVEOPT".utf8) + bigEndian(option, 4) + bigEndian(0, 4))
}

private func optionReply(_ option: UInt64, on channel: ByteChannel) throws -> (type: UInt32, payload: [UInt8]) {
  let header = try channel.recvBytes(20)
  let number = { (range: Range<Int>) in header[range].reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
  guard number(0..<8) == 0x3_e889_0455_65a9, number(8..<12) == option else {
    throw ToolFailure("not an option reply to \(option): \(header)")
  }
  let length = Int(number(16..<20))
  guard length <= 1 << 20 else { throw ToolFailure("option reply of \(length) bytes") }
  return (UInt32(truncatingIfNeeded: number(12..<16)), try channel.recvBytes(length))
}

/// A PSK file with one identity and a fresh random 32-byte key; returns (file, key in hex).
func writePSKFile(in folder: String, identity: String) throws -> (file: String, hexKey: String) {
  let hexKey = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
  let file = "\(folder)/keys.psk"
  try "\(identity):\(hexKey)\n".write(toFile: file, atomically: true, encoding: .utf8)
  return (file, hexKey)
}

/// A socket listening on a free loopback port that never accepts: connections complete (the
/// kernel's backlog) and then hear nothing.
func silentListener() throws -> (fd: Int32, port: UInt16) {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { throw ToolFailure("socket failed") }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  let bound = withUnsafeMutablePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      bind(fd, $0, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, $0, &length) == 0
    }
  }
  guard bound else {
    close(fd)
    throw ToolFailure("cannot listen on loopback")
  }
  return (fd, UInt16(bigEndian: address.sin_port))
}

// MARK: Tests

@Suite struct TLSTests {
  /// By address, by name (and SNI), and with no name to check (a Unix socket): the chain only.
  @Test(arguments: ["127.0.0.1", "localhost", nil] as [String?])
  func handshakeAndExchangeWithTheRightCA(host: String?) throws {
    try withTestPKI { pki in
      let server = try reversingServer(["-cert", pki.serverCert, "-key", pki.serverKey])
      try exchangeReversed(server, tlsOptions(caFile: pki.caCert), host: host)
    }
  }

  @Test func tls12IsEnoughAndWorks() throws {
    try withTestPKI { pki in
      let server = try reversingServer(["-cert", pki.serverCert, "-key", pki.serverKey, "-tls1_2"])
      try exchangeReversed(server, tlsOptions(caFile: pki.caCert))
    }
  }

  @Test func anOlderProtocolIsRefused() throws {
    try withTestPKI { pki in
      let server = try reversingServer(["-cert", pki.serverCert, "-key", pki.serverKey, "-tls1_1"])
      expectTLSFailure("cannot complete the TLS handshake") {
        try exchangeReversed(server, tlsOptions(caFile: pki.caCert))
      }
      // Without verification, the untrusted certificate is not what the message blames.
      let error = expectVMDKError(.tlsFailure) {
        try exchangeReversed(server, tlsOptions(caFile: pki.otherCACert, verify: false))
      }
      #expect(error.map { !$0.message.contains("certificate") } == true, "\(String(describing: error))")
    }
  }

  @Test func theWrongCAIsRefusedNamingTheProblem() throws {
    try withTestPKI { pki in
      let server = try reversingServer(["-cert", pki.serverCert, "-key", pki.serverKey])
      expectTLSFailure("certificate verify failed: unable to get local issuer certificate") {
        try exchangeReversed(server, tlsOptions(caFile: pki.otherCACert))
      }
      // The system's store does not know the test CA either.
      expectTLSFailure("certificate verify failed") { try exchangeReversed(server, tlsOptions()) }
    }
  }

  @Test func aSelfSignedServerCertificateIsRefused() throws {
    try withTestPKI { pki in
      let server = try reversingServer(["-cert", pki.otherCACert, "-key", "\(pki.folder)/other/ca-key.pem"])
      expectTLSFailure("certificate verify failed: self-signed certificate") {
        try exchangeReversed(server, tlsOptions(caFile: pki.caCert), host: nil)
      }
    }
  }

  @Test func aWrongHostNameOrAddressIsRefused() throws {
    try withTestPKI { pki in
      let server = try reversingServer(["-cert", pki.serverCert, "-key", pki.serverKey])
      expectTLSFailure("certificate verify failed: hostname mismatch") {
        try exchangeReversed(server, tlsOptions(caFile: pki.caCert), host: "disks.example.com")
      }
      expectTLSFailure("certificate verify failed: IP address mismatch") {
        try exchangeReversed(server, tlsOptions(caFile: pki.caCert), host: "127.0.0.2")
      }
      // serverName overrides the host of the URI.
      var options = tlsOptions(caFile: pki.caCert)
      options.serverName = "localhost"
      try exchangeReversed(server, options, host: "disks.example.com")
    }
  }

  @Test func verificationOffConnectsToAnyCertificate() throws {
    try withTestPKI { pki in
      let server = try reversingServer(["-cert", pki.serverCert, "-key", pki.serverKey])
      try exchangeReversed(server, tlsOptions(caFile: pki.otherCACert, verify: false), host: "disks.example.com")
    }
  }

  @Test func aClientCertificateTheServerRequires() throws {
    try withTestPKI { pki in
      let server = try reversingServer([
        "-cert", pki.serverCert, "-key", pki.serverKey, "-Verify", "1", "-CAfile", pki.caCert,
      ])
      var options = tlsOptions(caFile: pki.caCert)
      options.certificateFile = pki.clientCert
      options.privateKeyFile = pki.clientKey
      try exchangeReversed(server, options)
      // Without one, the server ends the session (in TLS 1.3 after the client's handshake).
      expectTLSFailure("certificate required") { try exchangeReversed(server, tlsOptions(caFile: pki.caCert)) }
    }
  }

  @Test(arguments: [[], ["-tls1_2"]])
  func preSharedKeysWithOpenSSL(protocolArguments: [String]) throws {
    try withTemporaryFolder { folder in
      let (file, hexKey) = try writePSKFile(in: folder, identity: "vmdk")
      let server = try reversingServer(["-nocert", "-psk", hexKey, "-psk_identity", "vmdk"] + protocolArguments)
      var options = TLSOptions()
      options.pskFile = file
      try exchangeReversed(server, options)
      // A key the server does not know.
      try FileManager.default.createDirectory(atPath: "\(folder)/other", withIntermediateDirectories: true)
      options.pskFile = try writePSKFile(in: "\(folder)/other", identity: "vmdk").file
      expectTLSFailure("cannot complete the TLS handshake") { try exchangeReversed(server, options) }
    }
  }

  /// GnuTLS (what nbdkit and qemu-nbd use) as the PSK server, in TLS 1.3 and in TLS 1.2 only.
  @Test(arguments: [
    ("NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", "TLSv1.3"), ("NORMAL:-VERS-TLS1.3:+ECDHE-PSK:+DHE-PSK:+PSK", "TLSv1.2"),
  ])
  func preSharedKeysWithGnuTLS(priority: String, version: String) throws {
    try withTemporaryFolder { folder in
      let (file, _) = try writePSKFile(in: folder, identity: "vmdk")
      let server = try LoopbackServer("gnutls-serv") { port in
        ["--echo", "--port", String(port), "--pskpasswd", file, "--priority", priority]
      }
      var options = TLSOptions()
      options.pskFile = file
      let channel = try TLSChannel(socket: try server.connect(), options: options, host: "127.0.0.1", name: server.uri)
      defer { channel.close() }
      #expect(channel.negotiated?.version == version)
      if version == "TLSv1.2" { #expect(channel.negotiated?.cipher.contains("PSK") == true) }
      try channel.sendAll(Array("grain\n".utf8))
      #expect(String(decoding: try channel.recvBytes(6), as: UTF8.self) == "grain\n")
    }
  }

  /// A GnuTLS echo server with the test certificates: a mebibyte each way in 64 KiB pieces of
  /// text, each spanning several TLS records.
  @Test func aMebibyteEachWayThroughGnuTLS() throws {
    try withTestPKI { pki in
      let server = try LoopbackServer("gnutls-serv") { port in
        ["--echo", "--port", String(port), "--x509certfile", pki.serverCert, "--x509keyfile", pki.serverKey, "-a"]
      }
      let channel = try TLSChannel(
        socket: try server.connect(), options: tlsOptions(caFile: pki.caCert), host: "localhost", name: server.uri)
      defer { channel.close() }
      let digestSent = DigestContext(.sha256)
      let digestReceived = DigestContext(.sha256)
      for piece in 0..<16 {
        // Text lines: the echo server works on text.
        var bytes = (0..<(64 << 10)).map { UInt8(ascii: "a") + UInt8(($0 &* 31 &+ piece) % 26) }
        for end in stride(from: 99, to: bytes.count, by: 100) { bytes[end] = UInt8(ascii: "\n") }
        bytes[bytes.count - 1] = UInt8(ascii: "\n")
        bytes.withUnsafeBytes { digestSent.update($0) }
        try channel.sendAll(bytes)
        try channel.recvBytes(bytes.count).withUnsafeBytes { digestReceived.update($0) }
      }
      #expect(digestSent.finalHex() == digestReceived.finalHex())
    }
  }

  @Test func certificatesWithNbdkitAfterStartTLS() throws {
    try withTestPKI { pki in
      let server = try LoopbackServer("nbdkit") { port in
        [
          "-f", "-i", "127.0.0.1", "-p", String(port), "-e", "disk", "--tls=require",
          "--tls-certificates=\(pki.folder)", "memory", "1M",
        ]
      }
      #expect(try nbdStartTLSAndList(server, tlsOptions(caFile: pki.caCert)) == [""])
      expectTLSFailure("certificate verify failed") {
        _ = try nbdStartTLSAndList(server, tlsOptions(caFile: pki.otherCACert))
      }
    }
  }

  @Test func preSharedKeysWithNbdkit() throws {
    try withTemporaryFolder { folder in
      let (file, _) = try writePSKFile(in: folder, identity: "vmdk")
      let server = try LoopbackServer("nbdkit") { port in
        [
          "-f", "-i", "127.0.0.1", "-p", String(port), "-e", "disk", "--tls=require", "--tls-psk=\(file)", "memory",
          "1M",
        ]
      }
      var options = TLSOptions()
      options.pskFile = file
      options.pskIdentity = "vmdk"
      #expect(try nbdStartTLSAndList(server, options) == [""])
      try FileManager.default.createDirectory(atPath: "\(folder)/other", withIntermediateDirectories: true)
      options.pskFile = try writePSKFile(in: "\(folder)/other", identity: "vmdk").file
      expectTLSFailure("cannot complete the TLS handshake") { _ = try nbdStartTLSAndList(server, options) }
    }
  }

  @Test func unreadableFilesAreNamed() throws {
    try withTestPKI { pki in
      let server = try reversingServer(["-cert", pki.serverCert, "-key", pki.serverKey])
      let missing = "\(pki.folder)/missing.pem"
      expectTLSFailure("cannot read the CA file \(missing)") {
        try exchangeReversed(server, tlsOptions(caFile: missing))
      }
      var options = tlsOptions(caFile: pki.caCert)
      options.certificateFile = pki.clientCert
      options.privateKeyFile = missing
      expectTLSFailure("cannot read the private key file \(missing)") { try exchangeReversed(server, options) }
      options.privateKeyFile = pki.serverKey
      expectTLSFailure("cannot use the private key \(pki.serverKey): key values mismatch") {
        try exchangeReversed(server, options)
      }
      expectTLSFailure("holds no usable certificate") {
        try exchangeReversed(server, tlsOptions(caFile: "\(pki.folder)/server-cert.pem.ext"))
      }
      var psk = TLSOptions()
      psk.pskFile = missing
      expectTLSFailure("cannot read the PSK file \(missing)") { try exchangeReversed(server, psk) }
    }
  }

  @Test func pskFilesAreCheckedLineByLine() throws {
    let good = try PreSharedKey.parse("alice:00ff\n\nbob:A1b2c3\n", file: "k.psk", uri: "u")
    #expect(good.map { String(decoding: $0.identity, as: UTF8.self) } == ["alice", "bob"])
    #expect(good.map(\.key) == [[0x00, 0xff], [0xa1, 0xb2, 0xc3]])
    for (text, line) in [("alice\n", 1), ("a:00\n:00\n", 2), ("a:0g\n", 1), ("a:abc\n", 1), ("a:\n", 1)] {
      expectTLSFailure("the PSK file k.psk line \(line)") {
        _ = try PreSharedKey.parse(text, file: "k.psk", uri: "u")
      }
    }
    try withTemporaryFolder { folder in
      let (file, _) = try writePSKFile(in: folder, identity: "vmdk")
      expectTLSFailure("has no identity 'other'") { _ = try PreSharedKey.load(file: file, identity: "other", uri: "u") }
    }
  }

  @Test func aServerKilledMidSessionIsARetryableConnectionLoss() throws {
    try withTestPKI { pki in
      let server = try reversingServer(["-cert", pki.serverCert, "-key", pki.serverKey])
      let channel = try TLSChannel(
        socket: try server.connect(), options: tlsOptions(caFile: pki.caCert), host: "127.0.0.1", name: server.uri)
      defer { channel.close() }
      server.stop()
      let error = expectVMDKError(.connectionLost) { _ = try channel.recvBytes(4) }
      #expect(error?.isRetryable == true)
      var byte: UInt8 = 0
      #expect(try withUnsafeMutableBytes(of: &byte) { try channel.recvSome(into: $0) } == 0)
    }
  }

  @Test func aServerThatNeverAnswersTheHandshakeTimesOut() throws {
    let (listener, port) = try silentListener()
    defer { close(listener) }
    let uri = "tls://127.0.0.1:\(port)"
    let socket = try SocketChannel.connect(.tcp(host: "127.0.0.1", port: port), name: uri, timeout: 0.5)
    let error = expectVMDKError(.timeout) {
      _ = try TLSChannel(socket: socket, options: TLSOptions(), host: "127.0.0.1", name: uri)
    }
    #expect(error?.isRetryable == true)
  }

  @Test func afterCloseEveryCallIsAConnectionLoss() throws {
    try withTestPKI { pki in
      let server = try reversingServer(["-cert", pki.serverCert, "-key", pki.serverKey])
      let channel = try TLSChannel(
        socket: try server.connect(), options: tlsOptions(caFile: pki.caCert), host: "127.0.0.1", name: server.uri)
      channel.close()
      channel.close()
      expectVMDKError(.connectionLost) { try channel.sendAll([1]) }
      expectVMDKError(.connectionLost) { _ = try channel.recvBytes(1) }
    }
  }
}
