// The one read-ahead pipeline of the block layer: a producer thread fills a fixed ring of
// buffers while the caller's thread consumes them in order. readSequentially (digest, cat)
// and readDataRanges (copy, convert) both run on it.
//
// How it ends, whatever fails and whenever:
// - the producer throws: the chunks it produced before are still consumed, in order, then
//   the caller gets the producer's error;
// - the consumer throws: the producer is told to stop (its next wait for a buffer throws),
//   the caller waits for the thread to end, then gets the consumer's error;
// - both: the error of the earlier chunk wins, so the consumer's (it failed on a chunk the
//   producer had finished before it failed).
// The call returns only after the producer thread has ended, so no buffer and no lock is
// freed while it is still in use. Only a mutex and a condition variable are shared (no
// semaphores: libdispatch traps when one is freed while its count is below its start).

import Foundation

/// A chunk the producer filled: buffer `slot` holds `count` bytes for offset `offset`.
struct ReadAheadChunk: Sendable {
  let slot: Int
  let offset: UInt64
  let count: Int
}

/// The producer's side of a read-ahead pipeline.
final class ReadAheadProducer: @unchecked Sendable {
  /// The producer's next wait for a buffer throws this once the consumer stopped.
  struct Stopped: Error {}

  private let cond = NSCondition()
  private let buffers: [UnsafeMutableRawBufferPointer]
  private var ready: [ReadAheadChunk] = []
  private var freeSlots: [Int]
  private var finished = false
  private var stopped = false
  private var producerError: (any Error)?

  fileprivate init(buffers: [UnsafeMutableRawBufferPointer]) {
    self.buffers = buffers
    freeSlots = Array(buffers.indices)
  }

  /// Bytes per buffer.
  var chunkBytes: Int { buffers[0].count }

  /// Waits for a free buffer and returns its slot and the buffer (of `chunkBytes`). Throws
  /// `Stopped` when the consumer has stopped.
  func nextBuffer() throws -> (slot: Int, buffer: UnsafeMutableRawBufferPointer) {
    cond.lock()
    defer { cond.unlock() }
    while freeSlots.isEmpty && !stopped { cond.wait() }
    if stopped { throw Stopped() }
    let slot = freeSlots.removeFirst()
    return (slot, buffers[slot])
  }

  /// Hands the consumer `count` bytes of buffer `slot`, for offset `offset`.
  func push(slot: Int, offset: UInt64, count: Int) {
    cond.lock()
    ready.append(ReadAheadChunk(slot: slot, offset: offset, count: count))
    cond.broadcast()
    cond.unlock()
  }

  fileprivate func finish(_ error: (any Error)?) {
    cond.lock()
    finished = true
    producerError = error
    cond.broadcast()
    cond.unlock()
  }

  /// The next chunk in order, or nil once the producer ended and every chunk was taken.
  fileprivate func pop() -> ReadAheadChunk? {
    cond.lock()
    defer { cond.unlock() }
    while ready.isEmpty && !finished { cond.wait() }
    return ready.isEmpty ? nil : ready.removeFirst()
  }

  fileprivate func release(_ slot: Int) {
    cond.lock()
    freeSlots.append(slot)
    cond.broadcast()
    cond.unlock()
  }

  fileprivate func stop() {
    cond.lock()
    stopped = true
    cond.broadcast()
    cond.unlock()
  }

  /// Waits for the producer thread's end; returns its error (not `Stopped`).
  fileprivate func waitForProducer() -> (any Error)? {
    cond.lock()
    defer { cond.unlock() }
    while !finished { cond.wait() }
    return producerError is Stopped ? nil : producerError
  }

  fileprivate func buffer(_ chunk: ReadAheadChunk) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: buffers[chunk.slot][0..<chunk.count])
  }
}

enum ReadAhead {
  /// Runs `produce` on a new thread with `slots` buffers of `chunkBytes`, and `consume` on
  /// the calling thread for each chunk `produce` pushes, in push order. Returns when both
  /// have ended; throws the first error (see the top of the file).
  static func run(
    slots: Int, chunkBytes: Int, produce: @escaping @Sendable (ReadAheadProducer) throws -> Void,
    consume: (ReadAheadChunk, UnsafeRawBufferPointer) throws -> Void
  ) throws {
    let buffers = (0..<max(1, slots)).map { _ in
      UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, chunkBytes), alignment: 4096)
    }
    defer { buffers.forEach { $0.deallocate() } }
    let pipe = ReadAheadProducer(buffers: buffers)
    let thread = Thread {
      do {
        try produce(pipe)
        pipe.finish(nil)
      } catch {
        pipe.finish(error)
      }
    }
    // The producer walks grain tables and block status; 1 MiB of stack is plenty.
    thread.stackSize = 1 << 20
    thread.name = "vmdk.read-ahead"
    thread.start()
    var failure: (any Error)? = nil
    while let chunk = pipe.pop() {
      do {
        try consume(chunk, pipe.buffer(chunk))
      } catch {
        failure = error
        pipe.stop()
        break
      }
      pipe.release(chunk.slot)
    }
    let producerError = pipe.waitForProducer()
    if let failure { throw failure }
    if let producerError { throw producerError }
  }
}
