// ServerTLS: NBD_OPT_STARTTLS on the server's side, through OpenSSL (libssl, the CSSL system
// library). A context holds the certificate and key, and optionally the CA that client
// certificates must chain to; each connection that asks gets a session on its socket.

import CSSL
import VMDKBlock

/// TLS for the server: x509 (certificate, key, optional client verification against a CA).
public struct NBDTLSConfiguration: Sendable {
  /// Whether TLS is refused, offered, or required (qemu-nbd's and nbdkit's --tls).
  public enum Mode: String, Sendable, CaseIterable {
    case off, on, require
  }
  public var mode: Mode
  /// PEM certificate (with its chain) and private key.
  public var certificateFile: String
  public var privateKeyFile: String
  /// PEM CA certificates that client certificates must chain to; nil: no client certificate
  /// is asked for.
  public var clientCAFile: String?

  public init(mode: Mode, certificateFile: String, privateKeyFile: String, clientCAFile: String? = nil) {
    self.mode = mode
    self.certificateFile = certificateFile
    self.privateKeyFile = privateKeyFile
    self.clientCAFile = clientCAFile
  }
}

/// An OpenSSL server context made from an `NBDTLSConfiguration`.
final class ServerTLSContext: @unchecked Sendable {
  let context: OpaquePointer

  init(_ c: NBDTLSConfiguration) throws {
    ERR_clear_error()
    guard let context = SSL_CTX_new(TLS_server_method()) else { throw Self.failure("cannot make a TLS context", nil) }
    self.context = context
    guard cssl_ctx_require_tls12(context) == 1 else { throw Self.failure("cannot require TLS 1.2", nil) }
    cssl_ctx_ignore_unexpected_eof(context)
    guard SSL_CTX_use_certificate_chain_file(context, c.certificateFile) == 1 else {
      throw Self.failure("cannot use the certificate", c.certificateFile)
    }
    guard SSL_CTX_use_PrivateKey_file(context, c.privateKeyFile, SSL_FILETYPE_PEM) == 1,
      SSL_CTX_check_private_key(context) == 1
    else {
      throw Self.failure("cannot use the private key (or it is not the certificate's)", c.privateKeyFile)
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

/// A TLS session on a client's socket (blocking; used by one thread at a time).
final class ServerTLSSession: ServerChannel, @unchecked Sendable {
  private let ssl: OpaquePointer
  let socket: ClientSocket

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

  func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws {
    guard let base = buffer.baseAddress else { return }
    var done = 0
    while done < buffer.count {
      let n = SSL_read(ssl, base + done, Int32(clamping: buffer.count - done))
      if n > 0 {
        done += Int(n)
        continue
      }
      let code = SSL_get_error(ssl, n)
      if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { continue }
      throw ConnectionEnd.closed
    }
  }

  func sendAll(_ buffer: UnsafeRawBufferPointer, more: Bool) throws {
    guard let base = buffer.baseAddress else { return }
    var done = 0
    while done < buffer.count {
      let n = SSL_write(ssl, base + done, Int32(clamping: buffer.count - done))
      if n > 0 {
        done += Int(n)
        continue
      }
      let code = SSL_get_error(ssl, n)
      if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { continue }
      throw ConnectionEnd.closed
    }
  }
}
