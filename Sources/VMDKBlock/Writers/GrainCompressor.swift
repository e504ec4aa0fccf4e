// Parallel compression of streamOptimized grains, emitted in order. The writer fills batches
// of consecutive grains; a fixed pool of worker threads (as wide as the machine) compresses
// them grain by grain into ready-to-write records (grain marker + zlib stream + zero padding
// to a sector); the batches come back to the writer's thread strictly in submission order.
// A small fixed pool of batch buffers bounds memory whatever the disk size.
//
// Why libdeflate: measured per core on 64 KiB grains (libdeflate 1.14, zlib 1.2.13, Debian 12;
// a 2-core machine shared with other jobs, load about 2.5; single-threaded C loop over the
// same grains, /tmp/stream-bench/cmp.c, not committed):
//   level 6, /usr/bin files, 128 MiB:  zlib compress2 31.3 MB/s, output 39.61 % of input;
//                                      libdeflate     86.3 MB/s, output 39.16 %.
//   level 6, ext4 disk holding /usr,   zlib compress2 62.9 MB/s, 19.03 %;
//   128 MiB at 256 MiB:                libdeflate    128.9 MB/s, 19.00 %.
//   level 1 (/usr/bin):                zlib 76.3 MB/s 45.10 %, libdeflate 170.3 MB/s 44.51 %.
//   level 9 (/usr/bin):                zlib  9.6 MB/s 41.42 %, libdeflate  23.6 MB/s 40.99 %.
// libdeflate is 2 to 2.8 times faster at every level and its output is slightly smaller;
// zlib's inflate reads it (zlib format with Adler-32), and so does qemu-img.
// Whole writer, first 1 GiB of the 4 GiB ext4 benchmark disk (release build, warm cache):
// StreamWriter, 2 threads: 5.8 s wall, 10.7 s CPU, 341,591,552 bytes; 1 thread: 11.1 s;
// `qemu-img convert -O vmdk -o subformat=streamOptimized` (zlib level 6, one thread):
// 29.0 s wall, 26.8 s CPU, 343,746,048 bytes.
//
// Memory: the batch buffers stay within `poolBudgetBytes` (24 MiB; 4 batches of 4.1 MiB on a
// 2-core machine), plus one libdeflate compressor per worker (672 KB at levels 5 to 9, 205 KB
// at level 1). Peak RSS of a whole conversion was 43 MB for 1 GiB and for 4 GiB alike, of
// which about 25 MB is the process itself (a 1 MiB conversion peaks at 27 MB).

import CDeflate
import Foundation
import VMDKFormat
import VMDKTransport

/// Which deflate implementation compresses grains. libdeflate is the default (see the figures
/// at the top of this file); zlib stays for comparison.
public enum DeflateEngine: Sendable {
  case libdeflate
  case zlib
}

/// Consecutive grains on their way through compression: input slots the writer fills, and
/// output records the workers produce in slots of `recordCapacity` bytes.
final class GrainBatch: @unchecked Sendable {
  let capacity: Int
  let grainBytes: Int
  let recordCapacity: Int
  /// `capacity` grains of input.
  let input: UnsafeMutableRawBufferPointer
  /// `capacity` records of at most `recordCapacity` bytes each. The writer compacts them in place.
  let output: UnsafeMutableRawBufferPointer
  /// Grain number of each slot.
  let grainIndex: UnsafeMutablePointer<UInt64>
  /// Bytes of each record (a multiple of 512); 0 for an all-zero grain, which is not stored.
  let recordBytes: UnsafeMutablePointer<Int>
  /// Slots filled.
  var count = 0
  // Scheduling, guarded by the compressor's lock.
  var nextToClaim = 0
  var remaining = 0
  var error: VMDKError?

  init(capacity: Int, grainBytes: Int, recordCapacity: Int) {
    self.capacity = capacity
    self.grainBytes = grainBytes
    self.recordCapacity = recordCapacity
    input = .allocate(byteCount: capacity * grainBytes, alignment: 64)
    output = .allocate(byteCount: capacity * recordCapacity, alignment: 64)
    grainIndex = .allocate(capacity: capacity)
    recordBytes = .allocate(capacity: capacity)
  }

  deinit {
    input.deallocate()
    output.deallocate()
    grainIndex.deallocate()
    recordBytes.deallocate()
  }

  func inputSlot(_ i: Int) -> UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(start: input.baseAddress! + i * grainBytes, count: grainBytes)
  }

  func outputSlot(_ i: Int) -> UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(start: output.baseAddress! + i * recordCapacity, count: recordCapacity)
  }
}

/// Compresses grains on worker threads and hands the finished batches back in order.
///
/// Used from one thread (the writer's): `slot(for:)` for each grain in increasing order, then
/// `finish()`. Finished batches go to `emit` on that same thread, in submission order, from
/// inside `slot(for:)` and `finish()`; an error thrown by `emit` or by a worker comes out of
/// the call that was running. Call `shutdown()` when done (also after a failure).
final class GrainCompressor: @unchecked Sendable {
  /// Input bytes per batch: large enough for big sequential writes, small enough that the
  /// pool stays a few tens of MiB.
  static let batchInputBytes = 2 << 20
  /// Memory for all batch buffers together (input and output).
  static let poolBudgetBytes = 24 << 20
  /// At most this many workers: beyond it the writer's single thread is the limit anyway,
  /// and every worker holds a compressor's tables.
  static let maxThreads = 16

  /// Worker threads by default: every core.
  static var defaultThreads: Int { min(maxThreads, max(1, ProcessInfo.processInfo.activeProcessorCount)) }

  let grainBytes: Int
  let grainSectors: UInt64
  let level: Int32
  let engine: DeflateEngine
  let threads: Int
  let batchGrains: Int
  let recordCapacity: Int
  let poolSize: Int
  private let emit: (GrainBatch) throws -> Void

  private let condition = NSCondition()
  /// Submitted batches not yet emitted, oldest first. Guarded by `condition`.
  private var queue: [GrainBatch] = []
  private var stopping = false
  private var runningWorkers = 0
  /// Buffers ready for reuse (writer thread only).
  private var free: [GrainBatch] = []
  private var made = 0
  /// The batch being filled (writer thread only).
  private var filling: GrainBatch?
  /// The compressor used inline when `threads` is 0.
  private var inlineCompressor: OpaquePointer?

  /// - Parameters:
  ///   - threads: worker threads; 0 compresses on the calling thread (the reference the
  ///     parallel output is compared with).
  ///   - emit: receives each batch, compressed, in order, on the calling thread.
  init(
    grainSectors: UInt64, level: Int, threads: Int = GrainCompressor.defaultThreads,
    engine: DeflateEngine = .libdeflate, emit: @escaping (GrainBatch) throws -> Void
  ) {
    self.grainSectors = grainSectors
    self.grainBytes = Int(grainSectors) * 512
    self.level = Int32(level)
    self.engine = engine
    self.threads = max(0, min(threads, GrainCompressor.maxThreads))
    self.emit = emit
    let bound = max(libdeflate_zlib_compress_bound(nil, grainBytes), GrainCompression.bound(grainBytes))
    recordCapacity = (StreamMarker.grainHeaderBytes + bound + 511) / 512 * 512
    batchGrains = max(1, GrainCompressor.batchInputBytes / grainBytes)
    let batchBytes = batchGrains * (grainBytes + recordCapacity)
    // Enough batches to keep every worker busy while one is filled and one written, within
    // the budget (at least two, so that filling and compressing overlap).
    poolSize = max(2, min(max(4, self.threads + 2), GrainCompressor.poolBudgetBytes / batchBytes))
    for _ in 0..<self.threads {
      runningWorkers += 1
      let t = Thread { [self] in workerLoop() }
      t.name = "grain-compressor"
      t.start()
    }
  }

  deinit {
    if let c = inlineCompressor { libdeflate_free_compressor(c) }
  }

  /// The input slot for grain `index` (greater than the previous one). It stays valid, and
  /// is compressed as it is then, until the next call. Its content is undefined: the caller
  /// writes all of it.
  func slot(for index: UInt64) throws -> UnsafeMutableRawBufferPointer {
    if let b = filling, b.count == b.capacity {
      filling = nil
      try submit(b)
    }
    let b = try filling ?? takeBuffer()
    filling = b
    b.grainIndex[b.count] = index
    b.count += 1
    return b.inputSlot(b.count - 1)
  }

  /// Compresses and emits everything submitted.
  func finish() throws {
    if let b = filling {
      filling = nil
      if b.count > 0 { try submit(b) } else { free.append(b) }
    }
    try drain(untilEmpty: true)
  }

  /// Stops the workers and waits for them. Batches not yet emitted are dropped.
  func shutdown() {
    condition.lock()
    stopping = true
    condition.broadcast()
    while runningWorkers > 0 { condition.wait() }
    queue.removeAll()
    condition.unlock()
  }

  // MARK: Writer side

  private func takeBuffer() throws -> GrainBatch {
    if let b = free.popLast() {
      b.count = 0
      return b
    }
    if made < poolSize {
      made += 1
      return GrainBatch(capacity: batchGrains, grainBytes: grainBytes, recordCapacity: recordCapacity)
    }
    // Every buffer is in flight: wait for the oldest and write it out.
    try drain(untilEmpty: false, needBuffer: true)
    guard let b = free.popLast() else { throw VMDKError(.failure, "grain compressor: no buffer came back") }
    b.count = 0
    return b
  }

  private func submit(_ b: GrainBatch) throws {
    b.error = nil
    b.nextToClaim = 0
    b.remaining = b.count
    if threads == 0 {
      for i in 0..<b.count {
        if let e = Self.compress(
          b, i, engine: engine, level: level, grainSectors: grainSectors, compressor: &inlineCompressor)
        {
          b.error = e
        }
      }
      b.remaining = 0
      if let e = b.error { throw e }
      try emit(b)
      free.append(b)
      return
    }
    condition.lock()
    guard !stopping else {
      condition.unlock()
      throw VMDKError(.failure, "grain compressor: a batch was submitted after shutdown")
    }
    queue.append(b)
    condition.broadcast()
    condition.unlock()
    // Write out what is done already, so that the file grows while the workers compress.
    try drain(untilEmpty: false)
  }

  /// Emits finished batches from the head of the queue. Waits for the head when
  /// `untilEmpty` (until the queue is empty) or `needBuffer` (until one buffer is free).
  private func drain(untilEmpty: Bool, needBuffer: Bool = false) throws {
    while true {
      condition.lock()
      guard let head = queue.first else {
        condition.unlock()
        return
      }
      if head.remaining > 0 {
        if untilEmpty || (needBuffer && free.isEmpty) {
          condition.wait()
          condition.unlock()
          continue
        }
        condition.unlock()
        return
      }
      queue.removeFirst()
      condition.unlock()
      if let e = head.error { throw e }
      try emit(head)
      free.append(head)
      if needBuffer && !untilEmpty { return }
    }
  }

  // MARK: Workers

  private func workerLoop() {
    var compressor: OpaquePointer? = nil
    defer { if let c = compressor { libdeflate_free_compressor(c) } }
    condition.lock()
    while true {
      if stopping { break }
      guard let b = queue.first(where: { $0.nextToClaim < $0.count }) else {
        condition.wait()
        continue
      }
      let i = b.nextToClaim
      b.nextToClaim += 1
      condition.unlock()
      let error = Self.compress(b, i, engine: engine, level: level, grainSectors: grainSectors, compressor: &compressor)
      condition.lock()
      if let error { b.error = error }
      b.remaining -= 1
      if b.remaining == 0 { condition.broadcast() }
    }
    runningWorkers -= 1
    condition.broadcast()
    condition.unlock()
  }

  /// Compresses slot `i` of `b` into its record: grain marker (LBA, size), zlib stream of the
  /// whole grain, zeros to the next sector. An all-zero grain gets no record (length 0).
  /// Returns the error, if any, for the caller to record under the lock.
  static func compress(
    _ b: GrainBatch, _ i: Int, engine: DeflateEngine, level: Int32, grainSectors: UInt64,
    compressor: inout OpaquePointer?
  ) -> VMDKError? {
    let src = b.inputSlot(i)
    if isAllZero(UnsafeRawBufferPointer(src)) {
      b.recordBytes[i] = 0
      return nil
    }
    let out = b.outputSlot(i)
    let header = StreamMarker.grainHeaderBytes
    let data = UnsafeMutableRawBufferPointer(rebasing: out[header...])
    var n = 0
    switch engine {
    case .libdeflate:
      if compressor == nil { compressor = libdeflate_alloc_compressor(level) }
      if let c = compressor {
        n = libdeflate_zlib_compress(c, src.baseAddress!, src.count, data.baseAddress!, data.count)
      }
    case .zlib:
      n = GrainCompression.deflate(UnsafeRawBufferPointer(src), into: data, level: level) ?? 0
    }
    guard n > 0 else {
      b.recordBytes[i] = 0
      return VMDKError(.failure, "cannot compress grain \(b.grainIndex[i]): the compressor failed")
    }
    let lba = b.grainIndex[i] &* grainSectors
    out.storeBytes(of: lba.littleEndian, toByteOffset: 0, as: UInt64.self)
    out.storeBytes(of: UInt32(n).littleEndian, toByteOffset: 8, as: UInt32.self)
    let used = header + n
    let padded = (used + 511) / 512 * 512
    if padded > used {
      UnsafeMutableRawBufferPointer(rebasing: out[used..<padded]).initializeMemory(as: UInt8.self, repeating: 0)
    }
    b.recordBytes[i] = padded
    return nil
  }
}
