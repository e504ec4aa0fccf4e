// The project's one lock: a value behind a pthread mutex.
//
// Why not `Synchronization.Mutex`: on Linux with Swift 6.3.1, ThreadSanitizer does not see
// Mutex's futex-based lock, so every access it protects is reported as a "Swift access race"
// (a 4-thread x 200,000-increment program under one Mutex ends with the exact total and still
// gets reports). A pthread mutex is intercepted by TSan, so its answer means something. Use
// this type for every lock in the project.
#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// A value that is read and changed only under its lock.
public final class Locked<Value>: @unchecked Sendable {
  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  private var value: Value

  public init(_ value: Value) {
    self.value = value
    mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    mutex.initialize(to: pthread_mutex_t())
    let status = pthread_mutex_init(mutex, nil)
    // Invariant: a default mutex fails to initialise only when the system is out of memory
    // or mutexes; no input reaches this.
    precondition(status == 0, "pthread_mutex_init failed with \(status): out of resources")
  }

  deinit {
    pthread_mutex_destroy(mutex)
    mutex.deinitialize(count: 1)
    mutex.deallocate()
  }

  /// Runs `body` with the value, under the lock. Do not call back into the same lock.
  public func withLock<Result, Failure: Error>(
    _ body: (inout Value) throws(Failure) -> Result
  ) throws(Failure) -> Result {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return try body(&value)
  }
}
