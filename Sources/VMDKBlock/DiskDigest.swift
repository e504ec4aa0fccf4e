// Digests of the whole virtual disk (OpenSSL's libcrypto), and a pipelined sequential reader
// that reads the next chunk on a second thread while the caller consumes the current one.

import CCrypto
import Dispatch
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
  /// second thread; calls `body` with each chunk in turn. Memory: three chunks.
  public func readSequentially(
    offset: UInt64 = 0, length: UInt64? = nil, chunkBytes: Int = 4 << 20,
    _ body: (UnsafeRawBufferPointer) throws -> Void
  ) throws {
    let end = min(capacityBytes, length.map { offset + $0 } ?? capacityBytes)
    guard end > offset else { return }
    let total = end - offset
    let chunks = Int((total + UInt64(chunkBytes) - 1) / UInt64(chunkBytes))
    let slots = 3
    let buffers = ChunkBuffers(
      (0..<slots).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 4096) })
    defer { buffers.list.forEach { $0.deallocate() } }
    let filled = (0..<slots).map { _ in DispatchSemaphore(value: 0) }
    let free = DispatchSemaphore(value: slots)
    let box = ErrorBox()
    let stop = ErrorBox()
    let reader = DispatchQueue(label: "vmdk.read-ahead")
    let done = DispatchSemaphore(value: 0)
    reader.async { [self] in
      for i in 0..<chunks {
        free.wait()
        if stop.isSet { break }
        let at = offset + UInt64(i) * UInt64(chunkBytes)
        let n = Int(min(UInt64(chunkBytes), end - at))
        do {
          try read(at: at, into: UnsafeMutableRawBufferPointer(rebasing: buffers.list[i % slots][0..<n]))
        } catch {
          box.set(error)
          filled[i % slots].signal()
          break
        }
        filled[i % slots].signal()
      }
      done.signal()
    }
    var failure: (any Error)? = nil
    for i in 0..<chunks {
      filled[i % slots].wait()
      if let e = box.error {
        failure = e
        break
      }
      let at = offset + UInt64(i) * UInt64(chunkBytes)
      let n = Int(min(UInt64(chunkBytes), end - at))
      do {
        try body(UnsafeRawBufferPointer(rebasing: buffers.list[i % slots][0..<n]))
      } catch {
        failure = error
        break
      }
      free.signal()
    }
    stop.set(CancellationError())
    free.signal()
    free.signal()
    done.wait()
    if let failure { throw failure }
  }

  /// The digest of the whole virtual disk, as lowercase hex.
  public func digest(_ algorithm: DigestContext.Algorithm = .sha256) throws -> String {
    let ctx = DigestContext(algorithm)
    try readSequentially { ctx.update($0) }
    return ctx.finalHex()
  }
}

/// A thread-safe slot for the first error.
final class ErrorBox: @unchecked Sendable {
  private let lock = DispatchSemaphore(value: 1)
  private var stored: (any Error)?
  var error: (any Error)? {
    lock.wait()
    defer { lock.signal() }
    return stored
  }
  var isSet: Bool { error != nil }
  func set(_ e: any Error) {
    lock.wait()
    if stored == nil { stored = e }
    lock.signal()
  }
}

struct CancellationError: Error {}

/// Read-ahead buffers handed between the reader thread and the consumer; the semaphores in
/// `readSequentially` make sure only one side touches a buffer at a time.
struct ChunkBuffers: @unchecked Sendable {
  let list: [UnsafeMutableRawBufferPointer]
  init(_ list: [UnsafeMutableRawBufferPointer]) { self.list = list }
}
