// TLS over a connected socket, through OpenSSL (libssl): the client side of nbds:// (after
// NBD_OPT_STARTTLS) and https://. Certificate verification is on by default; client
// certificates and TLS-PSK are options (TLSOptions).
//
// OpenSSL talks to the socket through a BIO of our own (`SocketBIO`) rather than SSL_set_fd's
// socket BIO: it sends with MSG_NOSIGNAL, so a peer that went away gives EPIPE instead of a
// SIGPIPE that would kill the process, without touching the process's signal handlers; and it
// keeps the errno of a failed send or receive, so that an I/O failure under TLS becomes the
// same typed error (connectionLost, timeout, retryable) as on a plain socket.

import CSSL

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// A TLS client session over a socket it owns. Not thread-safe: one caller at a time.
final class TLSChannel: ByteChannel {
  let name: String
  private let socket: SocketChannel
  private let bio: SocketBIO
  private var context: OpaquePointer?
  private var ssl: OpaquePointer?
  /// The PSK the callback hands to OpenSSL; kept alive as long as the session.
  private let psk: PreSharedKey?
  /// Whether the server's certificate is verified (a failed handshake then reports why).
  private let verifying: Bool
  /// The server ended the stream: later receives return 0 (OpenSSL would report an error).
  private var atEnd = false
  /// A fatal error happened: no close_notify (OpenSSL forbids SSL_shutdown after one).
  private var broken = false
  /// The server asked for a client certificate during the handshake.
  fileprivate var certificateRequested = false
  /// Whether any application data came from the server.
  private var receivedData = false
  /// The client certificate file offered, if any (named when the server hangs up on it).
  private let certificateFile: String?

  /// Runs the client handshake over `socket`, which the channel then owns. `host` is the name
  /// the server's certificate must carry (nil for a Unix socket: `options.serverName`, else no
  /// host-name check, the chain is still verified). Throws `tlsFailure` naming what failed
  /// (verification, handshake, a missing file), never retryable; a socket failure during the
  /// handshake (timeout, reset) is the retryable network error a plain socket gives. On any
  /// failure the socket is closed.
  init(socket: SocketChannel, options: TLSOptions, host: String?, name: String) throws {
    self.socket = socket
    self.name = name
    self.bio = SocketBIO(fd: socket.fd)
    self.verifying = options.verifyPeer
    self.certificateFile = options.certificateFile
    do {
      self.psk = try options.pskFile.map { try PreSharedKey.load(file: $0, identity: options.pskIdentity, uri: name) }
    } catch {
      socket.close()
      throw error
    }
    do {
      try setUp(options: options, host: host)
      try handshake()
    } catch {
      release()
      socket.close()
      throw error
    }
  }

  deinit { close() }

  // MARK: Setting up

  /// Makes the context (protocol versions, trust, client certificate, PSK) and the session
  /// (host-name check, SNI, the socket BIO).
  private func setUp(options: TLSOptions, host: String?) throws {
    ERR_clear_error()
    guard let context = SSL_CTX_new(TLS_client_method()) else { throw failure("cannot make a TLS context") }
    self.context = context
    guard cssl_ctx_require_tls12(context) == 1 else { throw failure("cannot require TLS 1.2 or later") }
    cssl_ctx_ignore_unexpected_eof(context)
    if options.verifyPeer {
      SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
      try loadTrust(context, caFile: options.caFile)
    } else {
      SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
    }
    try loadClientCertificate(context, certificate: options.certificateFile, key: options.privateKeyFile)
    SSL_CTX_set_cert_cb(context, certificateRequestCallback, Unmanaged.passUnretained(self).toOpaque())
    guard let ssl = SSL_new(context) else { throw failure("cannot make a TLS session") }
    self.ssl = ssl
    if let psk {
      _ = cssl_set_app_data(ssl, Unmanaged.passUnretained(psk).toOpaque())
      SSL_set_psk_client_callback(ssl, pskClientCallback)
    }
    let peerName = (options.serverName ?? host).map(Self.withoutBrackets)
    if let peerName, !peerName.isEmpty { try setPeerName(ssl, peerName, verify: options.verifyPeer) }
    guard let b = bio.make() else { throw failure("cannot make the socket BIO") }
    SSL_set_bio(ssl, b, b)
  }

  /// The CA certificates to trust: `caFile`, else the system's default store.
  private func loadTrust(_ context: OpaquePointer, caFile: String?) throws {
    guard let caFile else {
      guard SSL_CTX_set_default_verify_paths(context) == 1 else {
        throw failure("cannot load the system's CA certificates")
      }
      return
    }
    try Self.checkReadable(caFile, what: "CA file", uri: name)
    guard SSL_CTX_load_verify_locations(context, caFile, nil) == 1 else {
      throw failure("the CA file \(caFile) holds no usable certificate")
    }
  }

  /// The client certificate (with its chain) and its key; the key may be in the certificate's
  /// file when `key` is nil.
  private func loadClientCertificate(_ context: OpaquePointer, certificate: String?, key: String?) throws {
    guard let certificate else {
      if let key { throw failure("a private key (\(key)) was given without a client certificate") }
      return
    }
    let keyFile = key ?? certificate
    try Self.checkReadable(certificate, what: "client certificate file", uri: name)
    try Self.checkReadable(keyFile, what: "private key file", uri: name)
    guard SSL_CTX_use_certificate_chain_file(context, certificate) == 1 else {
      throw failure("cannot use the client certificate \(certificate)")
    }
    // This also checks that the key is the certificate's ("key values mismatch").
    guard SSL_CTX_use_PrivateKey_file(context, keyFile, SSL_FILETYPE_PEM) == 1 else {
      throw failure("cannot use the private key \(keyFile)")
    }
  }

  /// The name the certificate must carry (an IP address or a DNS name), and SNI for a DNS name.
  private func setPeerName(_ ssl: OpaquePointer, _ peerName: String, verify: Bool) throws {
    let isAddress = Self.isIPAddress(peerName)
    if !isAddress {
      guard cssl_set_sni(ssl, peerName) == 1 else { throw failure("cannot set the server name '\(peerName)'") }
    }
    guard verify else { return }
    if isAddress {
      guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), peerName) == 1 else {
        throw failure("cannot check the certificate against the address \(peerName)")
      }
    } else {
      SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
      guard SSL_set1_host(ssl, peerName) == 1 else {
        throw failure("cannot check the certificate against the name '\(peerName)'")
      }
    }
  }

  /// Runs SSL_connect to the end: the certificate checks happen here.
  private func handshake() throws {
    guard let ssl else { throw Net.closedError(name) }
    while true {
      ERR_clear_error()
      bio.lastError = 0
      let rc = SSL_connect(ssl)
      if rc == 1 { return }
      let code = SSL_get_error(ssl, rc)
      if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { continue }
      if isEndOfStream(code) {
        // Servers (GnuTLS ones: nbdkit, qemu-nbd) hang up on a key or certificate they refuse.
        throw VMDKError(
          .tlsFailure,
          "cannot complete the TLS handshake: the server closed the connection (did it refuse the credentials?)",
          file: name)
      }
      throw sessionError(code, doing: "complete the TLS handshake")
    }
  }

  /// The negotiated protocol ("TLSv1.3") and cipher suite, for `info` and the log.
  var negotiated: (version: String, cipher: String)? {
    guard let ssl, let version = SSL_get_version(ssl), let cipher = SSL_get_current_cipher(ssl),
      let cipherName = SSL_CIPHER_get_name(cipher)
    else { return nil }
    return (String(cString: version), String(cString: cipherName))
  }

  // MARK: ByteChannel

  func sendAll(_ buffer: UnsafeRawBufferPointer) throws {
    var done = 0
    while done < buffer.count {
      guard let ssl else { throw Net.closedError(name) }
      ERR_clear_error()
      bio.lastError = 0
      let count = Int32(clamping: buffer.count - done)
      let n = SSL_write(ssl, buffer.baseAddress! + done, count)
      if n > 0 {
        done += Int(n)
        continue
      }
      let code = SSL_get_error(ssl, n)
      if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { continue }
      throw sessionError(code, doing: "send")
    }
  }

  func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws {
    var done = 0
    while done < buffer.count {
      let n = try recvSome(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
      if n == 0 {
        throw VMDKError(
          .connectionLost, "the server closed the connection in the middle of a reply", file: name,
          isRetryable: true)
      }
      done += n
    }
  }

  func recvSome(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    while true {
      guard let ssl else { throw Net.closedError(name) }
      guard !buffer.isEmpty, !atEnd else { return 0 }
      ERR_clear_error()
      bio.lastError = 0
      let n = SSL_read(ssl, buffer.baseAddress!, Int32(clamping: buffer.count))
      if n > 0 {
        receivedData = true
        return Int(n)
      }
      let code = SSL_get_error(ssl, n)
      if isEndOfStream(code) {
        if let refusal = refusalAfterHandshake(code) { throw refusal }
        atEnd = true
        return 0
      }
      if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { continue }
      throw sessionError(code, doing: "receive")
    }
  }

  /// Sends close_notify (best effort, without waiting for the server's), then closes the socket.
  func close() {
    if let ssl, !broken, SSL_is_init_finished(ssl) == 1 {
      ERR_clear_error()
      _ = SSL_shutdown(ssl)
      ERR_clear_error()
    }
    release()
    socket.close()
  }

  /// Frees the session and the context (the session frees the BIO).
  private func release() {
    if let ssl { SSL_free(ssl) }
    if let context { SSL_CTX_free(context) }
    ssl = nil
    context = nil
  }

  // MARK: Errors

  /// The error for a failed OpenSSL call on the session: an I/O failure is the socket's
  /// error (retryable); a failed certificate check or a TLS protocol failure is tlsFailure,
  /// not retryable.
  private func sessionError(_ code: Int32, doing: String) -> VMDKError {
    if let refusal = refusalAfterHandshake(code) { return refusal }
    broken = true
    if code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && bio.lastError != 0 {
      return Net.transferError(bio.lastError, name: name, doing: doing)
    }
    if isEndOfStream(code) {
      return VMDKError(
        .connectionLost, "cannot \(doing): the server closed the connection", file: name, isRetryable: true)
    }
    if verifying, let ssl {
      let verify = SSL_get_verify_result(ssl)
      if verify != Int(X509_V_OK) {
        let reason = String(cString: X509_verify_cert_error_string(verify))
        ERR_clear_error()
        return VMDKError(.tlsFailure, "cannot \(doing): certificate verify failed: \(reason)", file: name)
      }
    }
    return failure("cannot \(doing)")
  }

  /// In TLS 1.3 the server checks the client certificate after the client's handshake is
  /// over; GnuTLS servers (qemu-nbd, nbdkit) that refuse it or miss it just hang up. An end of
  /// stream before any data, after the server asked for a certificate, is that refusal.
  /// The send that follows the hang-up fails with EPIPE or ECONNRESET instead.
  private func refusalAfterHandshake(_ code: Int32) -> VMDKError? {
    let hungUp = isEndOfStream(code) || (code == SSL_ERROR_SYSCALL && [EPIPE, ECONNRESET].contains(bio.lastError))
    guard hungUp, certificateRequested, !receivedData, SSL_is_init_finished(ssl) == 1 else { return nil }
    broken = true
    let why =
      certificateFile.map { "it did not accept the client certificate \($0)" }
      ?? "it asked for a client certificate and none is configured"
    return VMDKError(.tlsFailure, "the server closed the connection after the TLS handshake: \(why)", file: name)
  }

  /// Whether a failed call saw the end of the stream: close_notify, or the socket's end
  /// without one (no errno, nothing queued).
  private func isEndOfStream(_ code: Int32) -> Bool {
    code == SSL_ERROR_ZERO_RETURN || (code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && bio.lastError == 0)
  }

  /// A tlsFailure with OpenSSL's queued reasons ("alert certificate required"), which it clears.
  private func failure(_ what: String) -> VMDKError {
    let reasons = Self.drainErrorQueue()
    let message = reasons.isEmpty ? what : "\(what): \(reasons.joined(separator: "; "))"
    return VMDKError(.tlsFailure, message, file: name)
  }

  /// The reasons of OpenSSL's error queue for this thread, oldest first; empties the queue.
  private static func drainErrorQueue() -> [String] {
    var reasons: [String] = []
    while case let code = ERR_get_error(), code != 0 {
      if let reason = ERR_reason_error_string(code) {
        reasons.append(String(cString: reason))
      } else {
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &text, text.count)
        reasons.append(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
      }
    }
    return reasons
  }

  // MARK: Helpers

  /// Throws tlsFailure naming `path` when it cannot be read (OpenSSL's own message would not
  /// say which file).
  static func checkReadable(_ path: String, what: String, uri: String) throws {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
      let text = String(cString: strerror(errno))
      throw VMDKError(.tlsFailure, "cannot read the \(what) \(path): \(text)", file: uri)
    }
    closeSocket(fd)
  }

  /// An IPv4 or IPv6 address in text form (a certificate names those in iPAddress entries).
  static func isIPAddress(_ text: String) -> Bool {
    var storage = in6_addr()
    return inet_pton(AF_INET, text, &storage) == 1 || inet_pton(AF_INET6, text, &storage) == 1
  }

  /// `[::1]` as URIs write an IPv6 address, without the brackets.
  static func withoutBrackets(_ host: String) -> String {
    guard host.hasPrefix("["), host.hasSuffix("]"), host.count >= 2 else { return host }
    return String(host.dropFirst().dropLast())
  }
}

// MARK: The socket BIO

/// The BIO between OpenSSL and the socket: send with MSG_NOSIGNAL, recv, EINTR retried, and
/// the errno of the last failure kept for the error mapping. The socket is blocking with
/// SO_RCVTIMEO/SO_SNDTIMEO, so EAGAIN is a timeout, not a "try again": the BIO does not ask
/// OpenSSL to retry, and the failure surfaces as SSL_ERROR_SYSCALL.
private final class SocketBIO {
  let fd: Int32
  /// errno of the last failed send or receive (0: none, or end of stream).
  var lastError: Int32 = 0

  init(fd: Int32) { self.fd = fd }

  /// A new BIO reading and writing through this object (which must outlive it).
  func make() -> OpaquePointer? {
    guard let method = socketBIOMethod, let bio = BIO_new(method) else { return nil }
    BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
    BIO_set_init(bio, 1)
    return bio
  }

  static func from(_ bio: OpaquePointer?) -> SocketBIO? {
    guard let bio, let data = BIO_get_data(bio) else { return nil }
    return Unmanaged<SocketBIO>.fromOpaque(data).takeUnretainedValue()
  }

  func write(_ data: UnsafeRawPointer, _ count: Int) -> Int32 {
    while true {
      let n = send(fd, data, count, Int32(MSG_NOSIGNAL))
      if n >= 0 { return Int32(n) }
      if errno == EINTR { continue }
      lastError = errno
      return -1
    }
  }

  func read(_ data: UnsafeMutableRawPointer, _ count: Int) -> Int32 {
    while true {
      let n = recv(fd, data, count, 0)
      if n >= 0 { return Int32(n) }
      if errno == EINTR { continue }
      lastError = errno
      return -1
    }
  }
}

/// The BIO method of SocketBIO, made once per process.
nonisolated(unsafe) private let socketBIOMethod: OpaquePointer? = {
  guard let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "vmdk-toolkit socket") else {
    return nil
  }
  _ = BIO_meth_set_write(method) { bio, data, count in
    guard let state = SocketBIO.from(bio), let data, count > 0 else { return 0 }
    return state.write(data, Int(count))
  }
  _ = BIO_meth_set_read(method) { bio, data, count in
    guard let state = SocketBIO.from(bio), let data, count > 0 else { return 0 }
    return state.read(data, Int(count))
  }
  // OpenSSL flushes after each record it writes and asks whether data is pending; the socket
  // writes through at once, so flushing succeeds and nothing is ever pending.
  _ = BIO_meth_set_ctrl(method) { _, command, _, _ in
    command == BIO_CTRL_FLUSH ? 1 : 0
  }
  return method
}()

/// OpenSSL's certificate callback, which a client runs when the server sends a
/// CertificateRequest: notes the request (the channel is the argument) and goes on with the
/// certificate already set, or none.
private let certificateRequestCallback: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = {
  _, argument in
  if let argument { Unmanaged<TLSChannel>.fromOpaque(argument).takeUnretainedValue().certificateRequested = true }
  return 1
}

// MARK: TLS-PSK

/// One identity and key of a PSK file in the format qemu, nbdkit and GnuTLS's psktool use:
/// `identity:hexkey` lines.
final class PreSharedKey {
  let identity: [UInt8]
  let key: [UInt8]

  init(identity: [UInt8], key: [UInt8]) {
    self.identity = identity
    self.key = key
  }

  /// Longest identity OpenSSL hands over (PSK_MAX_IDENTITY_LEN) and longest key (PSK_MAX_PSK_LEN).
  static let maxIdentityBytes = 128
  static let maxKeyBytes = 512

  /// Reads `file` and picks `identity`'s key, or the first line's.
  static func load(file: String, identity: String?, uri: String) throws -> PreSharedKey {
    try TLSChannel.checkReadable(file, what: "PSK file", uri: uri)
    guard let text = readSmallFile(file) else {
      throw VMDKError(.tlsFailure, "cannot read the PSK file \(file)", file: uri)
    }
    let entries = try parse(text, file: file, uri: uri)
    guard !entries.isEmpty else { throw VMDKError(.tlsFailure, "the PSK file \(file) holds no key", file: uri) }
    guard let identity else { return entries[0] }
    guard let entry = entries.first(where: { $0.identity == Array(identity.utf8) }) else {
      throw VMDKError(.tlsFailure, "the PSK file \(file) has no identity '\(identity)'", file: uri)
    }
    return entry
  }

  /// Every `identity:hexkey` line of `text`; blank lines are skipped.
  static func parse(_ text: String, file: String, uri: String) throws -> [PreSharedKey] {
    var entries: [PreSharedKey] = []
    let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
    for (index, line) in lines.enumerated() {
      if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
      let at = "the PSK file \(file) line \(index + 1)"
      guard let colon = line.firstIndex(of: ":") else {
        throw VMDKError(.tlsFailure, "\(at): expected identity:hexkey", file: uri)
      }
      let identity = Array(line[..<colon].utf8)
      guard !identity.isEmpty, identity.count <= maxIdentityBytes else {
        throw VMDKError(.tlsFailure, "\(at): the identity must have 1 to \(maxIdentityBytes) bytes", file: uri)
      }
      guard let key = hexBytes(line[line.index(after: colon)...]), !key.isEmpty, key.count <= maxKeyBytes else {
        throw VMDKError(.tlsFailure, "\(at): the key must be 1 to \(maxKeyBytes) bytes in hexadecimal", file: uri)
      }
      entries.append(PreSharedKey(identity: identity, key: key))
    }
    return entries
  }

  /// The bytes of an even-length hexadecimal string, nil when it is not one.
  static func hexBytes(_ text: Substring) -> [UInt8]? {
    let digits = Array(text.utf8)
    guard digits.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(digits.count / 2)
    var i = 0
    while i < digits.count {
      guard let high = hexValue(digits[i]), let low = hexValue(digits[i + 1]) else { return nil }
      bytes.append(high << 4 | low)
      i += 2
    }
    return bytes
  }

  private static func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
  }

  /// The text of a file of at most 64 KiB (a PSK file is a few lines), nil when unreadable.
  private static func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { closeSocket(fd) }
    var bytes = [UInt8](repeating: 0, count: 64 << 10)
    var count = 0
    while count < bytes.count {
      let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
      if n < 0 && errno == EINTR { continue }
      guard n >= 0 else { return nil }
      if n == 0 { break }
      count += n
    }
    return String(decoding: bytes.prefix(count), as: UTF8.self)
  }
}

/// OpenSSL's PSK client callback: copies the session's identity (NUL-terminated) and key.
/// Returns the key's length, 0 to refuse (no key, or buffers too small).
private let pskClientCallback:
  @convention(c) (
    OpaquePointer?, UnsafePointer<CChar>?, UnsafeMutablePointer<CChar>?, UInt32, UnsafeMutablePointer<UInt8>?, UInt32
  ) -> UInt32 = { ssl, _, identity, maxIdentity, key, maxKey in
    guard let ssl, let identity, let key, let data = cssl_get_app_data(ssl) else { return 0 }
    let psk = Unmanaged<PreSharedKey>.fromOpaque(data).takeUnretainedValue()
    guard psk.identity.count < Int(maxIdentity), psk.key.count <= Int(maxKey) else { return 0 }
    for (i, byte) in psk.identity.enumerated() { identity[i] = CChar(bitPattern: byte) }
    identity[psk.identity.count] = 0
    for (i, byte) in psk.key.enumerated() { key[i] = byte }
    return UInt32(psk.key.count)
  }
