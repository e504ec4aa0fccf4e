// What vmdk-mount serves, independent of FUSE: paths resolved to files of a `FileSystem`
// (through names made safe to serve), or the raw view (`disk`, `p1`, `p2`…). Every answer is
// a value or a POSIX errno; the FUSE bridge (FuseBridge.swift) only converts.
import VMDKBlock
import VMDKFiles

#if canImport(Glibc)
  import Glibc
#endif

/// A POSIX error number answered to the kernel (ENOENT, EIO…).
public struct MountErrno: Error, Equatable, Sendable {
  public var code: Int32
  public init(_ code: Int32) { self.code = code }
}

/// A file's attributes as the mount serves them.
public struct MountAttributes: Sendable, Equatable {
  public var inode: UInt64
  public var type: FileType
  public var size: UInt64
  /// Permission bits (07777).
  public var permissions: UInt32
  public var linkCount: UInt32
  public var uid: UInt32
  public var gid: UInt32
  public var accessTime: FileTime
  public var modificationTime: FileTime
  public var changeTime: FileTime
  public var device: UInt64

  /// st_mode: the type bits and the permission bits.
  public var mode: UInt32 {
    let t: UInt32 =
      switch type {
      case .directory: 0o040000
      case .symlink: 0o120000
      case .characterDevice: 0o020000
      case .blockDevice: 0o060000
      case .fifo: 0o010000
      case .socket: 0o140000
      case .regular, .unknown: 0o100000
      }
    return t | (permissions & 0o7777)
  }
}

/// Names from the guest made safe to serve as one path component. A name holding `/` or NUL,
/// or equal to `.` or `..`, would let the guest pick another path than the one it names: such
/// bytes are escaped as `%2F`, `%00`, `%2E`. An empty name is hidden (nil).
public enum MountNames {
  public static func served(_ raw: [UInt8]) -> [UInt8]? {
    if raw.isEmpty { return nil }
    if raw == [0x2E] { return Array("%2E".utf8) }
    if raw == [0x2E, 0x2E] { return Array("%2E%2E".utf8) }
    guard raw.contains(where: { $0 == 0x2F || $0 == 0 }) else { return raw }
    var out: [UInt8] = []
    out.reserveCapacity(raw.count + 8)
    for b in raw {
      switch b {
      case 0x2F: out += Array("%2F".utf8)
      case 0: out += Array("%00".utf8)
      default: out.append(b)
      }
    }
    return out
  }

  /// Whether `served` changed the name (it is reported once).
  public static func isHostile(_ raw: [UInt8]) -> Bool {
    raw.isEmpty || raw == [0x2E] || raw == [0x2E, 0x2E] || raw.contains { $0 == 0x2F || $0 == 0 }
  }
}

/// One folder's served names: in on-disk order, and by name for lookups. A name that is
/// served twice (the guest stored it twice, or an escaped name equals a real one) keeps its
/// first entry; the others are hidden.
struct ServedFolder: Sendable {
  var order: [[UInt8]] = []
  var byName: [[UInt8]: DirectoryEntry] = [:]
}

/// What a path names in the mount.
public enum MountNode: Sendable, Equatable {
  case file(FileID)
  case rawRoot
  /// Index into the raw view's files.
  case raw(Int)
}

/// The mount's tree and its reads. Safe to call from many threads at once.
public final class MountTree: Sendable {
  public enum Content: Sendable {
    case fileSystem(any FileSystem, volumeSize: UInt64)
    /// `disk`, `p1`, `p2`…: each a byte range of the disk.
    case raw([(name: String, volume: DiskVolume)])
  }

  public let content: Content
  /// Times of the raw view's entries: when the mount started.
  let mountTime: FileTime
  let ownerUID: UInt32
  let ownerGID: UInt32
  private let folders = Locked<[FileID: ServedFolder]>([:])
  private let reported = Locked<Set<String>>([])
  /// Where messages go (stderr, then syslog once the daemon is detached).
  let log: @Sendable (String) -> Void

  /// Most folders whose names are kept; past it the cache starts again.
  static let maxCachedFolders = 16_384

  public init(content: Content, log: @escaping @Sendable (String) -> Void) {
    self.content = content
    self.log = log
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    mountTime = FileTime(seconds: Int64(ts.tv_sec), nanoseconds: UInt32(ts.tv_nsec))
    ownerUID = getuid()
    ownerGID = getgid()
  }

  /// The raw view of a disk: the whole disk and each partition of its table.
  public static func rawContent(disk: Disk, name: String) throws -> Content {
    var files: [(name: String, volume: DiskVolume)] = [("disk", DiskVolume(disk: disk, name: name))]
    let table = try PartitionTable.read(DiskVolume(disk: disk, name: name))
    if table.scheme != .none {
      for p in table.partitions {
        files.append(("p\(p.index)", try DiskVolume(disk: disk, partition: p, name: "\(name) partition \(p.index)")))
      }
    }
    return .raw(files)
  }

  /// Logs `message` the first time `key` is seen.
  func reportOnce(_ key: String, _ message: String) {
    let first = reported.withLock { $0.insert(key).inserted }
    if first { log(message) }
  }

  /// An error of the reader as the kernel sees it: EIO, logged once per file.
  func readerError(_ error: any Error, path: String, key: String) -> MountErrno {
    reportOnce(key, "vmdk-mount: \(path): \(error)")
    return MountErrno(EIO)
  }

  // MARK: Paths

  /// The components of a FUSE path ("/a/b"); "/" has none.
  static func components(_ path: [UInt8]) -> [ArraySlice<UInt8>] {
    path.split(separator: 0x2F, omittingEmptySubsequences: true)
  }

  func folder(_ fs: any FileSystem, _ id: FileID, path: String) throws(MountErrno) -> ServedFolder {
    if let f = folders.withLock({ $0[id] }) { return f }
    let entries: [DirectoryEntry]
    do {
      entries = try fs.list(id)
    } catch {
      throw readerError(error, path: path, key: "list \(id)")
    }
    var f = ServedFolder()
    f.order.reserveCapacity(entries.count)
    for e in entries {
      guard let name = MountNames.served(e.name) else {
        reportOnce("name \(id) \(e.id)", "vmdk-mount: \(path): an entry with an empty name (file \(e.id)) is hidden")
        continue
      }
      if MountNames.isHostile(e.name) {
        reportOnce(
          "name \(id) \(e.id)",
          "vmdk-mount: \(path): the name \(String(decoding: e.name, as: UTF8.self).debugDescription) is not a safe path component; served as \(String(decoding: name, as: UTF8.self))"
        )
      }
      if f.byName[name] != nil {
        reportOnce(
          "dup \(id) \(name)",
          "vmdk-mount: \(path): the name \(String(decoding: name, as: UTF8.self)) is listed twice; the later entry is hidden"
        )
        continue
      }
      f.byName[name] = e
      f.order.append(name)
    }
    folders.withLock {
      if $0.count >= Self.maxCachedFolders { $0.removeAll(keepingCapacity: true) }
      $0[id] = f
    }
    return f
  }

  /// The node a path names.
  public func resolve(_ path: [UInt8]) throws(MountErrno) -> MountNode {
    let parts = Self.components(path)
    switch content {
    case .raw(let files):
      if parts.isEmpty { return .rawRoot }
      guard parts.count == 1, let i = files.firstIndex(where: { Array($0.name.utf8) == Array(parts[0]) }) else {
        throw MountErrno(ENOENT)
      }
      return .raw(i)
    case .fileSystem(let fs, _):
      var id = fs.root
      var type = FileType.directory
      var here: [UInt8] = []
      for part in parts {
        guard type == .directory else { throw MountErrno(ENOTDIR) }
        let f = try folder(fs, id, path: here.isEmpty ? "/" : String(decoding: here, as: UTF8.self))
        here += [0x2F] + part
        guard let e = f.byName[Array(part)] else { throw MountErrno(ENOENT) }
        id = e.id
        type = e.type
        if type == .unknown {
          // The folder did not say: ask the file itself before descending.
          do {
            type = try fs.stat(id).type
          } catch {
            throw readerError(error, path: String(decoding: path, as: UTF8.self), key: "stat \(id)")
          }
        }
      }
      return .file(id)
    }
  }

  // MARK: Operations

  public func attributes(_ path: [UInt8]) throws(MountErrno) -> MountAttributes {
    let node = try resolve(path)
    switch (content, node) {
    case (.raw(let files), .raw(let i)):
      return MountAttributes(
        inode: UInt64(i) + 2, type: .regular, size: files[i].volume.size, permissions: 0o444, linkCount: 1,
        uid: ownerUID, gid: ownerGID, accessTime: mountTime, modificationTime: mountTime, changeTime: mountTime,
        device: 0)
    case (.raw(let files), _):
      return MountAttributes(
        inode: 1, type: .directory, size: UInt64(files.count), permissions: 0o555, linkCount: 2, uid: ownerUID,
        gid: ownerGID, accessTime: mountTime, modificationTime: mountTime, changeTime: mountTime, device: 0)
    case (.fileSystem(let fs, _), .file(let id)):
      let a: FileAttributes
      do {
        a = try fs.stat(id)
      } catch {
        throw readerError(error, path: String(decoding: path, as: UTF8.self), key: "stat \(id)")
      }
      let zero = FileTime(seconds: 0)
      let m = a.modificationTime ?? a.changeTime ?? a.creationTime ?? zero
      return MountAttributes(
        inode: a.id, type: a.type, size: a.size, permissions: a.mode & 0o7777, linkCount: max(a.linkCount, 1),
        uid: a.uid ?? ownerUID, gid: a.gid ?? ownerGID, accessTime: a.accessTime ?? m, modificationTime: m,
        changeTime: a.changeTime ?? m, device: a.device ?? 0)
    default:
      throw MountErrno(ENOENT)
    }
  }

  /// The served names of a folder, in order (without `.` and `..`).
  public func list(_ path: [UInt8]) throws(MountErrno) -> [[UInt8]] {
    let node = try resolve(path)
    switch (content, node) {
    case (.raw(let files), .rawRoot):
      return files.map { Array($0.name.utf8) }
    case (.fileSystem(let fs, _), .file(let id)):
      let a = try attributes(path)
      guard a.type == .directory else { throw MountErrno(ENOTDIR) }
      return try folder(fs, id, path: String(decoding: path, as: UTF8.self)).order
    default:
      throw MountErrno(ENOTDIR)
    }
  }

  /// Opens a regular file for reading: the handle `read` takes.
  public func open(_ path: [UInt8]) throws(MountErrno) -> UInt64 {
    try openFile(path).handle
  }

  /// Opens a regular file for reading: the handle `read` takes, and the file's size in bytes
  /// (the mount opens large files with direct io).
  public func openFile(_ path: [UInt8]) throws(MountErrno) -> (handle: UInt64, size: UInt64) {
    let node = try resolve(path)
    switch node {
    case .rawRoot: throw MountErrno(EISDIR)
    case .raw(let i):
      guard case .raw(let files) = content else { throw MountErrno(ENOENT) }
      return (UInt64(i), files[i].volume.size)
    case .file(let id):
      let a = try attributes(path)
      switch a.type {
      case .directory: throw MountErrno(EISDIR)
      case .regular: return (id, a.size)
      default: throw MountErrno(EACCES)
      }
    }
  }

  /// Reads up to `buffer.count` bytes at `offset`: all of them unless the file ends first.
  public func read(
    handle: UInt64, path: String, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer
  ) throws(MountErrno) -> Int {
    switch content {
    case .raw(let files):
      guard handle < UInt64(files.count) else { throw MountErrno(EBADF) }
      let v = files[Int(handle)].volume
      guard offset < v.size else { return 0 }
      let count = Int(min(UInt64(buffer.count), v.size - offset))
      do {
        try v.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
      } catch {
        throw readerError(error, path: "\(path) at offset \(offset)", key: "raw \(handle)")
      }
      return count
    case .fileSystem(let fs, _):
      var done = 0
      while done < buffer.count {
        let (at, overflow) = offset.addingReportingOverflow(UInt64(done))
        if overflow { break }
        let n: Int
        do {
          n = try fs.read(handle, at: at, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
        } catch {
          throw readerError(error, path: "\(path) at offset \(at)", key: "read \(handle)")
        }
        if n <= 0 { break }
        done += n
      }
      return done
    }
  }

  /// Where the bytes a `read` of `length` bytes at `offset` would give lie in the image's
  /// files (Disk.hostPieces through the file system's FileMapping), in order, cut at the end
  /// of the file; nil when they are to be read (not mappable, too scattered, or any error:
  /// `read` then reports it).
  public func pieces(handle: UInt64, at offset: UInt64, length: Int, maxPieces: Int) -> [HostPiece]? {
    switch content {
    case .raw(let files):
      guard handle < UInt64(files.count) else { return nil }
      let v = files[Int(handle)].volume
      guard offset < v.size else { return [] }
      let count = Int(min(UInt64(length), v.size - offset))
      guard let (disk, start) = v.diskRange else { return nil }
      let (at, overflow) = start.addingReportingOverflow(offset)
      if overflow { return nil }
      return try? disk.hostPieces(offset: at, length: count, maxPieces: maxPieces)
    case .fileSystem(let fs, _):
      guard let mapping = fs.mapping else { return nil }
      guard let pieces = try? mapping.hostPieces(handle, at: offset, length: length, maxPieces: maxPieces) else {
        return nil
      }
      return pieces
    }
  }

  /// A symbolic link's target.
  public func readlink(_ path: [UInt8]) throws(MountErrno) -> [UInt8] {
    guard case .fileSystem(let fs, _) = content else { throw MountErrno(EINVAL) }
    guard case .file(let id) = try resolve(path) else { throw MountErrno(EINVAL) }
    let a = try attributes(path)
    guard a.type == .symlink else { throw MountErrno(EINVAL) }
    do {
      return try fs.readlink(id)
    } catch {
      throw readerError(error, path: String(decoding: path, as: UTF8.self), key: "readlink \(id)")
    }
  }

  /// statfs: the volume's size in 4 KiB blocks, nothing free.
  public var volumeSize: UInt64 {
    switch content {
    case .fileSystem(_, let size): return size
    case .raw(let files): return files.first?.volume.size ?? 0
    }
  }
}
