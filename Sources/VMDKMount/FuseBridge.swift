// The FUSE side: cfuse_ops callbacks over a MountTree, and the run of the mount (foreground,
// or daemonized before the image is opened so that no thread is lost in a fork).
import CFuse
import VMDKBlock
import VMDKFiles

#if canImport(Glibc)
  import Glibc
#endif

/// How to mount.
public struct MountOptions: Sendable {
  public var mountpoint: String
  /// Extra -o options (allow_other, default_permissions…); `ro` is always added.
  public var fuseOptions: [String] = []
  /// The name shown in /proc/mounts (fsname=).
  public var sourceName: String = "vmdk"
  public var singleThread = false
  /// Which regular files are opened with FOPEN_DIRECT_IO: no page cache in the mount, one
  /// request per read(2), copied once. For one-pass reads of large files; small reads lose
  /// read-ahead.
  public var directIO = DirectIO.defaultChoice
  public init(mountpoint: String) { self.mountpoint = mountpoint }

  /// The -o string given to libfuse. Commas in the source name would split options: they
  /// become underscores.
  public var optionString: String {
    let safe = String(sourceName.map { $0 == "," || $0 == "\\" ? "_" : $0 })
    return (["ro", "fsname=\(safe)", "subtype=vmdk"] + fuseOptions).joined(separator: ",")
  }
}

/// Which files a mount reads without the kernel's page cache (FOPEN_DIRECT_IO).
public enum DirectIO: Sendable, Equatable {
  /// Every file through the page cache.
  case never
  /// Every regular file direct, even when the kernel refused FUSE_DIRECT_IO_ALLOW_MMAP (a
  /// shared mmap then fails with ENODEV).
  case always
  /// Regular files of at least this many bytes, and only when the kernel took
  /// FUSE_DIRECT_IO_ALLOW_MMAP (else none).
  case from(bytes: UInt64)

  /// vmdk-mount's default: files of 16 MiB and more. Those are read once, in large reads, far
  /// more often than small files, and filling the page cache is what limits such a read;
  /// smaller files keep the kernel's read-ahead (small reads) and its cache (reads again).
  public static let defaultChoice = DirectIO.from(bytes: 16 << 20)

  /// cfuse_run's `direct_io_from`.
  var cValue: Int64 {
    switch self {
    case .never: Int64(CFUSE_DIRECT_IO_NEVER)
    case .always: Int64(CFUSE_DIRECT_IO_ALWAYS)
    case .from(let bytes): Int64(clamping: bytes)
    }
  }
}

/// Logs a line to stderr, or to syslog once the daemon has detached.
@Sendable public func mountLog(_ message: String) {
  cfuse_log(message)
}

/// -errno for the kernel: a MountErrno's, EIO for anything else.
private func negativeErrno(_ error: any Error) -> Int32 {
  -((error as? MountErrno)?.code ?? EIO)
}

private func treeOf(_ ctx: UnsafeMutableRawPointer?) -> MountTree? {
  guard let ctx else { return nil }
  return Unmanaged<MountTree>.fromOpaque(ctx).takeUnretainedValue()
}

private func bytes(_ path: UnsafePointer<CChar>?) -> [UInt8] {
  guard let path else { return [] }
  return Array(UnsafeBufferPointer(start: path, count: strlen(path))).map { UInt8(bitPattern: $0) }
}

private func fill(_ t: FileTime, _ sec: inout Int64, _ nsec: inout UInt32) {
  sec = t.seconds
  // A guest's field can claim more than a second of nanoseconds; the kernel wants < 10^9.
  nsec = min(t.nanoseconds, 999_999_999)
}

/// The callbacks libfuse calls (on its threads); each answers 0 or -errno.
func makeOperations(_ tree: MountTree) -> cfuse_ops {
  var ops = cfuse_ops()
  ops.ctx = Unmanaged.passRetained(tree).toOpaque()
  ops.getattr = { ctx, path, out in
    guard let t = treeOf(ctx), let out else { return -EIO }
    do {
      let a = try t.attributes(bytes(path))
      out.pointee.ino = a.inode
      out.pointee.size = a.size
      out.pointee.blocks = a.size / 512 + (a.size % 512 == 0 ? 0 : 1)
      out.pointee.nlink = UInt64(a.linkCount)
      out.pointee.rdev = a.device
      out.pointee.mode = a.mode
      out.pointee.uid = a.uid
      out.pointee.gid = a.gid
      fill(a.accessTime, &out.pointee.atime_sec, &out.pointee.atime_nsec)
      fill(a.modificationTime, &out.pointee.mtime_sec, &out.pointee.mtime_nsec)
      fill(a.changeTime, &out.pointee.ctime_sec, &out.pointee.ctime_nsec)
      return 0
    } catch {
      return negativeErrno(error)
    }
  }
  ops.readdir = { ctx, path, fillContext, filler in
    guard let t = treeOf(ctx), let filler else { return -EIO }
    do {
      for name in try t.list(bytes(path)) {
        let full = name.withUnsafeBufferPointer { b -> Int32 in
          var c = [CChar](repeating: 0, count: b.count + 1)
          for (i, x) in b.enumerated() { c[i] = CChar(bitPattern: x) }
          return filler(fillContext, c)
        }
        if full != 0 { return -ENOMEM }
      }
      return 0
    } catch {
      return negativeErrno(error)
    }
  }
  ops.open = { ctx, path, flags, fh, size in
    guard let t = treeOf(ctx), let fh, let size else { return -EIO }
    do {
      (fh.pointee, size.pointee) = try t.openFile(bytes(path))
      return 0
    } catch {
      return negativeErrno(error)
    }
  }
  ops.read = { ctx, path, fh, buf, size, offset in
    guard let t = treeOf(ctx), let buf else { return Int(-EIO) }
    do {
      let name = String(decoding: bytes(path), as: UTF8.self)
      return try t.read(
        handle: fh, path: name, at: offset, into: UnsafeMutableRawBufferPointer(start: buf, count: size))
    } catch {
      return Int(negativeErrno(error))
    }
  }
  ops.pieces = { ctx, fh, size, offset, out, max in
    guard let t = treeOf(ctx), let out,
      let pieces = t.pieces(handle: fh, at: offset, length: Int(clamping: size), maxPieces: max)
    else { return -1 }
    guard pieces.count <= max else { return -1 }
    for (i, p) in pieces.enumerated() {
      switch p {
      case .file(let fd, let at, let n): out[i] = cfuse_piece(fd: fd, offset: at, length: UInt64(n))
      case .zero(let n): out[i] = cfuse_piece(fd: Int32(CFUSE_PIECE_ZERO), offset: 0, length: UInt64(n))
      case .read(let n): out[i] = cfuse_piece(fd: Int32(CFUSE_PIECE_READ), offset: 0, length: UInt64(n))
      }
    }
    return pieces.count
  }
  ops.readlink = { ctx, path, buf, size in
    guard let t = treeOf(ctx), let buf, size > 0 else { return -EIO }
    do {
      var target = try t.readlink(bytes(path))
      if let nul = target.firstIndex(of: 0) { target.removeSubrange(nul...) }
      let n = min(target.count, size - 1)
      for i in 0..<n { buf[i] = CChar(bitPattern: target[i]) }
      buf[n] = 0
      return 0
    } catch {
      return negativeErrno(error)
    }
  }
  ops.statfs = { ctx, out in
    guard let t = treeOf(ctx), let out else { return -EIO }
    out.pointee.block_size = 4096
    out.pointee.blocks = t.volumeSize / 4096
    out.pointee.files = 0
    out.pointee.name_max = 255
    return 0
  }
  return ops
}

/// Mounts and serves until unmounted or signalled. `open` makes the tree; it runs in the
/// process that serves (after the fork when daemonizing). Returns the exit status: 0 clean
/// end, 1 the mount failed, 2 the image could not be opened or the loop failed.
public enum FuseMount {
  public static func run(
    options: MountOptions, foreground: Bool, open: () throws -> MountTree
  ) -> Int32 {
    var daemonPipe: Int32 = -1
    if !foreground {
      daemonPipe = cfuse_daemon_start()
      if daemonPipe < 0 {
        mountLog("vmdk-mount: cannot go to the background: \(String(cString: strerror(errno)))")
        return 2
      }
    }
    let tree: MountTree
    do {
      tree = try open()
    } catch {
      mountLog("vmdk-mount: \(error)")
      return 2
    }
    let ops = UnsafeMutablePointer<cfuse_ops>.allocate(capacity: 1)
    ops.initialize(to: makeOperations(tree))
    defer {
      if let ctx = ops.pointee.ctx { Unmanaged<MountTree>.fromOpaque(ctx).release() }
      ops.deallocate()
    }
    let pipeBox = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    pipeBox.initialize(to: daemonPipe)
    defer { pipeBox.deallocate() }
    let status = cfuse_run(
      "vmdk-mount", options.mountpoint, options.optionString,
      UInt32(options.singleThread ? CFUSE_SINGLE_THREAD : 0), options.directIO.cValue, ops,
      { ctx in
        guard let fd = ctx?.assumingMemoryBound(to: Int32.self).pointee, fd >= 0 else { return }
        cfuse_daemon_ready(fd)
      }, pipeBox)
    return status
  }
}
