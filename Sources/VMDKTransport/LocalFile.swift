// LocalFile: a ByteStore over a local file with positional I/O (pread/pwrite), safe for
// concurrent readers. One object owns one descriptor and closes it.

import CPlatform
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

// seekData and seekHole are behind _GNU_SOURCE in glibc's headers; their values are fixed.
private let seekData: Int32 = 3
private let seekHole: Int32 = 4

/// A local file opened for positional reads (and writes when asked).
public final class LocalFile: ByteStore {
  public let name: String
  public let isWritable: Bool
  private let fd: Int32
  /// The file descriptor, for locks and advice; owned by this object.
  public var fileDescriptor: Int32 { fd }

  /// Opens `path`. Throws `fileNotFound` or `fileAccess` naming the path.
  public init(path: String, writable: Bool = false) throws {
    let flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC
    let fd = open(path, flags)
    if fd < 0 {
      let err = errno
      throw LocalFile.error(errno: err, path: path, doing: "open")
    }
    var st = stat()
    if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
      close(fd)
      throw VMDKError(.fileAccess, "is a folder, not a file", file: path)
    }
    self.fd = fd
    self.name = path
    self.isWritable = writable
  }

  deinit { close(fd) }

  /// For a new file written front to back: start the kernel's writeback every 32 MiB, so
  /// that the final flush waits only for the tail instead of the whole file.
  public var streamsWriteback: Bool {
    get { writeback.withLock { $0.enabled } }
    set { writeback.withLock { $0.enabled = newValue } }
  }
  private let writeback = Mutex<(enabled: Bool, pending: Int)>((false, 0))

  private func noteWritten(_ count: Int) {
    let kick = writeback.withLock { state -> Bool in
      state.pending += count
      guard state.pending >= 32 << 20 else { return false }
      state.pending = 0
      return true
    }
    if kick { _ = cplatform_start_writeback(fd, 0, 0) }
  }

  static func error(errno err: Int32, path: String, doing: String, offset: UInt64? = nil)
    -> VMDKError
  {
    let text = String(cString: strerror(err))
    switch err {
    case ENOENT, ENOTDIR:
      return VMDKError(.fileNotFound, "cannot \(doing): \(text)", file: path, offset: offset)
    case ENOSPC, EDQUOT, EFBIG:
      return VMDKError(.diskFull, "cannot \(doing): \(text)", file: path, offset: offset)
    default:
      return VMDKError(.fileAccess, "cannot \(doing): \(text)", file: path, offset: offset)
    }
  }

  public func size() throws -> UInt64 {
    var st = stat()
    guard fstat(fd, &st) == 0 else {
      throw LocalFile.error(errno: errno, path: name, doing: "stat")
    }
    if (st.st_mode & S_IFMT) == S_IFBLK {
      let end = lseek(fd, 0, SEEK_END)
      return end < 0 ? 0 : UInt64(end)
    }
    return UInt64(st.st_size)
  }

  public func allocatedBytes() throws -> UInt64? {
    var st = stat()
    guard fstat(fd, &st) == 0 else { return nil }
    return UInt64(st.st_blocks) * 512
  }

  public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    guard offset <= UInt64(Int64.max) else { return 0 }
    var done = 0
    while done < buffer.count {
      let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
      if n < 0 {
        if errno == EINTR { continue }
        throw LocalFile.error(errno: errno, path: name, doing: "read", offset: offset + UInt64(done))
      }
      if n == 0 { break }
      done += n
    }
    return done
  }

  public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
    guard isWritable else {
      throw VMDKError(.fileAccess, "opened read-only", file: name, offset: offset)
    }
    var done = 0
    while done < buffer.count {
      let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
      if n < 0 {
        if errno == EINTR { continue }
        throw LocalFile.error(errno: errno, path: name, doing: "write", offset: offset + UInt64(done))
      }
      done += n
    }
    if streamsWriteback { noteWritten(buffer.count) }
  }

  public func flush() throws {
    if fsync(fd) != 0 {
      throw LocalFile.error(errno: errno, path: name, doing: "flush")
    }
  }

  public func nextData(from offset: UInt64) throws -> UInt64? {
    try seek(offset, whence: seekData)
  }

  public func nextHole(from offset: UInt64) throws -> UInt64? {
    try seek(offset, whence: seekHole)
  }

  private func seek(_ offset: UInt64, whence: Int32) throws -> UInt64? {
    guard offset <= UInt64(Int64.max) else { return whence == seekData ? .max : offset }
    let r = lseek(fd, off_t(offset), whence)
    if r < 0 {
      // ENXIO: the offset is at or past the end: no more data, and a hole right here.
      if errno == ENXIO { return whence == seekData ? .max : offset }
      return nil
    }
    return UInt64(r)
  }
}

extension LocalFile {
  /// Creates `path` for writing; fails with `fileExists` when it is there already.
  public static func create(path: String) throws -> LocalFile {
    let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    if fd < 0 {
      let err = errno
      if err == EEXIST { throw VMDKError(.fileExists, "cannot create: the file exists", file: path) }
      throw LocalFile.error(errno: err, path: path, doing: "create")
    }
    close(fd)
    return try LocalFile(path: path, writable: true)
  }

  /// Sets the file's size (a hole when it grows).
  public func truncate(to size: UInt64) throws {
    guard size <= UInt64(Int64.max), ftruncate(fd, off_t(size)) == 0 else {
      throw LocalFile.error(errno: errno, path: name, doing: "set the size", offset: size)
    }
  }
}
