// FileLock: the exclusive lock a writer holds on each file of the link it writes, so that a
// second writer (in this process or another) is refused with "already locked". Open file
// description locks (F_OFD_SETLK) belong to one open of the file, not to the process, so two
// Disk handles in one process exclude each other too; readers take no lock.

import VMDKTransport

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// An exclusive whole-file lock, held until the object goes away.
final class FileLock: Sendable {
  let path: String
  private let fd: Int32

  /// F_OFD_SETLK on Linux (<bits/fcntl-linux.h>, behind _GNU_SOURCE in glibc's headers).
  private static let ofdSetLock: Int32 = 37

  /// Opens `path` and takes an exclusive lock on all of it; throws `alreadyLocked` naming the
  /// file when another open of it holds a lock.
  init(path: String) throws {
    let fd = open(path, O_RDWR | O_CLOEXEC)
    guard fd >= 0 else {
      let err = errno
      throw VMDKError(
        .fileAccess, "cannot open for locking: \(String(cString: strerror(err)))", file: path)
    }
    if !FileLock.lockExclusive(fd, patience: FileLock.patience) {
      let err = errno
      close(fd)
      if err == EAGAIN || err == EACCES {
        throw VMDKError(
          .alreadyLocked, "the disk is open for writing elsewhere: the file is locked by another writer",
          file: path)
      }
      throw VMDKError(.fileAccess, "cannot lock: \(String(cString: strerror(err)))", file: path)
    }
    self.fd = fd
    self.path = path
  }

  deinit { close(fd) }

  /// How long a lock that is held is asked for again before `alreadyLocked`. A lock closed a
  /// moment ago can still be held: a process that spawns a child (any thread of it, as a test
  /// runner, a server or an application does) shares every open file description with the
  /// child from the fork until the child's exec closes it (O_CLOEXEC), so the description, and
  /// its OFD lock, outlives the parent's close() for that while. A writable open right after a
  /// close then failed about once in 60 tries while another thread spawned processes
  /// (FileLockSpawnTests); a real second writer is told after this wait.
  static let patience: Duration = .milliseconds(250)

  /// Takes the lock, asking again every millisecond for `patience` while it is held; false
  /// with errno set when it cannot.
  private static func lockExclusive(_ fd: Int32, patience: Duration) -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: patience)
    while true {
      if tryLockExclusive(fd) { return true }
      let err = errno
      guard err == EAGAIN || err == EACCES, clock.now < deadline else {
        errno = err
        return false
      }
      usleep(1000)
    }
  }

  /// Takes the lock without waiting; false with errno set when it cannot.
  private static func tryLockExclusive(_ fd: Int32) -> Bool {
    #if os(Linux)
      var lock = flock()
      lock.l_type = Int16(F_WRLCK)
      lock.l_whence = Int16(SEEK_SET)
      lock.l_start = 0
      lock.l_len = 0  // to the end of the file, however far it grows
      lock.l_pid = 0  // required by OFD locks
      return fcntl(fd, ofdSetLock, &lock) == 0
    #else
      // No OFD locks: flock(2) locks also belong to the open file description on BSDs.
      if flock(fd, LOCK_EX | LOCK_NB) == 0 { return true }
      if errno == EWOULDBLOCK { errno = EAGAIN }
      return false
    #endif
  }
}
