// Digests of the whole virtual disk (OpenSSL's libcrypto), and a pipelined sequential reader
// that reads the next chunk on a second thread while the caller consumes the current one.

import CCrypto
import VMDKTransport

/// A message digest over bytes, through OpenSSL's EVP interface.
public final class DigestContext {
  /// The algorithms `vmdk-inspect digest` offers.
  public enum Algorithm: String, Sendable, CaseIterable {
    case sha256, sha1, md5
  }
  private let ctx: OpaquePointer

  public init(_ algorithm: Algorithm) {
    ctx = EVP_MD_CTX_new()
    let md: OpaquePointer? =
      switch algorithm {
      case .sha256: EVP_sha256()
      case .sha1: EVP_sha1()
      case .md5: EVP_md5()
      }
    EVP_DigestInit_ex(ctx, md, nil)
  }

  deinit { EVP_MD_CTX_free(ctx) }

  public func update(_ bytes: UnsafeRawBufferPointer) {
    guard let p = bytes.baseAddress, bytes.count > 0 else { return }
    EVP_DigestUpdate(ctx, p, bytes.count)
  }

  /// The digest as lowercase hex.
  public func finalHex() -> String {
    var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var len: UInt32 = 0
    EVP_DigestFinal_ex(ctx, &out, &len)
    let hex = Array("0123456789abcdef")
    return String(out.prefix(Int(len)).flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 15)]] })
  }
}

extension Disk {
  /// Reads `[offset, offset+length)` in order, in chunks of `chunkBytes`, reading ahead on a
  /// second thread; calls `body` with each chunk in turn. Memory: three chunks. The first
  /// error (a read's or `body`'s, in disk order) ends the walk and is thrown once the
  /// read-ahead thread has stopped.
  public func readSequentially(
    offset: UInt64 = 0, length: UInt64? = nil, chunkBytes: Int = 4 << 20,
    _ body: (UnsafeRawBufferPointer) throws -> Void
  ) throws {
    guard chunkBytes > 0 else {
      throw VMDKError(.invalidArgument, "chunk size of \(chunkBytes) bytes", file: top.path)
    }
    let (wanted, overflow) = offset.addingReportingOverflow(length ?? capacityBytes)
    let end = min(capacityBytes, overflow ? capacityBytes : wanted)
    guard end > offset else { return }
    try ReadAhead.run(
      slots: 3, chunkBytes: chunkBytes,
      produce: { [self] pipe in
        var at = offset
        while at < end {
          let (slot, buffer) = try pipe.nextBuffer()
          let n = Int(min(UInt64(chunkBytes), end - at))
          try read(at: at, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
          pipe.push(slot: slot, offset: at, count: n)
          at += UInt64(n)
        }
      },
      consume: { _, bytes in try body(bytes) })
  }

  /// The digest of the whole virtual disk, as lowercase hex.
  public func digest(_ algorithm: DigestContext.Algorithm = .sha256) throws -> String {
    let ctx = DigestContext(algorithm)
    try readSequentially { ctx.update($0) }
    return ctx.finalHex()
  }
}
