// TLS over a connected socket, through OpenSSL (libssl): the client side of nbds:// (after
// NBD_OPT_STARTTLS) and https://. Certificate verification is on by default; client
// certificates and TLS-PSK are options (TLSOptions).

import CSSL

/// A TLS client session over a socket it owns.
final class TLSChannel: ByteChannel {
  let name: String
  private let socket: SocketChannel

  /// Runs the client handshake over `socket`, which the channel then owns. `host` is the name
  /// the server's certificate must carry (nil for a Unix socket: `options.serverName`, else no
  /// host-name check, the chain is still verified). Throws `tlsFailure` naming what failed
  /// (verification, handshake, a missing file), never retryable for a certificate problem.
  init(socket: SocketChannel, options: TLSOptions, host: String?, name: String) throws {
    self.socket = socket
    self.name = name
    throw VMDKError(.notSupported, "TLS is not built yet", file: name)
  }

  func sendAll(_ buffer: UnsafeRawBufferPointer) throws { try socket.sendAll(buffer) }
  func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws { try socket.recvAll(into: buffer) }
  func recvSome(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { try socket.recvSome(into: buffer) }
  func close() { socket.close() }
}
