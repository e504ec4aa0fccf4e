// What every exported function shares: a pthread lock that ThreadSanitizer sees, the
// registry of live connections and handles (a pointer from C is checked before use), the
// mapping of errors to VixError numbers, and the calling thread's last error message.

import CVixDiskLib
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// A pthread mutex with a condition variable: visible to ThreadSanitizer, usable from any
/// thread, never copied (a class that owns its storage).
final class PLock: @unchecked Sendable {
  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  private let condition: UnsafeMutablePointer<pthread_cond_t>

  init() {
    mutex = .allocate(capacity: 1)
    mutex.initialize(to: pthread_mutex_t())
    pthread_mutex_init(mutex, nil)
    condition = .allocate(capacity: 1)
    condition.initialize(to: pthread_cond_t())
    pthread_cond_init(condition, nil)
  }

  deinit {
    pthread_cond_destroy(condition)
    pthread_mutex_destroy(mutex)
    condition.deallocate()
    mutex.deallocate()
  }

  func withLock<T>(_ body: () throws -> T) rethrows -> T {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return try body()
  }

  /// Waits on the condition; call inside `withLock`.
  func wait() { pthread_cond_wait(condition, mutex) }
  /// Wakes every waiter; call inside `withLock`.
  func broadcast() { pthread_cond_broadcast(condition) }
  /// Wakes one waiter; call inside `withLock`.
  func signal() { pthread_cond_signal(condition) }
}

/// A value guarded by a `PLock`.
final class Locked<Value>: @unchecked Sendable {
  private let lock = PLock()
  private var value: Value
  init(_ value: Value) { self.value = value }
  func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
    try lock.withLock { try body(&value) }
  }
}

// MARK: Errors

/// VixDiskLib's numbers that the toolkit's `VMDKError.Code` does not have.
enum Vix {
  static let ok: UInt64 = 0
  static let fail: UInt64 = 1
  static let invalidArg: UInt64 = 3
  static let notSupported: UInt64 = 6
  static let fileExists: UInt64 = 12
  static let bufferTooSmall: UInt64 = 24
  static let keyNotFound: UInt64 = 16052
  static let async: UInt64 = 25000
  static let cantRepair: UInt64 = 16062
}

/// An error of this layer (a bad argument from C) with VixDiskLib's number.
struct VixFailure: Error {
  let code: UInt64
  let message: String
  init(_ code: UInt64, _ message: String) {
    self.code = code
    self.message = message
  }
}

/// The calling thread's last error: its code and the full message.
private let lastErrorKey: pthread_key_t = {
  var key = pthread_key_t()
  pthread_key_create(&key) { pointer in
    guard let pointer else { return }
    Unmanaged<LastError>.fromOpaque(pointer).release()
  }
  return key
}()

private final class LastError {
  var code: UInt64
  var text: String
  init(code: UInt64, text: String) {
    self.code = code
    self.text = text
  }
}

/// Records `text` as the calling thread's last error for `code`.
func recordError(_ code: UInt64, _ text: String) {
  if let existing = pthread_getspecific(lastErrorKey) {
    let box = Unmanaged<LastError>.fromOpaque(existing).takeUnretainedValue()
    box.code = code
    box.text = text
  } else {
    let box = Unmanaged.passRetained(LastError(code: code, text: text))
    pthread_setspecific(lastErrorKey, box.toOpaque())
  }
}

/// The calling thread's last message for `code`, if its last error had that code.
func lastErrorText(for code: UInt64) -> String? {
  guard let existing = pthread_getspecific(lastErrorKey) else { return nil }
  let box = Unmanaged<LastError>.fromOpaque(existing).takeUnretainedValue()
  return box.code == code ? box.text : nil
}

/// The VixError for `error`, after recording its message for GetErrorText and the log.
func vixCode(_ error: any Error) -> UInt64 {
  let code: UInt64
  let text: String
  switch error {
  case let e as VMDKError:
    code = UInt64(max(0, e.code.rawValue))
    text = e.description
  case let e as VixFailure:
    code = e.code
    text = e.message
  default:
    code = Vix.fail
    text = "\(error)"
  }
  recordError(code, text)
  VixLog.shared.emit(.debug, "error \(code): \(text)")
  return code
}

/// Runs `body`, turning a thrown error into its VixError; VIX_OK when it returns.
func vixCall(_ body: () throws -> Void) -> UInt64 {
  do {
    try body()
    return Vix.ok
  } catch {
    return vixCode(error)
  }
}

/// The name VixDiskLib's documentation gives a code we return, for GetErrorText without a
/// recorded message.
func codeName(_ code: UInt64) -> String {
  if let known = VMDKError.Code.all.first(where: { UInt64($0.rawValue) == code }) { return known.name }
  switch code {
  case 0: return "the operation was successful"
  case 2: return "out of memory"
  case 24: return "buffer too small"
  case 1000: return "invalid handle"
  case 16052: return "metadata key not found"
  case 16062: return "the disk cannot be repaired"
  case 25000: return "the operation completes asynchronously"
  default: return "unknown error"
  }
}

// MARK: Registry of C pointers

/// Live objects handed to C as pointers. A pointer that is not live (never handed out, or
/// already freed) is refused with VIX_E_INVALID_ARG instead of being dereferenced.
final class Registry<Object: AnyObject>: @unchecked Sendable {
  private let live = Locked<[UInt: Object]>([:])

  func add(_ object: Object) -> OpaquePointer {
    let pointer = Unmanaged.passUnretained(object).toOpaque()
    live.withLock { $0[UInt(bitPattern: pointer)] = object }
    return OpaquePointer(pointer)
  }

  func get(_ pointer: OpaquePointer?, _ what: String) throws -> Object {
    guard let pointer else { throw VixFailure(Vix.invalidArg, "the \(what) is NULL") }
    let key = UInt(bitPattern: UnsafeMutableRawPointer(pointer))
    guard let object = live.withLock({ $0[key] }) else {
      throw VixFailure(Vix.invalidArg, "not a valid \(what) (never opened, or already closed)")
    }
    return object
  }

  @discardableResult
  func remove(_ pointer: OpaquePointer?) -> Object? {
    guard let pointer else { return nil }
    let key = UInt(bitPattern: UnsafeMutableRawPointer(pointer))
    return live.withLock { $0.removeValue(forKey: key) }
  }

  var all: [Object] { live.withLock { Array($0.values) } }
}

/// A C string as a Swift string, or an invalid-argument error naming `what`.
func string(_ pointer: UnsafePointer<CChar>?, _ what: String) throws -> String {
  guard let pointer else { throw VixFailure(Vix.invalidArg, "\(what) is NULL") }
  return String(cString: pointer)
}

/// A copy of `text` in malloc'd memory, for C to free with `free` (through our Free calls).
func mallocString(_ text: String) -> UnsafeMutablePointer<CChar>? {
  strdup(text)
}
