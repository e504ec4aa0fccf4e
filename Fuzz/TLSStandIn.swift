// The fuzz build of the transport layer leaves Net/TLS.swift (OpenSSL) out. HTTPConnection and
// NBDHandshake name TLSChannel on their TLS paths, which the fuzz target never takes; this
// stand-in only lets them compile, and refuses to be made.

final class TLSChannel: ByteChannel {
  init(socket: SocketChannel, options: TLSOptions, host: String?, name: String) throws {
    throw VMDKError(.tlsFailure, "no TLS in the fuzz build", file: name)
  }
  func sendAll(_ buffer: UnsafeRawBufferPointer) throws { fatalError("no TLS in the fuzz build") }
  func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws { fatalError("no TLS in the fuzz build") }
  func recvSome(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { fatalError("no TLS in the fuzz build") }
  func close() {}
}
