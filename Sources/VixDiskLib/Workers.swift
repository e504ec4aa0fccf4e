// The threads that run ReadAsync and WriteAsync: a fixed pool, started on first use, that
// takes requests in the order they were submitted.

import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// A first-in, first-out queue of jobs served by at most `limit` threads.
///
/// Requests from a page-cached or in-memory disk are CPU work: more threads than cores only
/// switch between one another (a concurrent DispatchQueue grew to one thread per request in
/// flight, 16 on 2 cores, and read 84% as fast as `cat`). A request that waits on a network
/// (an nbd:// or http:// location) holds its thread, so the pool is never smaller than
/// `minimumThreads`.
final class WorkerPool: @unchecked Sendable {
  static let minimumThreads = 4

  private let lock = PLock()
  private var jobs: [() -> Void] = []
  private var head = 0
  private var idle = 0
  private var threads = 0
  let limit: Int

  init(limit: Int) { self.limit = max(1, limit) }

  /// The pool's size for this machine: one thread per core, and at least `minimumThreads`.
  static func defaultLimit() -> Int {
    max(minimumThreads, ProcessInfo.processInfo.activeProcessorCount)
  }

  /// Queues `job`; a waiting thread takes it, or a new one while fewer than `limit` run.
  func run(_ job: @escaping () -> Void) {
    let spawn = lock.withLock { () -> Bool in
      jobs.append(job)
      if idle > 0 {
        lock.signal()
        return false
      }
      guard threads < limit else { return false }
      threads += 1
      return true
    }
    if spawn { startThread() }
  }

  private func startThread() {
    let thread = Thread { [self] in serve() }
    thread.name = "vixDiskLib.aio"
    thread.stackSize = 1 << 20
    thread.start()
  }

  private func serve() {
    while true {
      let job = lock.withLock { () -> () -> Void in
        while head == jobs.count {
          idle += 1
          lock.wait()
          idle -= 1
        }
        let job = jobs[head]
        head += 1
        if head == jobs.count {
          jobs.removeAll(keepingCapacity: true)
          head = 0
        }
        return job
      }
      job()
    }
  }
}
