// What every block-layer test shares: a per-test temporary folder, the content pattern the
// builders write, and one assertion for "opening and reading this gives that VMDKError".

// Suites' `.timeLimit(.minutes(20))` are hang guards, not speed checks. Swift Testing runs
// synchronous tests on a pool as wide as the machine's cores; on a 2-core machine two interop
// tests that wait on qemu-io or a server can hold it for minutes, and a suite with a 1-minute
// limit that had started then failed without having run (274 such issues in one full run).
// A test whose point is a bound on time (NonRegularFileTests) measures it in its body.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

/// A folder of its own for one test, removed when the test lets go of it.
final class TempFolder {
  let path: String

  init() throws {
    path = FileManager.default.temporaryDirectory.appendingPathComponent("vmdk-hostile-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }

  deinit { try? FileManager.default.removeItem(atPath: path) }

  /// The path of `name` in this folder (which need not exist).
  func path(_ name: String) -> String { path + "/" + name }

  @discardableResult
  func write(_ name: String, _ bytes: [UInt8]) throws -> String {
    let p = path(name)
    try FileManager.default.createDirectory(
      atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try Data(bytes).write(to: URL(fileURLWithPath: p))
    return p
  }

  @discardableResult
  func write(_ name: String, text: String) throws -> String { try write(name, Array(text.utf8)) }

  @discardableResult
  func symlink(_ name: String, to target: String) throws -> String {
    let p = path(name)
    try FileManager.default.createSymbolicLink(atPath: p, withDestinationPath: target)
    return p
  }
}

/// The bytes the builders store: every sector different and none all zero, so a grain read
/// from the wrong place, or not at all, shows in the comparison.
enum Pattern {
  static func bytes(startingAt byteOffset: UInt64, count: Int, seed: UInt8 = 0) -> [UInt8] {
    (0..<UInt64(count)).map { i in
      let at = byteOffset + i
      return UInt8(truncatingIfNeeded: (at / 512) &* 131 &+ (at % 512) &* 7 &+ UInt64(seed) &+ 1)
    }
  }
}

/// An image a builder produced, as the hostile cases see it: bytes to break.
protocol BuiltImage: Sendable {
  var bytes: [UInt8] { get set }
}

/// An image whose header the hostile cases change field by field.
protocol HeaderedImage: BuiltImage {
  associatedtype Header
  mutating func header(_ change: (inout Header) -> Void)
}

/// The virtual disk a builder meant to write: zeros except where grains were placed.
struct ExpectedDisk {
  var bytes: [UInt8]

  init(sectors: UInt64) { bytes = [UInt8](repeating: 0, count: Int(sectors * 512)) }

  /// Places `data` at byte `offset`, clipped to the disk (the last grain may be partial).
  mutating func place(_ data: [UInt8], at offset: UInt64) {
    let start = Int(offset)
    let n = min(data.count, bytes.count - start)
    guard n > 0 else { return }
    bytes.replaceSubrange(start..<(start + n), with: data.prefix(n))
  }

  var sha256: String {
    let ctx = DigestContext(.sha256)
    bytes.withUnsafeBytes { ctx.update($0) }
    return ctx.finalHex()
  }
}

/// A test argument shown by its name rather than by its (large) value.
struct Named<Value: Sendable>: Sendable, CustomTestStringConvertible {
  let name: String
  let value: Value
  init(_ name: String, _ value: Value) {
    self.name = name
    self.value = value
  }
  var testDescription: String { name }
}

/// Opens `path` and digests the whole disk; expects that to fail with `code`, naming a file
/// (`file`'s last path component, when given) and the byte `offset` (when given).
@discardableResult
func expectVMDKError(
  _ code: VMDKError.Code, opening path: String, options: OpenOptions = OpenOptions(), file: String? = nil,
  offset: UInt64? = nil, sourceLocation: SourceLocation = #_sourceLocation
) -> VMDKError? {
  let error = #expect(throws: VMDKError.self, sourceLocation: sourceLocation) {
    _ = try Disk.open(path, options: options).digest()
  }
  guard let error else { return nil }
  #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
  // Every error names a file: the one a person has to look at.
  #expect(error.file != nil, "\(error)", sourceLocation: sourceLocation)
  if let file, let named = error.file {
    #expect(named.hasSuffix("/" + file) || named == file, "\(error)", sourceLocation: sourceLocation)
  }
  if let offset {
    #expect(error.offset == offset, "\(error)", sourceLocation: sourceLocation)
  }
  return error
}

/// Opens and reads `path`; expects the bytes and the digest of `expected`.
func expectReads(
  _ path: String, as expected: ExpectedDisk, options: OpenOptions = OpenOptions(),
  sourceLocation: SourceLocation = #_sourceLocation
) throws {
  let disk = try Disk.open(path, options: options)
  #expect(disk.capacityBytes == UInt64(expected.bytes.count), sourceLocation: sourceLocation)
  let read = try disk.read(at: 0, count: expected.bytes.count)
  // Compare by digest first, so a mismatch does not print megabytes.
  #expect(try disk.digest() == expected.sha256, sourceLocation: sourceLocation)
  if read != expected.bytes {
    let first = read.indices.first { $0 >= expected.bytes.count || read[$0] != expected.bytes[$0] } ?? read.count
    Issue.record("\(path): first differing byte at \(first)", sourceLocation: sourceLocation)
  }
}

/// A descriptor file in VMware's layout for the given header keys and extent lines.
func descriptorText(
  createType: String, cid: String = "fffffffe", parentCID: String = "ffffffff", parentHint: String? = nil,
  extents: [String]
) -> String {
  var s = "# Disk DescriptorFile\nversion=1\nCID=\(cid)\nparentCID=\(parentCID)\ncreateType=\"\(createType)\"\n"
  if let parentHint { s += "parentFileNameHint=\"\(parentHint)\"\n" }
  s += "\n# Extent description\n" + extents.map { $0 + "\n" }.joined()
  s += "\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"14\"\nddb.adapterType = \"lsilogic\"\n"
  return s
}

/// Little-endian bytes of an integer.
func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

/// Little-endian writes into a byte array at an offset (for mutating built images).
extension Array where Element == UInt8 {
  mutating func put32(_ v: UInt32, at offset: Int) {
    for i in 0..<4 { self[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
  }
  mutating func put64(_ v: UInt64, at offset: Int) {
    for i in 0..<8 { self[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
  }
  /// Zero bytes up to the next multiple of `unit`.
  mutating func pad(to unit: Int) {
    let rest = count % unit
    if rest != 0 { append(contentsOf: [UInt8](repeating: 0, count: unit - rest)) }
  }
}

/// A finished child process.
struct ProcessResult {
  let status: Int32
  let stdout: String
  let stderr: String
}

/// Runs `executable` with `arguments` and waits for it.
func run(_ executable: String, _ arguments: [String]) throws -> ProcessResult {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: executable)
  p.arguments = arguments
  let out = Pipe()
  let err = Pipe()
  p.standardOutput = out
  p.standardError = err
  try p.run()
  // Read before waiting, so a full pipe cannot block the child.
  let o = out.fileHandleForReading.readDataToEndOfFile()
  let e = err.fileHandleForReading.readDataToEndOfFile()
  p.waitUntilExit()
  return ProcessResult(
    status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

/// qemu-img, the second opinion on the COWD and seSparse builders. Outside CI a missing
/// qemu-img skips those tests; with CI=true it fails them.
enum QemuImg {
  static let path: String? = {
    let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/local/bin").split(separator: ":")
    return dirs.map { "\($0)/qemu-img" }.first { FileManager.default.isExecutableFile(atPath: $0) }
  }()
  static let isCI = ProcessInfo.processInfo.environment["CI"] == "true"
  static let shouldRun = path != nil || isCI

  /// The virtual disk of `image` as `qemu-img convert -O raw` writes it.
  static func raw(_ image: String, in folder: TempFolder) throws -> [UInt8] {
    let qemu = try #require(path, "CI=true, but qemu-img is not installed")
    let out = folder.path("qemu-\(UUID().uuidString).raw")
    let r = try run(qemu, ["convert", "-f", "vmdk", "-O", "raw", image, out])
    try #require(r.status == 0, "qemu-img convert \(image): \(r.stderr)")
    defer { try? FileManager.default.removeItem(atPath: out) }
    return Array(try Data(contentsOf: URL(fileURLWithPath: out)))
  }
}

/// Expects `body` to throw a VMDKError with `code`.
func expectCode(_ code: VMDKError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
  let error = #expect(throws: VMDKError.self, sourceLocation: sourceLocation) { try body() }
  if let error { #expect(error.code == code, "\(error)", sourceLocation: sourceLocation) }
}
