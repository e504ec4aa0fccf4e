// Helpers shared by the interop tests: temporary folders, running external tools, the
// reference results qemu-img gives (raw digest, block map), and finding vmdk-inspect and
// TestImages. The tests compare the library against qemu-img, the reference decoder.

import Dispatch
import Foundation
import Testing
import VMDKBlock
import VMDKTransport

// MARK: Temporary folders

/// Runs `body` with a fresh, empty folder that is removed afterwards, whatever happens.
/// Every test gets its own, because Swift Testing runs tests (and arguments) in parallel.
func withTemporaryFolder<T>(_ body: (String) throws -> T) throws -> T {
  let base = FileManager.default.temporaryDirectory.path
  var template = Array("\(base)/vmdk-interop.XXXXXX".utf8CString)
  guard let made = mkdtemp(&template) else {
    throw ToolFailure("mkdtemp failed: \(String(cString: strerror(errno)))")
  }
  let folder = String(cString: made)
  defer { try? FileManager.default.removeItem(atPath: folder) }
  return try body(folder)
}

// MARK: Processes

/// A failure of the test set-up (a tool that exits non-zero, a missing file): thrown, so that
/// Swift Testing records it as the test's failure with the message.
struct ToolFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}

/// What a finished process left behind.
struct ProcessResult {
  let status: Int32
  let stdout: Data
  let stderr: Data
  var output: String { String(decoding: stdout, as: UTF8.self) }
  var errorOutput: String { String(decoding: stderr, as: UTF8.self) }
}

/// Bytes read on another thread; the DispatchGroup wait orders the write before the read.
private final class DataBox: @unchecked Sendable {
  var data = Data()
}

/// Taken around runProcess's pipe and spawn.
private let spawnLock = NSLock()

/// Runs `executable` with `arguments` and waits, capturing both outputs. Both pipes are
/// drained at once so that a chatty tool cannot block on a full pipe.
///
/// posix_spawn and waitpid, not Foundation's Process: its waitUntilExit missed a child's exit
/// once in a clean-clone CI run (istat left a zombie and the files matrix waited for good), a
/// race of its SIGCHLD monitoring with the many processes the tests start from several
/// threads. The pipes are close-on-exec, so that a child spawned at the same time on another
/// thread does not hold their write ends open. A child killed by a signal has status
/// 128 + the signal, as a shell reports it.
func runProcess(_ executable: String, _ arguments: [String]) throws -> ProcessResult {
  var outPipe: [Int32] = [-1, -1]
  var errPipe: [Int32] = [-1, -1]
  // pipe2 is not imported: pipe, then close-on-exec, under a lock that every runProcess
  // spawn also takes, so that no other runProcess child is spawned between the two.
  spawnLock.lock()
  guard pipe(&outPipe) == 0 else {
    spawnLock.unlock()
    throw ToolFailure("pipe: \(String(cString: strerror(errno)))")
  }
  guard pipe(&errPipe) == 0 else {
    spawnLock.unlock()
    close(outPipe[0])
    close(outPipe[1])
    throw ToolFailure("pipe: \(String(cString: strerror(errno)))")
  }
  for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
  posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
  let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
  defer { for a in argv { free(a) } }
  var pid: pid_t = 0
  let rc = posix_spawn(&pid, executable, &actions, nil, argv, environ)
  spawnLock.unlock()
  close(outPipe[1])
  close(errPipe[1])
  let stdoutHandle = FileHandle(fileDescriptor: outPipe[0], closeOnDealloc: true)
  let stderrHandle = FileHandle(fileDescriptor: errPipe[0], closeOnDealloc: true)
  guard rc == 0 else { throw ToolFailure("cannot run \(executable): \(String(cString: strerror(rc)))") }
  let errBox = DataBox()
  let group = DispatchGroup()
  DispatchQueue.global().async(group: group) { errBox.data = stderrHandle.readDataToEndOfFile() }
  let stdout = stdoutHandle.readDataToEndOfFile()
  group.wait()
  var status: Int32 = 0
  while waitpid(pid, &status, 0) < 0 {
    guard errno == EINTR else { throw ToolFailure("waitpid \(executable): \(String(cString: strerror(errno)))") }
  }
  // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import.
  let code = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
  return ProcessResult(status: code, stdout: stdout, stderr: errBox.data)
}

/// Runs a tool and throws, with its stderr, unless it exits 0.
@discardableResult
func runChecked(_ executable: String, _ arguments: [String]) throws -> ProcessResult {
  let result = try runProcess(executable, arguments)
  guard result.status == 0 else {
    let command = ([executable] + arguments).joined(separator: " ")
    throw ToolFailure("`\(command)` exited \(result.status): \(result.errorOutput)")
  }
  return result
}

// MARK: Required tools

/// The path of `name` on PATH. A missing tool fails the test (the thrown error is recorded as
/// a failing issue), never a silent pass: the results of these tests are only worth something
/// when the reference tool actually ran. On CI (CI=true) the message says the CI image is
/// broken; elsewhere it says how to install the tool.
func requireTool(_ name: String) throws -> String {
  let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
  for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
    return "\(dir)/\(name)"
  }
  if ProcessInfo.processInfo.environment["CI"] == "true" {
    throw ToolFailure("\(name) is missing on CI: the CI job must run Tools/setup.sh first")
  }
  throw ToolFailure("\(name) is not installed: run `bash Tools/setup.sh` (qemu-utils, libvmdk-utils)")
}

// MARK: qemu-img and qemu-io

enum Qemu {
  /// Runs `qemu-img ARGS`, which must succeed.
  @discardableResult
  static func img(_ arguments: String...) throws -> ProcessResult {
    try img(arguments)
  }

  /// Runs `qemu-img ARGS`, which must succeed.
  @discardableResult
  static func img(_ arguments: [String]) throws -> ProcessResult {
    try runChecked(try requireTool("qemu-img"), arguments)
  }

  /// `qemu-img create -f vmdk [-o OPTIONS] PATH SIZE`.
  static func create(_ path: String, size: UInt64, options: [String] = []) throws {
    let o = options.isEmpty ? [] : ["-o", options.joined(separator: ",")]
    try img(["create", "-q", "-f", "vmdk"] + o + [path, String(size)])
  }

  /// Runs each qemu-io command (`write -P 0x5a OFFSET LEN`, `write -z OFFSET LEN`) on a VMDK.
  static func io(_ path: String, _ commands: [String]) throws {
    guard !commands.isEmpty else { return }
    try runChecked(try requireTool("qemu-io"), ["-f", "vmdk"] + commands.flatMap { ["-c", $0] } + [path])
  }

  /// SHA-256 of the virtual disk as qemu-img decodes it: `qemu-img convert -O raw` into
  /// `scratch`, then the digest of that file. The raw file is sparse and deleted afterwards.
  static func rawSHA256(_ image: String, scratch: String) throws -> String {
    let raw = "\(scratch)/reference-\(UUID().uuidString).raw"
    defer { try? FileManager.default.removeItem(atPath: raw) }
    try img("convert", "-O", "raw", image, raw)
    return try fileDigest(raw, .sha256)
  }

  /// `qemu-img map --output=json` as records.
  static func map(_ image: String) throws -> [MapRecord] {
    try MapRecord.parse(try img("map", "--output=json", image).stdout)
  }
}

/// The digest of a file's bytes. OpenSSL (through the library's DigestContext) rather than
/// sha256sum: it uses the CPU's SHA instructions, which matters for the 5 GiB images.
func fileDigest(_ path: String, _ algorithm: DigestContext.Algorithm) throws -> String {
  guard let handle = FileHandle(forReadingAtPath: path) else { throw ToolFailure("cannot open \(path)") }
  defer { try? handle.close() }
  let context = DigestContext(algorithm)
  while let chunk = try handle.read(upToCount: 8 << 20), !chunk.isEmpty {
    chunk.withUnsafeBytes { context.update($0) }
  }
  return context.finalHex()
}

// MARK: Block maps

/// One entry of `qemu-img map --output=json`, or the same facts from `Disk.blockStatus()`.
struct MapRecord: Equatable, CustomStringConvertible {
  var start: UInt64
  var length: UInt64
  var depth: Int
  var present: Bool
  var zero: Bool
  var data: Bool
  var offset: UInt64?

  init(start: UInt64, length: UInt64, depth: Int, present: Bool, zero: Bool, data: Bool, offset: UInt64?) {
    self.start = start
    self.length = length
    self.depth = depth
    self.present = present
    self.zero = zero
    self.data = data
    self.offset = offset
  }

  init(_ s: BlockStatus) {
    self.init(
      start: s.start, length: s.length, depth: s.depth, present: s.present, zero: s.zero, data: s.data,
      offset: s.offset)
  }

  var description: String {
    "{\(start)+\(length) depth \(depth) present \(present) zero \(zero) data \(data) offset \(offset.map(String.init) ?? "-")}"
  }

  /// Parses qemu-img map's JSON (also what `vmdk-inspect map --json` prints). Keys other than
  /// the seven compared ("compressed") are ignored.
  static func parse(_ json: Data) throws -> [MapRecord] {
    guard let array = try JSONSerialization.jsonObject(with: json) as? [[String: Any]] else {
      throw ToolFailure("map output is not a JSON array of objects: \(String(decoding: json, as: UTF8.self))")
    }
    return try array.map { o in
      func number(_ key: String) throws -> UInt64 {
        guard let n = o[key] as? NSNumber else { throw ToolFailure("map entry without \(key): \(o)") }
        return n.uint64Value
      }
      func flag(_ key: String) throws -> Bool {
        guard let b = o[key] as? Bool else { throw ToolFailure("map entry without \(key): \(o)") }
        return b
      }
      return MapRecord(
        start: try number("start"), length: try number("length"), depth: Int(try number("depth")),
        present: try flag("present"), zero: try flag("zero"), data: try flag("data"),
        offset: o["offset"] == nil ? nil : try number("offset"))
    }
  }
}

/// Expects our map to equal qemu's, entry by entry and field by field, offset included
/// (qemu gives none for compressed stream grains, and neither does the library). Flat extents
/// need no exception either: both ask the file system for holes (SEEK_HOLE), so a hole in a
/// flat file is "zero": true, "data": true in both. One issue naming the first difference.
func expectSameMap(
  _ ours: [MapRecord], _ qemu: [MapRecord], _ what: String, sourceLocation: SourceLocation = #_sourceLocation
) {
  guard ours != qemu else { return }
  let at = zip(ours, qemu).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(ours.count, qemu.count)
  Issue.record(
    """
    \(what): block status differs from qemu-img map at entry \(at) (ours \(ours.count) entries, qemu \(qemu.count))
      ours: \(ours.dropFirst(at).prefix(3))
      qemu: \(qemu.dropFirst(at).prefix(3))
    """, sourceLocation: sourceLocation)
}

// MARK: Library checks

/// Opens `image` and checks that the library agrees with qemu-img on it: the SHA-256 of the
/// whole virtual disk and the block map. Returns qemu's map, for checks on the fixture itself.
@discardableResult
func expectAgreesWithQemu(
  _ image: String, scratch: String, options: OpenOptions = OpenOptions(),
  sourceLocation: SourceLocation = #_sourceLocation
) throws -> [MapRecord] {
  let disk = try Disk.open(image, options: options)
  #expect(
    try disk.digest(.sha256) == Qemu.rawSHA256(image, scratch: scratch), "\(image): digest",
    sourceLocation: sourceLocation)
  let qemuMap = try Qemu.map(image)
  expectSameMap(try disk.blockStatus().map(MapRecord.init), qemuMap, image, sourceLocation: sourceLocation)
  return qemuMap
}

/// Runs `body`, which must throw a VMDKError with `code`; returns the error for more checks.
@discardableResult
func expectVMDKError(
  _ code: VMDKError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> VMDKError? {
  do {
    try body()
    Issue.record("expected a VMDKError \(code), but nothing was thrown", sourceLocation: sourceLocation)
  } catch let e as VMDKError {
    #expect(e.code == code, "wrong error: \(e)", sourceLocation: sourceLocation)
    return e
  } catch {
    Issue.record("expected a VMDKError \(code), got \(error)", sourceLocation: sourceLocation)
  }
  return nil
}

// MARK: Locations

/// The package root: three levels up from this file (Tests/InteropTests/Support.swift).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent().path

/// The real-world images and their digests.
let testImagesFolder = "\(packageRoot)/TestImages"

/// The vmdk-inspect binary SwiftPM built next to the test bundle (the test target depends on
/// it).
func vmdkInspectPath() throws -> String { try builtToolPath("vmdk-inspect") }

/// A tool SwiftPM built next to the test bundle: walk up from the running test binary until a
/// folder holds `name`.
func builtToolPath(_ name: String) throws -> String {
  for start in [CommandLine.arguments[0], Bundle.main.bundlePath] {
    var folder = URL(fileURLWithPath: start).standardizedFileURL
    while folder.path != "/" {
      let candidate = folder.appendingPathComponent(name).path
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
      folder.deleteLastPathComponent()
    }
  }
  throw ToolFailure("\(name) not found above \(CommandLine.arguments[0])")
}

/// Runs vmdk-inspect, which must exit 0.
@discardableResult
func vmdkInspect(_ arguments: String...) throws -> ProcessResult {
  try runChecked(try vmdkInspectPath(), arguments)
}

// MARK: Files

/// Replaces, in place, the first occurrence of `old` with `new` (same length) in the first
/// `within` bytes of the file: edits an embedded descriptor without moving anything.
func patchFile(_ path: String, replacing old: String, with new: String, within: Int = 64 << 10) throws {
  precondition(old.utf8.count == new.utf8.count, "an in-place patch keeps the length")
  guard let handle = FileHandle(forUpdatingAtPath: path) else { throw ToolFailure("cannot open \(path)") }
  defer { try? handle.close() }
  let head = Array(try handle.read(upToCount: within) ?? Data())
  let needle = Array(old.utf8)
  guard head.count >= needle.count,
    let at = (0...(head.count - needle.count)).first(where: { head[$0..<($0 + needle.count)].elementsEqual(needle) })
  else { throw ToolFailure("\(old) not found in \(path)") }
  try handle.seek(toOffset: UInt64(at))
  try handle.write(contentsOf: Data(new.utf8))
}

/// The first value of `key = value` (or `key="value"`) in the text of a file's first 64 KiB:
/// reads what qemu wrote into a descriptor independently of the library's parser.
func descriptorValue(_ key: String, inFile path: String) throws -> String? {
  guard let handle = FileHandle(forReadingAtPath: path) else { throw ToolFailure("cannot open \(path)") }
  defer { try? handle.close() }
  let text = String(decoding: try handle.read(upToCount: 64 << 10) ?? Data(), as: UTF8.self)
  for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
    let parts = line.split(separator: "=", maxSplits: 1)
    guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == key else { continue }
    return parts[1].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
  }
  return nil
}
