// Copying a whole virtual disk into an ImageWriter: the convert path of the architecture.
// Block status (from the grain tables) says which ranges hold data; only those are read, in
// large chunks, on a read-ahead thread; all-zero grains inside them are dropped; what is left
// goes to the writer in increasing offset order. Unallocated and zero ranges are neither
// read nor written.

import Foundation
import VMDKTransport

/// A flag another thread (a signal handler's queue) sets to stop a long operation.
public final class CancelFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var set = false
  public init() {}
  public func cancel() { lock.withLock { set = true } }
  public var isCancelled: Bool { lock.withLock { set } }
}

public struct CopyOptions: Sendable {
  /// Bytes per read (and largest write).
  public var chunkBytes = 4 << 20
  /// Granularity of zero detection (a grain of 64 KiB by default).
  public var zeroBlockBytes = 64 << 10
  /// Also digest the source's bytes (zeros for holes) while copying, for `--verify`.
  public var digest: DigestContext.Algorithm? = nil
  public init() {}
}

public struct CopyResult: Sendable {
  /// Bytes read from the source (its data ranges).
  public var bytesRead: UInt64 = 0
  /// Bytes handed to the writer (data that is not all zeros).
  public var bytesWritten: UInt64 = 0
  /// The source's digest, when asked for.
  public var digest: String? = nil
}

extension Disk {
  /// Copies the whole virtual disk into `writer` (which the caller then commits or aborts).
  /// `progress` gets the virtual byte offset reached, from the reading thread's consumer,
  /// at most once per chunk.
  public func copy(
    to writer: any ImageWriter, options: CopyOptions = CopyOptions(), cancel: CancelFlag? = nil,
    progress: ((UInt64) -> Void)? = nil
  ) throws -> CopyResult {
    guard writer.capacityBytes >= capacityBytes else {
      throw VMDKError(
        .invalidArgument,
        "the destination holds \(writer.capacityBytes) bytes; the source has \(capacityBytes)")
    }
    var result = CopyResult()
    let ctx = options.digest.map { DigestContext($0) }
    var digested: UInt64 = 0
    func digestZeros(upTo end: UInt64) {
      guard let ctx else { return }
      while digested < end {
        let n = Int(min(UInt64(zeroChunk.count), end - digested))
        zeroChunk.withUnsafeBytes { ctx.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        digested += UInt64(n)
      }
    }
    try readDataRanges(chunkBytes: options.chunkBytes, cancel: cancel) { at, chunk in
      if let cancel, cancel.isCancelled {
        throw VMDKError(.cancelled, "stopped by the user")
      }
      result.bytesRead += UInt64(chunk.count)
      if let ctx {
        digestZeros(upTo: at)
        ctx.update(chunk)
        digested = at + UInt64(chunk.count)
      }
      // Hand over the runs of non-zero blocks, each as one write.
      let block = options.zeroBlockBytes
      var runStart: Int? = nil
      var i = 0
      while i < chunk.count {
        let n = min(block, chunk.count - i)
        let zero = isAllZero(UnsafeRawBufferPointer(rebasing: chunk[i..<(i + n)]))
        if zero, let s = runStart {
          try writer.write(at: at + UInt64(s), UnsafeRawBufferPointer(rebasing: chunk[s..<i]))
          result.bytesWritten += UInt64(i - s)
          runStart = nil
        } else if !zero && runStart == nil {
          runStart = i
        }
        i += n
      }
      if let s = runStart {
        try writer.write(at: at + UInt64(s), UnsafeRawBufferPointer(rebasing: chunk[s...]))
        result.bytesWritten += UInt64(chunk.count - s)
      }
      progress?(at + UInt64(chunk.count))
    }
    if let ctx {
      digestZeros(upTo: capacityBytes)
      result.digest = ctx.finalHex()
    }
    progress?(capacityBytes)
    return result
  }

  /// Calls `body(offset, bytes)` for the disk's data ranges (block status `data && !zero`),
  /// in increasing order, in pieces of at most `chunkBytes`, read ahead on a second thread.
  /// Memory: four chunks.
  public func readDataRanges(
    chunkBytes: Int = 4 << 20, cancel: CancelFlag? = nil, _ body: (UInt64, UnsafeRawBufferPointer) throws -> Void
  ) throws {
    guard chunkBytes > 0 else {
      throw VMDKError(.invalidArgument, "chunk size of \(chunkBytes) bytes", file: top.path)
    }
    try ReadAhead.run(
      slots: 4, chunkBytes: chunkBytes,
      produce: { [self] pipe in
        // Pieces of data ranges, merged across run boundaries when they touch.
        var pendingStart: UInt64 = 0
        var pendingEnd: UInt64 = 0
        func flush() throws {
          var at = pendingStart
          while at < pendingEnd {
            let (slot, buffer) = try pipe.nextBuffer()
            if let cancel, cancel.isCancelled { throw VMDKError(.cancelled, "stopped by the user") }
            let n = Int(min(UInt64(chunkBytes), pendingEnd - at))
            try read(at: at, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
            pipe.push(slot: slot, offset: at, count: n)
            at += UInt64(n)
          }
          pendingStart = pendingEnd
        }
        try blockStatus { run in
          guard run.data && !run.zero else { return }
          if run.start != pendingEnd {
            try flush()
            pendingStart = run.start
          }
          pendingEnd = run.start + run.length
          // Keep reads large but do not let one huge run wait for its end.
          if pendingEnd - pendingStart >= UInt64(chunkBytes) {
            let whole = pendingStart + (pendingEnd - pendingStart) / UInt64(chunkBytes) * UInt64(chunkBytes)
            let end = pendingEnd
            pendingEnd = whole
            try flush()
            pendingEnd = end
          }
        }
        try flush()
      },
      consume: { chunk, bytes in try body(chunk.offset, bytes) })
  }
}

private let zeroChunk = [UInt8](repeating: 0, count: 1 << 20)
