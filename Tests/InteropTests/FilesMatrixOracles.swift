// The reference tools of the file-level restore matrix, run on the raw conversion of each
// disk: sleuthkit (mmls, fls -r -p -o, istat, icat), debugfs rdump (ext) and mcopy -s (FAT).
// Their outputs are parsed here into plain values that FilesMatrixTests compares with ours.

import Foundation
import Glibc
import Testing
import VMDKBlock

/// One name as a tool or our reader sees it.
struct MatrixListed: Equatable, CustomStringConvertible {
  var inode: UInt64
  /// sleuthkit's letter: r, d, l, p, c, b, s.
  var type: String
  var description: String { "\(type) \(inode)" }
}

/// What `istat` says of one file.
struct MatrixIStat: Equatable, CustomStringConvertible {
  var type: String = "?"
  var mode: UInt32?
  var uid: UInt32?
  var gid: UInt32?
  var size: UInt64?
  var links: UInt32?
  var readOnly: Bool?
  /// Times as "seconds.nanoseconds" (ext) or "seconds" (FAT), keyed a/m/c/cr.
  var times: [String: String] = [:]
  var description: String {
    "\(type) mode \(mode.map { String($0, radix: 8) } ?? "-") \(uid.map(String.init) ?? "-"):\(gid.map(String.init) ?? "-") size \(size.map(String.init) ?? "-") links \(links.map(String.init) ?? "-") ro \(readOnly.map(String.init) ?? "-") times \(times.sorted { $0.key < $1.key })"
  }
}

/// A file of a restored folder (ours or the oracle's), by relative path.
struct MatrixScanned: Equatable, CustomStringConvertible {
  /// f, d, l, p, other.
  var type: String
  var size: UInt64
  var mode: UInt32
  var uid: UInt32
  var gid: UInt32
  var inode: UInt64
  var links: UInt64
  var blocks: Int64
  var mtime: Int64
  var mtimeNanoseconds: Int
  var md5: String?
  var target: [UInt8]?
  var description: String {
    "\(type) size \(size) mode \(String(mode, radix: 8)) \(uid):\(gid) mtime \(mtime).\(mtimeNanoseconds) md5 \(md5 ?? "-") target \(target.map { "\($0.count) bytes" } ?? "-")"
  }
}

enum MatrixOracle {
  /// Runs a tool with TZ=UTC (sleuthkit and mtools print or apply local time).
  @discardableResult
  static func utc(_ tool: String, _ arguments: [String]) throws -> ProcessResult {
    try runChecked("/usr/bin/env", ["TZ=UTC", "MTOOLS_SKIP_CHECK=1", try requireTool(tool)] + arguments)
  }

  /// `fls -r -p -o OFFSET`: path -> (inode, type), without sleuthkit's virtual entries
  /// ($MBR, $FAT1, $OrphanFiles, the volume label).
  static func fls(_ raw: String, offsetSectors: UInt64) throws -> [String: MatrixListed] {
    let r = try utc("fls", ["-r", "-p", "-o", String(offsetSectors), raw])
    var out: [String: MatrixListed] = [:]
    for line in r.output.split(separator: "\n") {
      guard let tab = line.firstIndex(of: "\t") else { continue }
      let head = line[..<tab]
      let path = String(line[line.index(after: tab)...])
      let parts = head.split(separator: " ")
      guard parts.count == 2, !path.hasPrefix("$"), !head.hasPrefix("v/v"), !head.hasPrefix("V/V"),
        !path.hasSuffix("(Volume Label Entry)")
      else { continue }
      let type = parts[0].split(separator: "/").last.map(String.init) ?? "?"
      guard let inode = UInt64(parts[1].dropLast()) else { continue }
      out[path] = MatrixListed(inode: inode, type: type)
    }
    return out
  }

  /// "2026-12-07 09:54:49.123456789 (UTC)" -> "1796637289.123456789" (nanoseconds only
  /// when printed).
  static func parseTime(_ text: Substring) -> String? {
    let t = text.trimmingCharacters(in: .whitespaces)
    guard t.hasSuffix("(UTC)") else { return nil }
    let fields = t.split(separator: " ")
    guard fields.count >= 2 else { return nil }
    let date = fields[0].split(separator: "-").compactMap { Int($0) }
    let clock = fields[1].split(separator: ".")
    let hms = clock[0].split(separator: ":").compactMap { Int($0) }
    guard date.count == 3, hms.count == 3 else { return nil }
    if date[0] == 0 { return "0" }
    var tmv = tm()
    tmv.tm_year = Int32(date[0] - 1900)
    tmv.tm_mon = Int32(date[1] - 1)
    tmv.tm_mday = Int32(date[2])
    tmv.tm_hour = Int32(hms[0])
    tmv.tm_min = Int32(hms[1])
    tmv.tm_sec = Int32(hms[2])
    let seconds = Int64(timegm(&tmv))
    if clock.count > 1, let ns = Int(clock[1]) { return "\(seconds).\(ns)" }
    return "\(seconds)"
  }

  /// "-rwsr-x--x" -> (type letter, permission bits).
  static func parseMode(_ s: Substring) -> (String, UInt32)? {
    let c = Array(s)
    guard c.count == 10 else { return nil }
    let type: String =
      switch c[0] {
      case "-", "r": "r"
      case "d": "d"
      case "l": "l"
      case "p": "p"
      case "c": "c"
      case "b": "b"
      case "s": "s"
      default: "?"
      }
    var mode: UInt32 = 0
    let letters: [Character] = ["r", "w", "x"]
    for i in 0..<9 {
      let ch = c[1 + i]
      let bit = UInt32(1) << UInt32(8 - i)
      if i % 3 == 2 {
        if ch == "x" || ch == "s" || ch == "t" { mode |= bit }
        if ch == "s" || ch == "S" { mode |= i == 2 ? 0o4000 : 0o2000 }
        if ch == "t" || ch == "T" { mode |= 0o1000 }
      } else if ch == letters[i % 3] {
        mode |= bit
      }
    }
    return (type, mode)
  }

  /// `istat -o OFFSET RAW INODE`, parsed.
  static func istat(_ raw: String, offsetSectors: UInt64, inode: UInt64) throws -> MatrixIStat {
    let text = try utc("istat", ["-o", String(offsetSectors), raw, String(inode)]).output
    var s = MatrixIStat()
    for line in text.split(separator: "\n") {
      func after(_ key: String) -> Substring? {
        line.hasPrefix(key) ? line.dropFirst(key.count).drop { $0 == " " || $0 == "\t" } : nil
      }
      if let v = after("uid / gid:") {
        let ids = v.split(separator: "/").map { UInt32($0.trimmingCharacters(in: .whitespaces)) }
        if ids.count == 2 { (s.uid, s.gid) = (ids[0], ids[1]) }
      } else if let v = after("mode:"), let (t, m) = parseMode(v) {
        (s.type, s.mode) = (t, m)
      } else if let v = after("size:") ?? after("Size:") {
        s.size = s.size ?? UInt64(v)
      } else if let v = after("num of links:") {
        s.links = UInt32(v)
      } else if let v = after("File Attributes:") {
        s.type = v.contains("Directory") ? "d" : "r"
        s.readOnly = v.contains("Read Only")
      } else {
        for (key, name) in [
          ("Accessed:", "a"), ("File Modified:", "m"), ("Inode Modified:", "c"), ("File Created:", "cr"),
          ("Written:", "m"), ("Created:", "cr"),
        ] {
          if s.times[name] == nil, let v = after(key), let t = parseTime(v) { s.times[name] = t }
        }
      }
    }
    return s
  }

  /// `icat -o OFFSET RAW INODE`'s md5.
  static func icatMD5(_ raw: String, offsetSectors: UInt64, inode: UInt64) throws -> String {
    let ctx = DigestContext(.md5)
    try stream(try requireTool("icat"), ["-o", String(offsetSectors), raw, String(inode)]) { chunk in
      chunk.withUnsafeBytes { ctx.update($0) }
    }
    return ctx.finalHex()
  }

  /// Runs a tool and hands its standard output to `body` chunk by chunk.
  static func stream(_ executable: String, _ arguments: [String], _ body: (Data) -> Void) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let fd = out.fileHandleForReading.fileDescriptor
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
      let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else { break }
      body(Data(buffer[0..<n]))
    }
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw ToolFailure("\(executable) \(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
    }
  }

  /// Every entry below `root` (lstat, not following links): regular files with their md5
  /// (the files in sparse/ get the block digest instead), symlinks with their targets.
  static func scan(_ root: String) throws -> [String: MatrixScanned] {
    var out: [String: MatrixScanned] = [:]
    var pending = [""]
    while let rel = pending.popLast() {
      let dirPath = rel.isEmpty ? root : "\(root)/\(rel)"
      guard let d = opendir(dirPath) else { throw ToolFailure("cannot list \(dirPath)") }
      defer { closedir(d) }
      while let ent = readdir(d) {
        let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
          String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
        if name == "." || name == ".." { continue }
        let p = rel.isEmpty ? name : "\(rel)/\(name)"
        var st = stat()
        guard lstat("\(root)/\(p)", &st) == 0 else { throw ToolFailure("cannot lstat \(root)/\(p)") }
        let kind = st.st_mode & S_IFMT
        var f = MatrixScanned(
          type: kind == S_IFREG ? "f" : kind == S_IFDIR ? "d" : kind == S_IFLNK ? "l" : kind == S_IFIFO ? "p" : "other",
          size: UInt64(st.st_size), mode: UInt32(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
          inode: UInt64(st.st_ino), links: UInt64(st.st_nlink), blocks: Int64(st.st_blocks),
          mtime: Int64(st.st_mtim.tv_sec), mtimeNanoseconds: st.st_mtim.tv_nsec)
        switch kind {
        case S_IFREG:
          f.md5 =
            p.hasPrefix("sparse/") ? try blockDigest(ofFile: "\(root)/\(p)") : try fileDigest("\(root)/\(p)", .md5)
        case S_IFDIR:
          pending.append(p)
        case S_IFLNK:
          var buffer = [Int8](repeating: 0, count: 8192)
          let n = readlink("\(root)/\(p)", &buffer, buffer.count)
          f.target = n > 0 ? buffer[0..<n].map { UInt8(bitPattern: $0) } : []
        default:
          break
        }
        out[p] = f
      }
    }
    return out
  }

  /// The block digest of a file, reading only its data (SEEK_DATA / SEEK_HOLE).
  static func blockDigest(ofFile path: String) throws -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw ToolFailure("cannot open \(path)") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw ToolFailure("cannot stat \(path)") }
    let size = Int64(st.st_size)
    var digest = BlockDigest()
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var pos: Int64 = 0
    while pos < size {
      let data = lseek(fd, off_t(pos), 3)  // SEEK_DATA
      guard data >= 0 else { break }
      let hole = min(Int64(lseek(fd, off_t(data), 4)), size)  // SEEK_HOLE
      var at = Int64(data) & ~4095
      while at < hole {
        let want = Int(min(Int64(buffer.count), hole - at))
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(at)) }
        guard n > 0 else { throw ToolFailure("pread \(path) failed") }
        digest.skip(to: UInt64(at))
        buffer.withUnsafeBytes { digest.add(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        at += Int64(n)
      }
      pos = hole
    }
    digest.skip(to: UInt64(size))
    return digest.finish()
  }
}

/// A digest of a file's content that holes and zeros do not cost: md5 over (offset, bytes)
/// of every 4 KiB block that is not all zeros, then the length. Two files have the same
/// block digest exactly when they have the same bytes.
struct BlockDigest {
  private let ctx = DigestContext(.md5)
  private var pending = [UInt8]()
  private(set) var offset: UInt64 = 0
  private static let zeros = [UInt8](repeating: 0, count: 4096)

  /// Moves to `target` (>= the bytes seen), as if zeros came in between.
  mutating func skip(to target: UInt64) {
    guard target > offset else { return }
    if !pending.isEmpty {
      let fill = Int(min(UInt64(4096 - pending.count), target - offset))
      pending += [UInt8](repeating: 0, count: fill)
      offset += UInt64(fill)
      if pending.count == 4096 { flush() }
      guard pending.isEmpty, target > offset else { return }
    }
    let aligned = target & ~4095
    offset = aligned
    if target > aligned {
      pending = [UInt8](repeating: 0, count: Int(target - aligned))
      offset = target
    }
  }

  mutating func add(_ data: Data) { data.withUnsafeBytes { add($0) } }

  mutating func add(_ bytes: UnsafeRawBufferPointer) {
    var i = 0
    if !pending.isEmpty {
      let n = min(4096 - pending.count, bytes.count)
      pending += UnsafeRawBufferPointer(rebasing: bytes[0..<n])
      i = n
      offset += UInt64(n)
      if pending.count == 4096 { flush() }
    }
    while bytes.count - i >= 4096 {
      let block = UnsafeRawBufferPointer(rebasing: bytes[i..<(i + 4096)])
      let isZero = Self.zeros.withUnsafeBytes { memcmp($0.baseAddress!, block.baseAddress!, 4096) == 0 }
      if !isZero {
        var at = offset
        withUnsafeBytes(of: &at) { ctx.update($0) }
        ctx.update(block)
      }
      offset += 4096
      i += 4096
    }
    if i < bytes.count {
      pending += UnsafeRawBufferPointer(rebasing: bytes[i...])
      offset += UInt64(bytes.count - i)
    }
  }

  private mutating func flush() {
    let start = offset - UInt64(pending.count)
    if pending.contains(where: { $0 != 0 }) {
      var at = start
      withUnsafeBytes(of: &at) { ctx.update($0) }
      pending.withUnsafeBytes { ctx.update($0) }
    }
    pending.removeAll(keepingCapacity: true)
  }

  mutating func finish() -> String {
    let length = offset
    if !pending.isEmpty {
      let start = offset - UInt64(pending.count)
      pending += [UInt8](repeating: 0, count: 4096 - pending.count)
      offset = start + 4096
      flush()
    }
    var l = length
    withUnsafeBytes(of: &l) { ctx.update($0) }
    return ctx.finalHex()
  }
}

/// Work shared by several threads: the items, the body, the results.
private final class MatrixWork<T, R>: @unchecked Sendable {
  let lock = NSLock()
  let items: [T]
  let body: (T) throws -> R
  var next = 0
  var results: [R?]
  var failure: (any Error)?
  init(_ items: [T], _ body: @escaping (T) throws -> R) {
    self.items = items
    self.body = body
    results = Array(repeating: nil, count: items.count)
  }

  func run() {
    while true {
      lock.lock()
      let i = next
      next += 1
      let stop = i >= items.count || failure != nil
      lock.unlock()
      if stop { return }
      do {
        let r = try body(items[i])
        lock.lock()
        results[i] = r
        lock.unlock()
      } catch {
        lock.lock()
        failure = failure ?? error
        lock.unlock()
      }
    }
  }
}

/// `items.map(body)` on `width` threads: the oracles are one process per name (istat, icat),
/// and most of their time is the process start.
func concurrentMap<T, R>(_ items: [T], width: Int = 3, _ body: (T) throws -> R) throws -> [R] {
  try withoutActuallyEscaping(body) { escaping in
    let work = MatrixWork(items, escaping)
    DispatchQueue.concurrentPerform(iterations: max(1, min(width, items.count))) { _ in work.run() }
    if let f = work.failure { throw f }
    return work.results.compactMap { $0 }
  }
}
