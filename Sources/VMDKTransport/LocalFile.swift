// LocalFile: a ByteStore over a local file with positional I/O (pread/pwrite), safe for
// concurrent readers. One object owns one descriptor and closes it: at `close()` (once, however
// often it is called), else when the object goes away.

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
  /// The descriptor; -1 once closed.
  private let descriptor: Atomic<Int32>
  /// The file descriptor, for locks and advice; owned by this object (-1 once closed).
  public var fileDescriptor: Int32 { descriptor.load(ordering: .acquiring) }
  /// The descriptor for zero-copy reads (ByteStore); nil once closed.
  public var spliceDescriptor: Int32? {
    let fd = descriptor.load(ordering: .acquiring)
    return fd >= 0 ? fd : nil
  }
  /// The open descriptor, or a typed error once the file was closed.
  private var fd: Int32 {
    get throws {
      let fd = descriptor.load(ordering: .acquiring)
      guard fd >= 0 else { throw VMDKError(.invalidArgument, "the file was closed", file: name) }
      return fd
    }
  }

  /// Opens `path`, which must be a regular file (wherever a symbolic link leads). Throws
  /// `fileNotFound` or `fileAccess` naming the path.
  ///
  /// Only regular files are opened: a named pipe would block the open (or a read) until a
  /// writer comes, a character device such as /dev/zero reads forever, a socket cannot be
  /// opened. The open itself never blocks (O_NONBLOCK, cleared again for a regular file) and
  /// the kind is read from the opened descriptor, not the path, so nothing can swap the file
  /// in between.
  public init(path: String, writable: Bool = false) throws {
    let flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
    let fd = open(path, flags)
    if fd < 0 {
      let err = errno
      if err == ENXIO {
        // open(2) on a Unix socket (or a FIFO opened for writing with no reader).
        throw VMDKError(.fileAccess, "is a socket or a pipe, not a regular file", file: path)
      }
      throw LocalFile.error(errno: err, path: path, doing: "open")
    }
    var st = stat()
    guard fstat(fd, &st) == 0 else {
      let err = errno
      closeDescriptor(fd)
      throw LocalFile.error(errno: err, path: path, doing: "stat")
    }
    guard (st.st_mode & S_IFMT) == S_IFREG else {
      closeDescriptor(fd)
      throw VMDKError(.fileAccess, "is \(LocalFile.kindName(st.st_mode)), not a regular file", file: path)
    }
    let status = fcntl(fd, F_GETFL)
    if status >= 0 { _ = fcntl(fd, F_SETFL, status & ~O_NONBLOCK) }
    self.descriptor = Atomic(fd)
    self.name = path
    self.isWritable = writable
  }

  deinit { close() }

  /// Closes the descriptor now; later calls do nothing, later I/O throws `invalidArgument`.
  public func close() {
    let fd = descriptor.exchange(-1, ordering: .acquiringAndReleasing)
    if fd >= 0 { closeDescriptor(fd) }
  }

  /// For a new file written front to back: start the kernel's writeback every 32 MiB, so
  /// that the final flush waits only for the tail instead of the whole file.
  public var streamsWriteback: Bool {
    get { writeback.withLock { $0.enabled } }
    set { writeback.withLock { $0.enabled = newValue } }
  }
  private let writeback = Locked<(enabled: Bool, pending: Int)>((false, 0))

  private func noteWritten(_ count: Int) {
    let kick = writeback.withLock { state -> Bool in
      state.pending += count
      guard state.pending >= 32 << 20 else { return false }
      state.pending = 0
      return true
    }
    if kick { _ = cplatform_start_writeback(fileDescriptor, 0, 0) }
  }

  /// What a file of mode `mode` is, for messages.
  static func kindName(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFDIR: "a folder"
    case S_IFIFO: "a named pipe"
    case S_IFSOCK: "a socket"
    case S_IFCHR: "a character device"
    case S_IFBLK: "a block device"
    case S_IFLNK: "a symbolic link"
    default: "an unknown kind of file"
    }
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
    guard fstat(try fd, &st) == 0 else {
      throw LocalFile.error(errno: errno, path: name, doing: "stat")
    }
    return UInt64(st.st_size)
  }

  public func allocatedBytes() throws -> UInt64? {
    var st = stat()
    guard fstat(try fd, &st) == 0 else { return nil }
    return UInt64(st.st_blocks) * 512
  }

  public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    guard offset <= UInt64(Int64.max) else { return 0 }
    let fd = try self.fd
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
    let fd = try self.fd
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
    if fsync(try fd) != 0 {
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
    let r = lseek(try fd, off_t(offset), whence)
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
    closeDescriptor(fd)
    return try LocalFile(path: path, writable: true)
  }

  /// Sets the file's size (a hole when it grows).
  public func truncate(to size: UInt64) throws {
    guard size <= UInt64(Int64.max), ftruncate(try fd, off_t(size)) == 0 else {
      throw LocalFile.error(errno: errno, path: name, doing: "set the size", offset: size)
    }
  }
}

/// close(2), at file scope where `close` is not LocalFile's method.
private func closeDescriptor(_ fd: Int32) { _ = close(fd) }
