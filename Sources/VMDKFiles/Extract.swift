// Extraction: copies files out of any FileSystem into a host folder, keeping modes, times,
// owners (as root), symbolic links, hard links and holes. It never writes outside the
// folder: every name from the guest is checked (no "/", NUL, "." or ".."), every file is
// created relative to an open folder descriptor with O_NOFOLLOW (a symbolic link already in
// the folder is never followed), and nothing is overwritten without `force`.
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

// <sys/xattr.h> is not part of Glibc's Swift module: fsetxattr declared by hand.
@_silgen_name("fsetxattr")
private func c_fsetxattr(
  _ fd: Int32, _ name: UnsafePointer<CChar>, _ value: UnsafeRawPointer?, _ size: Int, _ flags: Int32
) -> Int32

public struct ExtractOptions: Sendable {
  /// Replace existing files (never an existing folder; a symbolic link is replaced, not followed).
  public var force = false
  /// Set owners from the file system (default: when running as root).
  public var keepOwners = geteuid() == 0
  /// What becomes of NTFS named data streams (other file systems have none).
  public var streams: StreamMode = .none
  public init() {}
}

/// How `extract` keeps NTFS alternate data streams and Windows attributes.
public enum StreamMode: String, Sendable, CaseIterable {
  /// Streams are not restored (the default).
  case none
  /// Each stream as a `user.STREAM` extended attribute of its file (skipped with a warning when
  /// the host file system refuses the size), and the Windows attributes as `user.ntfs.attrib`
  /// ("0x" and 8 hex digits).
  case xattr
  /// Each stream as a file `NAME:STREAM` beside its file (refused when that name is unsafe).
  case sidecar
}

/// What an extraction did, and what it could not do.
public struct ExtractReport: Sendable {
  public var files = 0
  public var directories = 0
  public var symlinks = 0
  public var hardLinks = 0
  public var others = 0
  public var bytes: UInt64 = 0
  /// Named streams restored (as extended attributes or sidecar files).
  public var streams = 0
  /// Streams skipped (too big for an extended attribute), each with its reason.
  public var warnings: [String] = []
  /// Each file not restored, by its path in the file system, with the reason.
  public var failures: [(path: String, error: VMDKError)] = []
  public init() {}
}

public final class Extractor {
  public let fileSystem: any FileSystem
  public let options: ExtractOptions
  public private(set) var report = ExtractReport()
  /// Called with the bytes written so far (for a progress bar).
  public var progress: ((UInt64) -> Void)?
  private let rootFD: Int32
  private var linked: [FileID: [UInt8]] = [:]
  private var visited: Set<FileID> = []
  private var buffer = [UInt8](repeating: 0, count: 1 << 20)

  /// Opens (creating it if needed) the destination folder.
  public init(fileSystem: any FileSystem, to folder: String, options: ExtractOptions = ExtractOptions()) throws {
    self.fileSystem = fileSystem
    self.options = options
    if mkdir(folder, 0o755) != 0 && errno != EEXIST {
      throw VMDKError(.fileAccess, "cannot create \(folder): \(String(cString: strerror(errno)))", file: folder)
    }
    let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else {
      throw VMDKError(
        .fileAccess, "cannot open the folder \(folder): \(String(cString: strerror(errno)))", file: folder)
    }
    rootFD = fd
  }

  deinit { close(rootFD) }

  /// Extracts `path` of the file system into the folder under its last name; "/" extracts
  /// the root's contents.
  public func extract(path: String) throws {
    let id = try fileSystem.lookup(path)
    let parts = path.utf8.split(separator: UInt8(ascii: "/")).map(Array.init).filter { $0 != [46] }
    if id == fileSystem.root || parts.isEmpty {
      try extractChildren(of: fileSystem.root, fd: rootFD, rel: [], shownPath: [], depth: 0)
      return
    }
    let name = parts[parts.count - 1]
    let type = try fileSystem.stat(id).type
    extractNode(
      DirectoryEntry(name: name, id: id, type: type), parentFD: rootFD, rel: [], shownPath: Array(path.utf8), depth: 1)
  }

  private func fail(_ shown: [UInt8], _ error: any Error) {
    let e =
      error as? VMDKError ?? VMDKError(.failure, "\(error)")
    report.failures.append((String(decoding: shown, as: UTF8.self), e))
  }

  private func errnoError(_ what: String, _ rel: [UInt8]) -> VMDKError {
    VMDKError(.fileAccess, "\(what) \(String(decoding: rel, as: UTF8.self)): \(String(cString: strerror(errno)))")
  }

  /// Whether `name` is safe to create in a folder.
  static func checkName(_ name: [UInt8]) throws {
    let what = String(decoding: name, as: UTF8.self).debugDescription
    if name.isEmpty { throw VMDKError(.unsafeName, "an empty name") }
    if name == [46] || name == [46, 46] { throw VMDKError(.unsafeName, "the name \(what) is refused") }
    if name.contains(UInt8(ascii: "/")) { throw VMDKError(.unsafeName, "the name \(what) contains \"/\"") }
    if name.contains(0) { throw VMDKError(.unsafeName, "the name \(what) contains NUL") }
    if name.count > 255 { throw VMDKError(.unsafeName, "a name of \(name.count) bytes is longer than 255") }
  }

  private func extractChildren(of id: FileID, fd: Int32, rel: [UInt8], shownPath: [UInt8], depth: Int) throws {
    guard visited.insert(id).inserted else {
      throw VMDKError(.corruptFileSystem, "the folder is its own ancestor or listed twice")
    }
    guard depth < WalkLimits.maxDepth else {
      throw VMDKError(.fileSystemLimit, "deeper than the cap of \(WalkLimits.maxDepth) folders")
    }
    for e in try fileSystem.list(id) {
      let shown = shownPath + [UInt8(ascii: "/")] + e.name
      extractNode(e, parentFD: fd, rel: rel, shownPath: shown, depth: depth + 1)
    }
  }

  private func withCName<T>(_ name: [UInt8], _ body: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
    try (name + [0]).withUnsafeBufferPointer { b in
      try b.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
    }
  }

  /// Removes an existing non-folder entry when forced; otherwise reports that it exists.
  private func clearForNew(_ name: [UInt8], parentFD: Int32, rel: [UInt8]) throws {
    var st = Glibc.stat()
    let exists = withCName(name) { fstatat(parentFD, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0
    guard exists else { return }
    guard options.force else {
      throw VMDKError(.fileExists, "\(String(decoding: rel, as: UTF8.self)) exists (use --force to replace it)")
    }
    if st.st_mode & S_IFMT == S_IFDIR {
      throw VMDKError(.fileExists, "\(String(decoding: rel, as: UTF8.self)) exists and is a folder")
    }
    guard withCName(name, { unlinkat(parentFD, $0, 0) }) == 0 else { throw errnoError("cannot remove", rel) }
  }

  private func extractNode(_ e: DirectoryEntry, parentFD: Int32, rel parentRel: [UInt8], shownPath: [UInt8], depth: Int)
  {
    do {
      try Extractor.checkName(e.name)
      let rel = parentRel.isEmpty ? e.name : parentRel + [UInt8(ascii: "/")] + e.name
      let a = try fileSystem.stat(e.id)
      switch a.type {
      case .directory:
        try makeDirectory(e, a, parentFD: parentFD, rel: rel, shownPath: shownPath, depth: depth)
      case .regular:
        try makeFile(e, a, parentFD: parentFD, rel: rel)
      case .symlink:
        let target = try fileSystem.readlink(e.id)
        guard !target.isEmpty, !target.contains(0) else {
          throw VMDKError(.unsafeName, "a symbolic link target that is empty or contains NUL")
        }
        try clearForNew(e.name, parentFD: parentFD, rel: rel)
        let r = withCName(target) { t in withCName(e.name) { symlinkat(t, parentFD, $0) } }
        guard r == 0 else { throw errnoError("cannot create the symbolic link", rel) }
        try setMetadata(a, fd: nil, parentFD: parentFD, name: e.name, rel: rel)
        report.symlinks += 1
      case .fifo, .characterDevice, .blockDevice:
        try clearForNew(e.name, parentFD: parentFD, rel: rel)
        let kind: mode_t = a.type == .fifo ? S_IFIFO : a.type == .characterDevice ? S_IFCHR : S_IFBLK
        let r = withCName(e.name) { mknodat(parentFD, $0, kind | 0o600, dev_t(a.device ?? 0)) }
        guard r == 0 else { throw errnoError("cannot create the special file", rel) }
        try setMetadata(a, fd: nil, parentFD: parentFD, name: e.name, rel: rel)
        report.others += 1
      case .socket, .unknown:
        throw VMDKError(.notSupported, "a \(a.type.rawValue) is not restored")
      }
    } catch {
      fail(shownPath, error)
    }
  }

  private func makeDirectory(
    _ e: DirectoryEntry, _ a: FileAttributes, parentFD: Int32, rel: [UInt8], shownPath: [UInt8], depth: Int
  ) throws {
    if withCName(e.name, { mkdirat(parentFD, $0, 0o700) }) != 0 && errno != EEXIST {
      throw errnoError("cannot create the folder", rel)
    }
    let fd = withCName(e.name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    guard fd >= 0 else {
      throw VMDKError(
        .fileExists,
        "\(String(decoding: rel, as: UTF8.self)) exists and is not a folder (a symbolic link is not followed)")
    }
    defer { close(fd) }
    report.directories += 1
    do {
      try extractChildren(of: e.id, fd: fd, rel: rel, shownPath: shownPath, depth: depth)
    } catch {
      fail(shownPath, error)
    }
    try restoreStreams(e, a, fd: fd, parentFD: parentFD, rel: rel)
    try setMetadata(a, fd: fd, parentFD: parentFD, name: e.name, rel: rel)
  }

  private func makeFile(_ e: DirectoryEntry, _ a: FileAttributes, parentFD: Int32, rel: [UInt8]) throws {
    if a.linkCount > 1, let first = linked[e.id] {
      try clearForNew(e.name, parentFD: parentFD, rel: rel)
      let r = withCName(first) { f in withCName(e.name) { linkat(rootFD, f, parentFD, $0, 0) } }
      guard r == 0 else { throw errnoError("cannot create the hard link", rel) }
      report.hardLinks += 1
      return
    }
    try clearForNew(e.name, parentFD: parentFD, rel: rel)
    let fd = withCName(e.name) {
      openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
    }
    guard fd >= 0 else { throw errnoError("cannot create", rel) }
    defer { close(fd) }
    for r in try fileSystem.dataRanges(e.id) {
      var pos = r.lowerBound
      while pos < r.upperBound {
        let want = Int(min(UInt64(buffer.count), r.upperBound - pos))
        let n = try buffer.withUnsafeMutableBytes {
          try fileSystem.read(e.id, at: pos, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<want]))
        }
        guard n > 0 else { break }
        var done = 0
        while done < n {
          let w = buffer.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, n - done, off_t(pos) + off_t(done)) }
          if w < 0 {
            if errno == EINTR { continue }
            throw errnoError("cannot write", rel)
          }
          done += w
        }
        pos += UInt64(n)
        report.bytes += UInt64(n)
        progress?(report.bytes)
      }
    }
    guard ftruncate(fd, off_t(a.size)) == 0 else { throw errnoError("cannot set the size of", rel) }
    try restoreStreams(e, a, fd: fd, parentFD: parentFD, rel: rel)
    try setMetadata(a, fd: fd, parentFD: parentFD, name: e.name, rel: rel)
    report.files += 1
    if a.linkCount > 1 { linked[e.id] = rel }
  }

  /// Linux's cap on one extended attribute value (XATTR_SIZE_MAX).
  static let maxXattrValue: UInt64 = 65536

  /// The named streams of an NTFS file or folder, and its Windows attributes, as the options
  /// ask. A stream that cannot be kept is a failure of that stream only (`path:stream`),
  /// or a warning when the host refuses its size as an extended attribute.
  private func restoreStreams(_ e: DirectoryEntry, _ a: FileAttributes, fd: Int32, parentFD: Int32, rel: [UInt8])
    throws
  {
    guard options.streams != .none, fileSystem.hasNamedStreams else { return }
    let fs = fileSystem
    let shown = String(decoding: rel, as: UTF8.self)
    if options.streams == .xattr, let attrib = try fs.windowsAttributes(e.id) {
      let hex = String(attrib, radix: 16)
      let text = Array(("0x" + String(repeating: "0", count: max(0, 8 - hex.count)) + hex).utf8)
      let r = text.withUnsafeBytes { c_fsetxattr(fd, "user.ntfs.attrib", $0.baseAddress, $0.count, 0) }
      if r != 0 { report.warnings.append("\(shown): Windows attributes not kept: \(String(cString: strerror(errno)))") }
    }
    for s in try fs.streams(e.id) {
      do {
        switch options.streams {
        case .none: return
        case .xattr: try streamAsXattr(fs, e.id, s, fd: fd, shown: shown)
        case .sidecar: try streamAsSidecar(fs, e, a, s, parentFD: parentFD, rel: rel)
        }
      } catch {
        fail(rel + [UInt8(ascii: ":")] + s.name, error)
      }
    }
  }

  private func streamAsXattr(_ fs: any FileSystem, _ id: FileID, _ s: NamedStream, fd: Int32, shown: String)
    throws
  {
    let key = Array("user.".utf8) + s.name
    guard !s.name.contains(0), key.count <= 255 else {
      throw VMDKError(
        .unsafeName, "the stream name \(s.displayName.debugDescription) cannot be an extended attribute name")
    }
    guard s.size <= Self.maxXattrValue else {
      report.warnings.append(
        "\(shown):\(s.displayName): a stream of \(s.size) bytes is above the \(Self.maxXattrValue)-byte cap of an extended attribute; not kept (use --streams sidecar)"
      )
      return
    }
    var value = [UInt8](repeating: 0, count: Int(s.size))
    var got = 0
    while got < value.count {
      let n = try value.withUnsafeMutableBytes {
        try fs.readStream(
          id, named: s.displayName, at: UInt64(got), into: UnsafeMutableRawBufferPointer(rebasing: $0[got...]))
      }
      guard n > 0 else { break }
      got += n
    }
    let r = withCName(key) { k in value.withUnsafeBytes { c_fsetxattr(fd, k, $0.baseAddress, got, 0) } }
    if r != 0 {
      let why = String(cString: strerror(errno))
      guard errno == ENOSPC || errno == E2BIG || errno == ERANGE else {
        throw VMDKError(.fileAccess, "cannot set the extended attribute \(shown):\(s.displayName): \(why)")
      }
      report.warnings.append(
        "\(shown):\(s.displayName): a stream of \(s.size) bytes does not fit an extended attribute here (\(why)); not kept (use --streams sidecar)"
      )
      return
    }
    report.streams += 1
  }

  private func streamAsSidecar(
    _ fs: any FileSystem, _ e: DirectoryEntry, _ a: FileAttributes, _ s: NamedStream, parentFD: Int32,
    rel: [UInt8]
  ) throws {
    let name = e.name + [UInt8(ascii: ":")] + s.name
    try Extractor.checkName(name)
    try Extractor.checkName(s.name)
    let sideRel = rel + [UInt8(ascii: ":")] + s.name
    try clearForNew(name, parentFD: parentFD, rel: sideRel)
    let fd = withCName(name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
    guard fd >= 0 else { throw errnoError("cannot create", sideRel) }
    defer { close(fd) }
    var pos: UInt64 = 0
    while pos < s.size {
      let want = Int(min(UInt64(buffer.count), s.size - pos))
      let n = try buffer.withUnsafeMutableBytes {
        try fs.readStream(
          e.id, named: s.displayName, at: pos, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<want]))
      }
      guard n > 0 else { break }
      // A run of zeros (a sparse stream such as $BadClus:$Bad) is left a hole.
      if buffer.withUnsafeBytes({ b in b[0..<n].allSatisfy { $0 == 0 } }) {
        pos += UInt64(n)
        continue
      }
      var done = 0
      while done < n {
        let w = buffer.withUnsafeBytes { b in
          pwrite(fd, b.baseAddress.map { $0 + done }, n - done, off_t(pos) + off_t(done))
        }
        if w < 0 {
          if errno == EINTR { continue }
          throw errnoError("cannot write", sideRel)
        }
        done += w
      }
      pos += UInt64(n)
      report.bytes += UInt64(n)
    }
    guard ftruncate(fd, off_t(pos)) == 0 else { throw errnoError("cannot set the size of", sideRel) }
    var plain = a
    plain.mode = a.mode & 0o666
    try setMetadata(plain, fd: fd, parentFD: parentFD, name: name, rel: sideRel)
    report.streams += 1
  }

  /// Owner (as root), mode and times: through `fd` when there is one, else by name without
  /// following a symbolic link.
  private func setMetadata(_ a: FileAttributes, fd: Int32?, parentFD: Int32, name: [UInt8], rel: [UInt8]) throws {
    if options.keepOwners, let uid = a.uid, let gid = a.gid {
      let r =
        fd.map { fchown($0, uid, gid) } ?? withCName(name) { fchownat(parentFD, $0, uid, gid, AT_SYMLINK_NOFOLLOW) }
      guard r == 0 else { throw errnoError("cannot set the owner of", rel) }
    }
    if let fd {
      guard fchmod(fd, mode_t(a.mode & 0o7777)) == 0 else { throw errnoError("cannot set the mode of", rel) }
    } else if a.type != .symlink {
      let r = withCName(name) { fchmodat(parentFD, $0, mode_t(a.mode & 0o7777), 0) }
      guard r == 0 else { throw errnoError("cannot set the mode of", rel) }
    }
    func spec(_ t: FileTime?) -> timespec {
      guard let t else { return timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2) }
      return timespec(tv_sec: Int(t.seconds), tv_nsec: Int(t.nanoseconds))
    }
    var times = [spec(a.accessTime ?? a.modificationTime), spec(a.modificationTime)]
    let r =
      fd.map { f in times.withUnsafeMutableBufferPointer { futimens(f, $0.baseAddress) } }
      ?? withCName(name) { n in
        times.withUnsafeMutableBufferPointer { utimensat(parentFD, n, $0.baseAddress, AT_SYMLINK_NOFOLLOW) }
      }
    guard r == 0 else { throw errnoError("cannot set the times of", rel) }
  }
}
