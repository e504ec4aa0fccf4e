// ServerTLS: NBD_OPT_STARTTLS on the server's side, through OpenSSL (libssl, the CSSL system
// library). A context holds the certificate and key, and optionally the CA that client
// certificates must chain to; each connection that asks gets a session on its socket.

import CSSL
import Foundation
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

/// TLS for the server: x509 (certificate, key, optional client verification against a CA),
/// or TLS-PSK (a file of `identity:hexkey` lines, as qemu's and nbdkit's), or both.
public struct NBDTLSConfiguration: Sendable {
  /// Whether TLS is refused, offered, or required (qemu-nbd's and nbdkit's --tls).
  public enum Mode: String, Sendable, CaseIterable {
    case off, on, require
  }
  public var mode: Mode
  /// PEM certificate (with its chain) and private key.
  public var certificateFile: String?
  public var privateKeyFile: String?
  /// PEM CA certificates that client certificates must chain to; nil: no client certificate
  /// is asked for.
  public var clientCAFile: String?
  /// TLS-PSK keys: `identity:hexkey` lines.
  public var pskFile: String?

  public init(
    mode: Mode, certificateFile: String? = nil, privateKeyFile: String? = nil, clientCAFile: String? = nil,
    pskFile: String? = nil
  ) {
    self.mode = mode
    self.certificateFile = certificateFile
    self.privateKeyFile = privateKeyFile
    self.clientCAFile = clientCAFile
    self.pskFile = pskFile
  }
}

/// An OpenSSL server context made from an `NBDTLSConfiguration`.
final class ServerTLSContext: @unchecked Sendable {
  let context: OpaquePointer
  /// The PSK keys the callback looks identities up in (the context points at it).
  private let keys: PSKTable?

  init(_ c: NBDTLSConfiguration) throws {
    ERR_clear_error()
    guard let context = SSL_CTX_new(TLS_server_method()) else { throw Self.failure("cannot make a TLS context", nil) }
    self.context = context
    guard cssl_ctx_require_tls12(context) == 1 else { throw Self.failure("cannot require TLS 1.2", nil) }
    cssl_ctx_ignore_unexpected_eof(context)
    if let pskFile = c.pskFile {
      guard let text = try? String(contentsOfFile: pskFile, encoding: .utf8), text.utf8.count <= 1 << 20 else {
        throw VMDKError(.tlsFailure, "cannot read the PSK file", file: pskFile)
      }
      let table = PSKTable(try nbdParsePSKFile(text, file: pskFile))
      keys = table
      _ = SSL_CTX_set_ex_data(context, 0, Unmanaged.passUnretained(table).toOpaque())
      SSL_CTX_set_psk_server_callback(context, pskServerCallback)
    } else {
      keys = nil
    }
    guard c.certificateFile != nil || c.pskFile != nil else {
      throw VMDKError(.tlsFailure, "TLS needs a certificate and key, or a PSK file")
    }
    if let certificate = c.certificateFile {
      let keyFile = c.privateKeyFile ?? certificate
      guard SSL_CTX_use_certificate_chain_file(context, certificate) == 1 else {
        throw Self.failure("cannot use the certificate", certificate)
      }
      guard SSL_CTX_use_PrivateKey_file(context, keyFile, SSL_FILETYPE_PEM) == 1,
        SSL_CTX_check_private_key(context) == 1
      else {
        throw Self.failure("cannot use the private key (or it is not the certificate's)", keyFile)
      }
    }
    if let ca = c.clientCAFile {
      guard SSL_CTX_load_verify_locations(context, ca, nil) == 1 else {
        throw Self.failure("the CA file holds no usable certificate", ca)
      }
      SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
    } else {
      SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
    }
  }

  deinit { SSL_CTX_free(context) }

  static func failure(_ what: String, _ file: String?) -> VMDKError {
    var details: [String] = []
    while case let code = ERR_get_error(), code != 0 {
      var buffer = [CChar](repeating: 0, count: 256)
      ERR_error_string_n(code, &buffer, buffer.count)
      details.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    let tail = details.isEmpty ? "" : ": " + details.joined(separator: "; ")
    return VMDKError(.tlsFailure, what + tail, file: file)
  }
}

/// A byte stream a connection speaks over: the socket, or a TLS session on it.
protocol ServerChannel: AnyObject {
  func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws
  func sendAll(_ buffer: UnsafeRawBufferPointer, more: Bool) throws
}

extension ServerChannel {
  func recvBytes(_ count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    try bytes.withUnsafeMutableBytes { try recvAll(into: $0) }
    return bytes
  }
  func sendAll(_ bytes: [UInt8], more: Bool = false) throws {
    try bytes.withUnsafeBytes { try sendAll($0, more: more) }
  }
}

extension ClientSocket: ServerChannel {}

/// A TLS session on a client's socket. During the handshake one thread uses it, blocking.
/// In transmission (`enterConcurrentMode`) a reader and a sender use it at once: an OpenSSL
/// session is not safe from two threads, so every OpenSSL call is made under one lock, on a
/// non-blocking socket, and a thread that must wait for the socket (WANT_READ, WANT_WRITE)
/// waits in poll() without the lock. Only the connection's sender writes, so a write that
/// is retried is always retried by it, with the same bytes, as OpenSSL requires.
final class ServerTLSSession: ServerChannel, @unchecked Sendable {
  private let ssl: OpaquePointer
  let socket: ClientSocket
  private let lock = NSLock()
  private var concurrent = false

  /// Runs the handshake on `socket`; throws when the client fails it (a wrong CA, no
  /// certificate when one is required).
  init(context: ServerTLSContext, socket: ClientSocket) throws {
    self.socket = socket
    ERR_clear_error()
    guard let ssl = SSL_new(context.context) else { throw ServerTLSContext.failure("cannot make a TLS session", nil) }
    self.ssl = ssl
    // Every property is set: from here a throw runs deinit, which frees the session.
    guard SSL_set_fd(ssl, socket.fd) == 1 else { throw ServerTLSContext.failure("cannot attach the TLS session", nil) }
    guard SSL_accept(ssl) == 1 else { throw ServerTLSContext.failure("TLS handshake failed", nil) }
    established = true
  }

  private var established = false

  deinit {
    if established { SSL_shutdown(ssl) }
    SSL_free(ssl)
  }

  /// From now on a reader and a sender may use the session at once.
  func enterConcurrentMode() {
    let flags = fcntl(socket.fd, F_GETFL)
    _ = fcntl(socket.fd, F_SETFL, flags | O_NONBLOCK)
    concurrent = true
  }

  /// Waits until the socket is ready for what OpenSSL asked for; false when it never will be.
  private func wait(for code: Int32) -> Bool {
    var p = pollfd(fd: socket.fd, events: Int16(code == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), revents: 0)
    while true {
      let n = poll(&p, 1, -1)
      if n > 0 { return p.revents & Int16(POLLNVAL) == 0 }
      if n < 0 && errno != EINTR { return false }
    }
  }

  /// One OpenSSL read or write: its result, and the error code when it is not positive.
  private func call(_ body: () -> Int32) -> (Int32, Int32) {
    guard concurrent else {
      let n = body()
      return (n, n > 0 ? 0 : SSL_get_error(ssl, n))
    }
    lock.lock()
    defer { lock.unlock() }
    ERR_clear_error()
    let n = body()
    return (n, n > 0 ? 0 : SSL_get_error(ssl, n))
  }

  func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws {
    guard let base = buffer.baseAddress else { return }
    var done = 0
    while done < buffer.count {
      let (n, code) = call { SSL_read(ssl, base + done, Int32(clamping: buffer.count - done)) }
      if n > 0 {
        done += Int(n)
        continue
      }
      if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE {
        if concurrent, !wait(for: code) { throw ConnectionEnd.closed }
        continue
      }
      throw ConnectionEnd.closed
    }
  }

  func sendAll(_ buffer: UnsafeRawBufferPointer, more: Bool) throws {
    guard let base = buffer.baseAddress else { return }
    var done = 0
    while done < buffer.count {
      let (n, code) = call { SSL_write(ssl, base + done, Int32(clamping: buffer.count - done)) }
      if n > 0 {
        done += Int(n)
        continue
      }
      if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE {
        if concurrent, !wait(for: code) { throw ConnectionEnd.closed }
        continue
      }
      throw ConnectionEnd.closed
    }
  }
}

// MARK: TLS-PSK

/// Identities and their keys.
final class PSKTable: @unchecked Sendable {
  let entries: [(identity: [UInt8], key: [UInt8])]
  init(_ entries: [(identity: [UInt8], key: [UInt8])]) { self.entries = entries }
}

/// Parses a PSK file: `identity:hexkey` lines (blank lines skipped), identities of 1 to 128
/// bytes, keys of 1 to 512 bytes.
public func nbdParsePSKFile(_ text: String, file: String) throws -> [(identity: [UInt8], key: [UInt8])] {
  var out: [(identity: [UInt8], key: [UInt8])] = []
  for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
    let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
    if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
    guard let colon = line.firstIndex(of: ":") else {
      throw VMDKError(.tlsFailure, "line \(i + 1): expected identity:hexkey", file: file)
    }
    let identity = Array(line[..<colon].utf8)
    let hex = Array(line[line.index(after: colon)...].utf8)
    guard (1...128).contains(identity.count), !hex.isEmpty, hex.count % 2 == 0, hex.count <= 1024 else {
      throw VMDKError(.tlsFailure, "line \(i + 1): identity of 1-128 bytes and a key of 1-512 bytes in hex", file: file)
    }
    var key: [UInt8] = []
    var j = 0
    while j < hex.count {
      guard let hi = hexDigit(hex[j]), let lo = hexDigit(hex[j + 1]) else {
        throw VMDKError(.tlsFailure, "line \(i + 1): the key is not hexadecimal", file: file)
      }
      key.append(hi << 4 | lo)
      j += 2
    }
    out.append((identity, key))
  }
  guard !out.isEmpty else { throw VMDKError(.tlsFailure, "the PSK file holds no key", file: file) }
  return out
}

private func hexDigit(_ c: UInt8) -> UInt8? {
  switch c {
  case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
  case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
  case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
  default: return nil
  }
}

/// OpenSSL asks for the key of the identity the client named; 0 refuses.
private let pskServerCallback:
  @convention(c) (OpaquePointer?, UnsafePointer<CChar>?, UnsafeMutablePointer<UInt8>?, UInt32) -> UInt32 = {
    ssl, identity, psk, maxLength in
    guard let ssl, let identity, let psk, let context = SSL_get_SSL_CTX(ssl),
      let raw = SSL_CTX_get_ex_data(context, 0)
    else { return 0 }
    let table = Unmanaged<PSKTable>.fromOpaque(raw).takeUnretainedValue()
    let name = Array(String(cString: identity).utf8)
    guard let entry = table.entries.first(where: { $0.identity == name }), entry.key.count <= Int(maxLength) else {
      return 0
    }
    for (i, b) in entry.key.enumerated() { psk[i] = b }
    return UInt32(entry.key.count)
  }
