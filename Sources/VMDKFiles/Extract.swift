// Extraction: copies files out of any FileSystem into a host folder, keeping modes, times,
// owners (as root), symbolic links, hard links and holes. It never writes outside the
// folder: every name from the guest is checked (no "/", NUL, "." or ".."), every file is
// created relative to an open folder descriptor with O_NOFOLLOW (a symbolic link already in
// the folder is never followed), and nothing is overwritten without `force`.
//
// Threads: the calling thread walks the tree (lists folders, stats every name, creates
// folders, symbolic links, special files and every file with more than one link); the
// contents of the other regular files are written by `workers` writer threads fed through a
// bounded queue. A folder's mode and times are set once its last child is done (by whichever
// thread finishes it), so they are set after everything inside, deepest first. Failures are
// reported in walk order whatever thread met them.
import Dispatch
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
  /// Writer threads besides the caller's (0: everything on the calling thread). Default: one
  /// per processor, at most 8.
  public var workers = ExtractOptions.defaultWorkers
  public static var defaultWorkers: Int { min(8, max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))) }
  /// Folders kept open at most for queued files before the walk waits for the writer threads
  /// to finish what is queued (a folder stays open while a file inside it is queued; many deep
  /// folders with one file each could otherwise exhaust the descriptors).
  var maxOpenFolders = 512
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
  /// Called with the bytes written so far (for a progress bar); calls are serialised, and may
  /// come from a writer thread.
  public var progress: ((UInt64) -> Void)?
  private let rootFD: Int32
  private var linked: [FileID: [UInt8]] = [:]
  private var visited: Set<FileID> = []
  /// The walk's buffer (the writer threads have their own).
  private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ExtractRun.bufferBytes, alignment: 4096)
  /// The running extraction (during `extract(path:)`).
  private var run: ExtractRun?
  /// Walk order: each name gets the next number; failures are sorted by it.
  private var sequence = 0

  /// Opens (creating it if needed) the destination folder.
  public init(fileSystem: any FileSystem, to folder: String, options: ExtractOptions = ExtractOptions()) throws {
    self.fileSystem = fileSystem
    self.options = options
    if mkdir(folder, 0o755) != 0 && errno != EEXIST {
      buffer.deallocate()
      throw VMDKError(.fileAccess, "cannot create \(folder): \(String(cString: strerror(errno)))", file: folder)
    }
    let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else {
      buffer.deallocate()
      throw VMDKError(
        .fileAccess, "cannot open the folder \(folder): \(String(cString: strerror(errno)))", file: folder)
    }
    rootFD = fd
  }

  deinit {
    close(rootFD)
    buffer.deallocate()
  }

  /// Extracts `path` of the file system into the folder under its last name; "/" extracts
  /// the root's contents.
  public func extract(path: String) throws {
    let id = try fileSystem.lookup(path)
    let parts = path.utf8.split(separator: UInt8(ascii: "/")).map(Array.init).filter { $0 != [46] }
    let run = ExtractRun(
      fileSystem: fileSystem, options: options, rootFD: rootFD, progress: progress, bytes: report.bytes)
    self.run = run
    let top = ExtractDirectory(root: rootFD)
    run.start()
    defer {
      run.release(top, buffer: buffer)
      run.finish()
      run.merge(into: &report)
      self.run = nil
    }
    if id == fileSystem.root || parts.isEmpty {
      try extractChildren(of: fileSystem.root, in: top, shownPath: [], depth: 0)
      return
    }
    let name = parts[parts.count - 1]
    let type = try fileSystem.stat(id).type
    extractNode(DirectoryEntry(name: name, id: id, type: type), in: top, shownPath: Array(path.utf8), depth: 1)
  }

  private func nextSequence() -> Int {
    sequence += 1
    return sequence
  }

  /// Whether `name` is safe to create in a folder.
  static func checkName(_ name: [UInt8]) throws {
    func what() -> String { String(decoding: name, as: UTF8.self).debugDescription }
    if name.isEmpty { throw VMDKError(.unsafeName, "an empty name") }
    if name.count > 255 { throw VMDKError(.unsafeName, "a name of \(name.count) bytes is longer than 255") }
    if name == [46] || name == [46, 46] { throw VMDKError(.unsafeName, "the name \(what()) is refused") }
    for b in name {
      if b == UInt8(ascii: "/") { throw VMDKError(.unsafeName, "the name \(what()) contains \"/\"") }
      if b == 0 { throw VMDKError(.unsafeName, "the name \(what()) contains NUL") }
    }
  }

  private func extractChildren(of id: FileID, in folder: ExtractDirectory, shownPath: [UInt8], depth: Int) throws {
    guard visited.insert(id).inserted else {
      throw VMDKError(.corruptFileSystem, "the folder is its own ancestor or listed twice")
    }
    guard depth < WalkLimits.maxDepth else {
      throw VMDKError(.fileSystemLimit, "deeper than the cap of \(WalkLimits.maxDepth) folders")
    }
    for e in try fileSystem.list(id) {
      var shown = shownPath
      shown.reserveCapacity(shownPath.count + 1 + e.name.count)
      shown.append(UInt8(ascii: "/"))
      shown += e.name
      extractNode(e, in: folder, shownPath: shown, depth: depth + 1)
    }
  }

  private func extractNode(_ e: DirectoryEntry, in folder: ExtractDirectory, shownPath: [UInt8], depth: Int) {
    let seq = nextSequence()
    guard let run else { return }
    do {
      try Extractor.checkName(e.name)
      let rel = folder.rel.isEmpty ? e.name : folder.rel + [UInt8(ascii: "/")] + e.name
      let a = try fileSystem.stat(e.id)
      let job = ExtractJob(entry: e, attributes: a, folder: folder, rel: rel, shown: shownPath, seq: seq)
      switch a.type {
      case .directory:
        try makeDirectory(job, depth: depth)
      case .regular where a.linkCount > 1:
        // On this thread: a later name of the same file becomes a hard link to the first,
        // which must exist (and be complete) by then.
        if let first = linked[e.id] {
          try run.create(job) { parentFD, name in
            withCName(first) { f in linkat(rootFD, f, parentFD, name, 0) }
          }
          run.count { $0.hardLinks += 1 }
        } else if run.writeFile(job, buffer: buffer) {
          linked[e.id] = rel
        }
      case .regular:
        run.submit(job, buffer: buffer)
      case .symlink:
        let target = try fileSystem.readlink(e.id)
        guard !target.isEmpty, !target.contains(0) else {
          throw VMDKError(.unsafeName, "a symbolic link target that is empty or contains NUL")
        }
        try run.create(job) { parentFD, name in withCName(target) { symlinkat($0, parentFD, name) } }
        try run.setMetadata(a, fd: nil, parentFD: folder.fd, name: e.name, rel: rel)
        run.count { $0.symlinks += 1 }
      case .fifo, .characterDevice, .blockDevice:
        let kind: mode_t = a.type == .fifo ? S_IFIFO : a.type == .characterDevice ? S_IFCHR : S_IFBLK
        try run.create(job) { parentFD, name in mknodat(parentFD, name, kind | 0o600, dev_t(a.device ?? 0)) }
        try run.setMetadata(a, fd: nil, parentFD: folder.fd, name: e.name, rel: rel)
        run.count { $0.others += 1 }
      case .socket, .unknown:
        throw VMDKError(.notSupported, "a \(a.type.rawValue) is not restored")
      }
    } catch {
      run.fail(seq, shownPath, error)
    }
  }

  private func makeDirectory(_ job: ExtractJob, depth: Int) throws {
    let parentFD = job.folder.fd
    let name = job.entry.name
    if let run, run.openFolders > options.maxOpenFolders {
      run.finish()
      run.start()
    }
    if withCName(name, { mkdirat(parentFD, $0, 0o700) }) != 0 && errno != EEXIST {
      throw errnoError("cannot create the folder", job.rel)
    }
    let fd = withCName(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    guard fd >= 0 else {
      throw VMDKError(
        .fileExists,
        "\(String(decoding: job.rel, as: UTF8.self)) exists and is not a folder (a symbolic link is not followed)")
    }
    guard let run else {
      close(fd)
      return
    }
    run.count { $0.directories += 1 }
    run.opened()
    let folder = ExtractDirectory(fd: fd, job: job)
    run.hold(job.folder)
    do {
      try extractChildren(of: job.entry.id, in: folder, shownPath: job.shown, depth: depth)
    } catch {
      run.fail(nextSequence(), job.shown, error)
    }
    // Its own metadata comes after everything inside it, in walk order.
    folder.seq = nextSequence()
    run.release(folder, buffer: buffer)
  }
}

/// Calls `body` with `name` as a C string.
func withCName<T>(_ name: [UInt8], _ body: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
  var c = name
  c.append(0)
  return try c.withUnsafeBufferPointer { b in
    try b.withMemoryRebound(to: CChar.self) { p in
      guard let base = p.baseAddress else { return try body("") }
      return try body(base)
    }
  }
}

func errnoError(_ what: String, _ rel: [UInt8]) -> VMDKError {
  VMDKError(.fileAccess, "\(what) \(String(decoding: rel, as: UTF8.self)): \(String(cString: strerror(errno)))")
}

/// One name to create: its entry, attributes, folder, path below the destination (`rel`),
/// path in the file system (`shown`) and place in the walk.
struct ExtractJob: @unchecked Sendable {
  let entry: DirectoryEntry
  let attributes: FileAttributes
  let folder: ExtractDirectory
  let rel: [UInt8]
  let shown: [UInt8]
  let seq: Int
}

/// A destination folder being filled: its descriptor stays open while anything inside it is
/// pending (the walk's listing, queued files, subfolders not yet finished).
final class ExtractDirectory: @unchecked Sendable {
  let fd: Int32
  /// nil for the top folder, which is the caller's (its metadata is not set, its descriptor
  /// not closed).
  let job: ExtractJob?
  /// Guarded by ExtractRun.folders.
  var pending = 1
  /// Set by the walk before its last release.
  var seq = 0
  var rel: [UInt8] { job?.rel ?? [] }

  init(root fd: Int32) {
    self.fd = fd
    job = nil
  }

  init(fd: Int32, job: ExtractJob) {
    self.fd = fd
    self.job = job
  }
}

/// The part of an extraction shared by the walk and the writer threads.
final class ExtractRun: @unchecked Sendable {
  static let bufferBytes = 1 << 20
  /// Batches queued at most per writer thread.
  static let queuedPerWorker = 4
  /// Files go to the writer threads in batches of up to this many files or bytes (one
  /// hand-over per batch, not per file).
  static let batchFiles = 32
  static let batchBytes: UInt64 = 1 << 20

  let fileSystem: any FileSystem
  let options: ExtractOptions
  let rootFD: Int32
  let progress: ((UInt64) -> Void)?

  private struct Tally {
    var report = ExtractReport()
    var failures: [(seq: Int, path: String, error: VMDKError)] = []
    var warnings: [(seq: Int, text: String)] = []
  }
  private let tally: Locked<Tally>
  /// The process's umask (nil when /proc does not say).
  let umask = ExtractRun.currentUmask()
  /// Bytes written so far, with the progress callback called under the same lock.
  private let written: Locked<UInt64>
  /// Guards every ExtractDirectory's `pending`, and `openCount`.
  let folders = Locked(())
  private var openCount = 0
  /// Folders open now (below the top one).
  var openFolders: Int { folders.withLock { _ in openCount } }
  /// Counts a folder opened by the walk.
  func opened() { folders.withLock { _ in openCount += 1 } }

  private let queue = Locked((jobs: [[ExtractJob]?](), head: 0))
  /// The batch being gathered by the walk (the walk's thread only).
  private var batch: [ExtractJob] = []
  private var batchSize: UInt64 = 0
  private let available = DispatchSemaphore(value: 0)
  private let space: DispatchSemaphore
  private var threads: [pthread_t] = []

  init(
    fileSystem: any FileSystem, options: ExtractOptions, rootFD: Int32, progress: ((UInt64) -> Void)?, bytes: UInt64
  ) {
    self.fileSystem = fileSystem
    self.options = options
    self.rootFD = rootFD
    self.progress = progress
    tally = Locked(Tally())
    written = Locked(bytes)
    space = DispatchSemaphore(value: max(1, options.workers) * Self.queuedPerWorker)
  }

  /// The umask from /proc/self/status ("Umask:\t0022"), read without changing it (umask(2)
  /// would change it for every thread of the process for a moment).
  static func currentUmask() -> mode_t? {
    let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: 4096)
    let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return nil }
    let text = String(decoding: bytes[0..<n], as: UTF8.self)
    for line in text.split(separator: "\n") where line.hasPrefix("Umask:") {
      let digits = line.dropFirst("Umask:".count).filter { $0 != " " && $0 != "\t" }
      return mode_t(digits, radix: 8)
    }
    return nil
  }

  // MARK: Writer threads

  /// Starts the writer threads (none when `options.workers` is 0 or no thread can start).
  func start() {
    for _ in 0..<max(0, options.workers) {
      let box = Unmanaged.passRetained(ThreadBody { [self] in work() }).toOpaque()
      var thread = pthread_t()
      let r = pthread_create(
        &thread, nil,
        { arg in
          guard let arg else { return nil }
          Unmanaged<ThreadBody>.fromOpaque(arg).takeRetainedValue().body()
          return nil
        }, box)
      if r == 0 {
        threads.append(thread)
      } else {
        Unmanaged<ThreadBody>.fromOpaque(box).release()
      }
    }
  }

  /// Queues a regular file for a writer thread, or writes it here when there is none.
  func submit(_ job: ExtractJob, buffer: UnsafeMutableRawBufferPointer) {
    guard !threads.isEmpty else {
      _ = writeFile(job, buffer: buffer)
      return
    }
    hold(job.folder)
    batch.append(job)
    batchSize += job.attributes.size
    if batch.count >= Self.batchFiles || batchSize >= Self.batchBytes { flush() }
  }

  /// Queues the gathered batch (waiting while the queue is full).
  private func flush() {
    guard !batch.isEmpty else { return }
    space.wait()
    let b = batch
    queue.withLock { $0.jobs.append(b) }
    available.signal()
    batch = []
    batchSize = 0
  }

  /// Lets the writer threads finish the queue, and waits for them.
  func finish() {
    flush()
    for _ in threads {
      queue.withLock { $0.jobs.append(nil) }
      available.signal()
    }
    for t in threads { pthread_join(t, nil) }
    threads = []
  }

  private func work() {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.bufferBytes, alignment: 4096)
    defer { buffer.deallocate() }
    while true {
      available.wait()
      let next: [ExtractJob]?? = queue.withLock { q in
        guard q.head < q.jobs.count else { return .none }
        let j = q.jobs[q.head]
        q.jobs[q.head] = nil
        q.head += 1
        // Drop the consumed prefix now and then, so that the array does not grow with the walk.
        if q.head >= 1024 && q.head * 2 >= q.jobs.count {
          q.jobs.removeFirst(q.head)
          q.head = 0
        }
        return .some(j)
      }
      guard case .some(.some(let jobs)) = next else { return }
      space.signal()
      for job in jobs {
        _ = writeFile(job, buffer: buffer)
        release(job.folder, buffer: buffer)
      }
    }
  }

  // MARK: Folders

  func hold(_ folder: ExtractDirectory) {
    folders.withLock { _ in folder.pending += 1 }
  }

  /// Drops one hold on `folder`; the last one sets its streams, mode and times, closes it and
  /// drops its hold on its parent.
  func release(_ folder: ExtractDirectory, buffer: UnsafeMutableRawBufferPointer) {
    var current: ExtractDirectory? = folder
    while let f = current {
      let done = folders.withLock { _ in
        f.pending -= 1
        return f.pending == 0
      }
      guard done, let job = f.job else { return }
      do {
        try restoreStreams(job, fd: f.fd, buffer: buffer)
        try setMetadata(job.attributes, fd: f.fd, parentFD: job.folder.fd, name: job.entry.name, rel: job.rel)
      } catch {
        fail(f.seq, job.shown, error)
      }
      close(f.fd)
      folders.withLock { _ in openCount -= 1 }
      current = job.folder
    }
  }

  // MARK: Report

  func fail(_ seq: Int, _ shown: [UInt8], _ error: any Error) {
    let e = error as? VMDKError ?? VMDKError(.failure, "\(error)")
    let path = String(decoding: shown, as: UTF8.self)
    tally.withLock { $0.failures.append((seq, path, e)) }
  }

  func warn(_ seq: Int, _ text: String) {
    tally.withLock { $0.warnings.append((seq, text)) }
  }

  func count(_ body: (inout ExtractReport) -> Void) {
    tally.withLock { body(&$0.report) }
  }

  private func wrote(_ n: Int) {
    written.withLock { total in
      total += UInt64(n)
      progress?(total)
    }
  }

  /// Adds what this run did to `report`, failures and warnings in walk order.
  func merge(into report: inout ExtractReport) {
    let t = tally.withLock { $0 }
    report.files += t.report.files
    report.directories += t.report.directories
    report.symlinks += t.report.symlinks
    report.hardLinks += t.report.hardLinks
    report.others += t.report.others
    report.bytes += t.report.bytes
    report.streams += t.report.streams
    let failures = t.failures.enumerated().sorted { ($0.element.seq, $0.offset) < ($1.element.seq, $1.offset) }
    report.failures += failures.map { ($0.element.path, $0.element.error) }
    let warnings = t.warnings.enumerated().sorted { ($0.element.seq, $0.offset) < ($1.element.seq, $1.offset) }
    report.warnings += warnings.map { $0.element.text }
  }

  // MARK: Creating names

  /// Runs `make(parentFD, name)` (symlinkat, mknodat, linkat); when the name exists, removes
  /// it first if forced (never a folder), else reports it.
  func create(_ job: ExtractJob, _ make: (Int32, UnsafePointer<CChar>) -> Int32) throws {
    let parentFD = job.folder.fd
    if withCName(job.entry.name, { make(parentFD, $0) }) == 0 { return }
    guard errno == EEXIST else { throw errnoError(createVerb(job), job.rel) }
    try clearForNew(job.entry.name, parentFD: parentFD, rel: job.rel)
    guard withCName(job.entry.name, { make(parentFD, $0) }) == 0 else { throw errnoError(createVerb(job), job.rel) }
  }

  private func createVerb(_ job: ExtractJob) -> String {
    switch job.attributes.type {
    case .symlink: "cannot create the symbolic link"
    case .regular: "cannot create the hard link"
    default: "cannot create the special file"
    }
  }

  /// Removes an existing non-folder entry when forced; otherwise reports that it exists.
  func clearForNew(_ name: [UInt8], parentFD: Int32, rel: [UInt8]) throws {
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

  /// Creates `name` in `parentFD` for writing (O_EXCL, O_NOFOLLOW), replacing an existing
  /// non-folder entry only when forced.
  private func createFile(_ name: [UInt8], parentFD: Int32, rel: [UInt8], mode: mode_t) throws -> Int32 {
    let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
    var fd = withCName(name) { openat(parentFD, $0, flags, mode) }
    if fd < 0 && errno == EEXIST {
      try clearForNew(name, parentFD: parentFD, rel: rel)
      fd = withCName(name) { openat(parentFD, $0, flags, mode) }
    }
    guard fd >= 0 else { throw errnoError("cannot create", rel) }
    return fd
  }

  /// Writes `n` bytes of `buffer` at `offset` of `fd`.
  private func writeAll(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ n: Int, at offset: UInt64, rel: [UInt8])
    throws
  {
    var done = 0
    while done < n {
      let w = pwrite(fd, buffer.baseAddress.map { $0 + done }, n - done, off_t(offset) + off_t(done))
      if w < 0 {
        if errno == EINTR { continue }
        throw errnoError("cannot write", rel)
      }
      guard w > 0 else { throw errnoError("cannot write", rel) }
      done += w
    }
  }

  /// Creates and fills a regular file (holes left holes), then its streams, mode and times.
  /// A failure is reported (false), and the rest goes on.
  func writeFile(_ job: ExtractJob, buffer: UnsafeMutableRawBufferPointer) -> Bool {
    let a = job.attributes
    var bytes: UInt64 = 0
    // The mode given to open when the umask leaves it whole and it has no set-id or sticky
    // bit (which fchown would clear): then no fchmod.
    let mode = mode_t(a.mode & 0o7777)
    let modeAtOpen = umask.map { mode & ~0o777 == 0 && mode & $0 == 0 } ?? false
    do {
      let fd = try createFile(job.entry.name, parentFD: job.folder.fd, rel: job.rel, mode: modeAtOpen ? mode : 0o600)
      defer { close(fd) }
      var end: UInt64 = 0
      for r in try fileSystem.dataRanges(job.entry.id) {
        var pos = r.lowerBound
        while pos < r.upperBound {
          let want = Int(min(UInt64(buffer.count), r.upperBound - pos))
          let n = try fileSystem.read(
            job.entry.id, at: pos, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
          guard n > 0 else { break }
          try writeAll(fd, buffer, n, at: pos, rel: job.rel)
          pos += UInt64(n)
          end = pos
          bytes += UInt64(n)
          wrote(n)
        }
      }
      if end != a.size {
        guard ftruncate(fd, off_t(a.size)) == 0 else { throw errnoError("cannot set the size of", job.rel) }
      }
      try restoreStreams(job, fd: fd, buffer: buffer)
      try setMetadata(a, fd: fd, parentFD: job.folder.fd, name: job.entry.name, rel: job.rel, modeIsSet: modeAtOpen)
      count {
        $0.files += 1
        $0.bytes += bytes
      }
      return true
    } catch {
      count { $0.bytes += bytes }
      fail(job.seq, job.shown, error)
      return false
    }
  }

  /// Linux's cap on one extended attribute value (XATTR_SIZE_MAX).
  static let maxXattrValue: UInt64 = 65536

  /// The named streams of an NTFS file or folder, and its Windows attributes, as the options
  /// ask. A stream that cannot be kept is a failure of that stream only (`path:stream`),
  /// or a warning when the host refuses its size as an extended attribute.
  func restoreStreams(_ job: ExtractJob, fd: Int32, buffer: UnsafeMutableRawBufferPointer) throws {
    guard options.streams != .none, fileSystem.hasNamedStreams else { return }
    let e = job.entry
    let rel = job.rel
    let fs = fileSystem
    let shown = String(decoding: rel, as: UTF8.self)
    if options.streams == .xattr, let attrib = try fs.windowsAttributes(e.id) {
      let hex = String(attrib, radix: 16)
      let text = Array(("0x" + String(repeating: "0", count: max(0, 8 - hex.count)) + hex).utf8)
      let r = text.withUnsafeBytes { c_fsetxattr(fd, "user.ntfs.attrib", $0.baseAddress, $0.count, 0) }
      if r != 0 { warn(job.seq, "\(shown): Windows attributes not kept: \(String(cString: strerror(errno)))") }
    }
    for s in try fs.streams(e.id) {
      do {
        switch options.streams {
        case .none: return
        case .xattr: try streamAsXattr(fs, e.id, s, fd: fd, shown: shown, seq: job.seq)
        case .sidecar: try streamAsSidecar(fs, job, s, buffer: buffer)
        }
      } catch {
        fail(job.seq, rel + [UInt8(ascii: ":")] + s.name, error)
      }
    }
  }

  private func streamAsXattr(
    _ fs: any FileSystem, _ id: FileID, _ s: NamedStream, fd: Int32, shown: String, seq: Int
  ) throws {
    let key = Array("user.".utf8) + s.name
    guard !s.name.contains(0), key.count <= 255 else {
      throw VMDKError(
        .unsafeName, "the stream name \(s.displayName.debugDescription) cannot be an extended attribute name")
    }
    guard s.size <= Self.maxXattrValue else {
      warn(
        seq,
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
      warn(
        seq,
        "\(shown):\(s.displayName): a stream of \(s.size) bytes does not fit an extended attribute here (\(why)); not kept (use --streams sidecar)"
      )
      return
    }
    count { $0.streams += 1 }
  }

  private func streamAsSidecar(
    _ fs: any FileSystem, _ job: ExtractJob, _ s: NamedStream, buffer: UnsafeMutableRawBufferPointer
  ) throws {
    let e = job.entry
    let a = job.attributes
    let parentFD = job.folder.fd
    let rel = job.rel
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
      let n = try fs.readStream(
        e.id, named: s.displayName, at: pos, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
      guard n > 0 else { break }
      // A run of zeros (a sparse stream such as $BadClus:$Bad) is left a hole.
      if buffer[0..<n].allSatisfy({ $0 == 0 }) {
        pos += UInt64(n)
        continue
      }
      try writeAll(fd, buffer, n, at: pos, rel: sideRel)
      pos += UInt64(n)
      count { $0.bytes += UInt64(n) }
    }
    guard ftruncate(fd, off_t(pos)) == 0 else { throw errnoError("cannot set the size of", sideRel) }
    var plain = a
    plain.mode = a.mode & 0o666
    try setMetadata(plain, fd: fd, parentFD: parentFD, name: name, rel: sideRel)
    count { $0.streams += 1 }
  }

  /// Owner (as root), mode and times: through `fd` when there is one, else by name without
  /// following a symbolic link.
  func setMetadata(
    _ a: FileAttributes, fd: Int32?, parentFD: Int32, name: [UInt8], rel: [UInt8], modeIsSet: Bool = false
  ) throws {
    if options.keepOwners, let uid = a.uid, let gid = a.gid {
      let r =
        fd.map { fchown($0, uid, gid) } ?? withCName(name) { fchownat(parentFD, $0, uid, gid, AT_SYMLINK_NOFOLLOW) }
      guard r == 0 else { throw errnoError("cannot set the owner of", rel) }
    }
    if modeIsSet {
      // Given to open.
    } else if let fd {
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

/// A writer thread's code, handed to pthread_create.
private final class ThreadBody {
  let body: () -> Void
  init(_ body: @escaping () -> Void) { self.body = body }
}
