// What the flat and sparse writers share: output file names as qemu derives them, the
// sequential-write contract's checks, fast all-zero detection, a staging buffer that turns
// many small appends into a few large pwrite calls, and preallocation.

import Foundation
import VMDKFormat
import VMDKTransport

/// The names of a new image's files, derived from the path the user gave as qemu's
/// `filename_decompose` does: `dir/name.vmdk` gives the prefix `dir/name` and the postfix
/// `.vmdk`, so extents are `dir/name-flat.vmdk`, `dir/name-s001.vmdk`, ...
struct OutputName {
  /// The path as given (the descriptor's file, or the only file).
  let path: String
  /// The path without its final extension.
  let prefix: String
  /// The final extension with its dot, or "" when the name has none.
  let postfix: String

  init(_ path: String) {
    self.path = path
    let slash = path.lastIndex(of: "/")
    let nameStart = slash.map { path.index(after: $0) } ?? path.startIndex
    // A dot that starts the name (".disk") is not an extension.
    if let dot = path[nameStart...].lastIndex(of: "."), dot != nameStart {
      prefix = String(path[..<dot])
      postfix = String(path[dot...])
    } else {
      prefix = path
      postfix = ""
    }
  }

  /// The path of the extent file with `suffix` ("-flat", "-s001").
  func extentPath(_ suffix: String) -> String { prefix + suffix + postfix }

  /// The file name alone, as extent lines name files in the descriptor's folder.
  static func baseName(_ path: String) -> String {
    path.lastIndex(of: "/").map { String(path[path.index(after: $0)...]) } ?? path
  }

  /// Throws `invalidArgument` unless the file name of `path` can stand in a descriptor's
  /// extent line: between double quotes on one line, so without a quote or a control
  /// character (a line end among them).
  static func checkDescriptorName(_ path: String) throws {
    let name = baseName(path)
    guard !name.isEmpty,
      !name.unicodeScalars.contains(where: { $0 == "\"" || $0.properties.generalCategory == .control })
    else {
      throw VMDKError(
        .invalidArgument,
        "file name \(name.prefix(80).debugDescription): a descriptor cannot name it (a quote, a line end or a control character)",
        file: path)
    }
  }

  /// `-s001`, `-f002`, ...: 1-based, at least three digits (qemu's `%03d`).
  static func splitSuffix(_ letter: Character, _ index: Int) -> String {
    let n = String(index + 1)
    return "-\(letter)" + String(repeating: "0", count: max(0, 3 - n.count)) + n
  }
}

/// The checks every writer makes on a `write` call, and where the last one ended.
struct SequentialWrites {
  /// Bytes the image holds (whole sectors).
  let limitBytes: UInt64
  /// The end of the previous write; the next must start here or later.
  private(set) var end: UInt64 = 0

  init(limitBytes: UInt64) { self.limitBytes = limitBytes }

  /// Checks a write of `count` bytes at `offset` and records its end.
  mutating func accept(offset: UInt64, count: Int, file: String) throws {
    guard offset % 512 == 0 else {
      throw VMDKError(.invalidArgument, "write at byte \(offset): not a multiple of 512", file: file, offset: offset)
    }
    guard offset >= end else {
      throw VMDKError(
        .invalidArgument, "write at byte \(offset) goes back before the end of the previous one (\(end))",
        file: file, offset: offset)
    }
    let (last, o) = offset.addingReportingOverflow(UInt64(count))
    guard !o, last <= limitBytes else {
      throw VMDKError(
        .outOfRange, "write of \(count) bytes at \(offset) ends past the capacity (\(limitBytes) bytes)",
        file: file, offset: offset)
    }
    end = last
  }
}

/// Bytes bound for consecutive offsets of one file, gathered so that many small appends
/// become one large pwrite. A write that does not continue the staged bytes flushes them
/// first; one at least as large as the buffer goes straight to the file.
final class StagedWriter {
  /// The buffer's size: large enough that the per-call cost vanishes, small beside a grain cache.
  static let capacity = 4 << 20
  private let buffer = UnsafeMutableRawPointer.allocate(byteCount: StagedWriter.capacity, alignment: 4096)
  private var file: LocalFile? = nil
  private var start: UInt64 = 0
  private var count = 0

  deinit { buffer.deallocate() }

  /// Writes `bytes` at `offset` of `target`, now or later (by `flush`).
  func write(_ target: LocalFile, at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
    guard bytes.count > 0 else { return }
    if let f = file, f !== target || offset != start + UInt64(count) || count + bytes.count > Self.capacity {
      try flush()
    }
    if bytes.count >= Self.capacity {
      try target.write(at: offset, from: bytes)
      return
    }
    if count == 0 {
      file = target
      start = offset
    }
    UnsafeMutableRawBufferPointer(start: buffer + count, count: bytes.count).copyMemory(from: bytes)
    count += bytes.count
  }

  /// Writes whatever is staged.
  func flush() throws {
    guard let f = file, count > 0 else {
      file = nil
      count = 0
      return
    }
    let n = count
    file = nil
    count = 0
    try f.write(at: start, from: UnsafeRawBufferPointer(start: buffer, count: n))
  }
}

/// Allocates `bytes` of blocks to `file` (ESXi's thick `vmfs` disks are preallocated). Where
/// the file system cannot (no `fallocate`, EOPNOTSUPP) the file is only sized and stays
/// sparse: reads give zeros either way. A full disk is an error.
func preallocate(_ file: LocalFile, bytes: UInt64) throws {
  try file.truncate(to: bytes)
  #if os(Linux)
    // glibc declares fallocate only under _GNU_SOURCE, which Swift's Glibc module does not
    // define; posix_fallocate would instead write a byte per block where it is unsupported.
    typealias Fallocate = @convention(c) (Int32, Int32, Int64, Int64) -> Int32
    guard bytes > 0, let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "fallocate") else { return }
    let fallocate = unsafeBitCast(symbol, to: Fallocate.self)
    var r: Int32
    repeat { r = fallocate(file.fileDescriptor, 0, 0, Int64(bytes)) } while r != 0 && errno == EINTR
    if r != 0 && (errno == ENOSPC || errno == EDQUOT || errno == EFBIG) {
      throw VMDKError(
        .diskFull, "cannot preallocate \(bytes) bytes: \(String(cString: strerror(errno)))", file: file.name)
    }
  #endif
}
