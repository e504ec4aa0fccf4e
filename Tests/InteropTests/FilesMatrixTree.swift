// The source trees of the file-level restore matrix (FilesMatrixTests), built once per test
// run in a temporary folder (on /dev/shm when there is one) and shared by every layout.
//
// Layout of a tree root:
//   common/   what every file system can hold: a folder of 1,000 files, folders of 100 files
//             (10,000 files in all in the big tree), a folder 20 deep, 255-byte and unicode
//             names, empty files, files of block-1/block/block+1 bytes for 1 KiB and 4 KiB
//             blocks (and 2x, 12x, the indirect-block boundaries).
//   posix/    ext only: symbolic links of 1, 59, 60, 61, 500 and 4000 bytes (4000 only where
//             a block holds it) and a relative one, three names of one inode (hard links),
//             an owned setuid file, a sticky folder.
//   special/  ext only: a FIFO.
//   sparse/   ext only: a sparse file with data islands (big tree: 3 GiB, one island past
//             2 GiB; others 64 MiB); one of 400 islands (deep extent trees, sparse indirect
//             blocks); one that starts and ends with a hole.
// FAT gets `common` only (mcopy -s of that folder).

import Foundation
import Glibc
import Testing
import VMDKBlock

enum MatrixTreeSize: String, Sendable, CustomStringConvertible {
  /// 10,000 files in `common`, the 3 GiB sparse file.
  case big
  /// About 500 files, a 64 MiB sparse file.
  case medium
  /// About 2,000 files (FAT16).
  case thousands
  /// About 60 files (FAT12).
  case small
  var description: String { rawValue }

  var bulkFiles: Int {
    switch self {
    case .big: 10_000
    case .medium: 500
    case .thousands: 2000
    case .small: 90
    }
  }
}

/// Facts about a built tree that the tests check against.
struct MatrixTree: Sendable {
  var root: String
  var size: MatrixTreeSize
  /// Symbolic-link target lengths present in posix/.
  var symlinkLengths: [Int]
  /// Path (relative to the root) of the sparse file, its size and its data islands.
  var sparsePath: String
  var sparseSize: UInt64
  var sparseIslands: [(offset: UInt64, length: Int)]
  /// Number of regular files in common/.
  var commonFiles: Int
}

/// Builds and caches the trees: one per (size, largest symlink class) for the whole run.
final class MatrixTreeCache: @unchecked Sendable {
  static let shared = MatrixTreeCache()
  private let lock = NSLock()
  private var trees: [String: MatrixTree] = [:]
  let base: String

  private init() {
    let parent = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    var template = Array("\(parent)/vmdk-matrix-trees.XXXXXX".utf8CString)
    base = mkdtemp(&template).map { String(cString: $0) } ?? "\(parent)/vmdk-matrix-trees"
    atexit { try? FileManager.default.removeItem(atPath: MatrixTreeCache.shared.base) }
  }

  /// The tree of `size` whose symlinks fit blocks of `blockSize` (4000-byte targets need
  /// more than 1 KiB). Built at the first call, then reused.
  func tree(_ size: MatrixTreeSize, blockSize: Int) throws -> MatrixTree {
    lock.lock()
    defer { lock.unlock() }
    let key = "\(size)-\(blockSize > 1024 ? "4k" : "1k")"
    if let t = trees[key] { return t }
    let started = Date()
    let t = try MatrixTreeBuilder.build("\(base)/\(key)", size: size, longLinks: blockSize > 1024)
    print("matrix tree \(key): built in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    trees[key] = t
    return t
  }
}

enum MatrixTreeBuilder {
  /// 1 MiB of xorshift bytes; every file is a slice of it starting at a seed-dependent
  /// offset, with the seed in its first bytes, so no two files of one size are equal.
  static let pool: [UInt8] = {
    var bytes = [UInt8](repeating: 0, count: 1 << 20)
    var x: UInt64 = 0x9E37_79B9_7F4A_7C15
    bytes.withUnsafeMutableBytes { raw in
      let words = raw.bindMemory(to: UInt64.self)
      for i in 0..<words.count {
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        words[i] = x
      }
    }
    return bytes
  }()

  static func content(_ size: Int, seed: Int) -> Data {
    guard size > 0 else { return Data() }
    var d = Data(capacity: size)
    var at = (seed &* 7919) & (pool.count - 1)
    while d.count < size {
      let n = min(size - d.count, pool.count - at)
      pool.withUnsafeBufferPointer { d.append($0.baseAddress! + at, count: n) }
      at = 0
    }
    var s = UInt64(truncatingIfNeeded: seed)
    withUnsafeBytes(of: &s) { seedBytes in
      for i in 0..<min(8, size) { d[i] = seedBytes[i] }
    }
    return d
  }

  static func write(_ path: String, _ data: Data, mtime: Int64) throws {
    guard FileManager.default.createFile(atPath: path, contents: data) else {
      throw ToolFailure("cannot write \(path)")
    }
    try setTime(path, mtime)
  }

  /// Sets atime and mtime (whole seconds: mke2fs -d and mcopy keep no more).
  static func setTime(_ path: String, _ mtime: Int64) throws {
    var t = [timespec(tv_sec: Int(mtime - 3600), tv_nsec: 0), timespec(tv_sec: Int(mtime), tv_nsec: 0)]
    guard utimensat(AT_FDCWD, path, &t, AT_SYMLINK_NOFOLLOW) == 0 else { throw ToolFailure("utimensat \(path)") }
  }

  /// A deterministic time between 1995 and 2030 (inside FAT's range), even seconds.
  static func time(_ i: Int) -> Int64 {
    800_000_000 + Int64(UInt64(truncatingIfNeeded: i &* 2_654_435_761) % 1_100_000_000) & ~1
  }

  static func build(_ root: String, size: MatrixTreeSize, longLinks: Bool) throws -> MatrixTree {
    let fm = FileManager.default
    let common = "\(root)/common"
    try fm.createDirectory(atPath: common, withIntermediateDirectories: true)
    var seed = 1
    func file(_ rel: String, _ bytes: Int) throws {
      try write("\(root)/\(rel)", content(bytes, seed: seed), mtime: time(seed))
      seed += 1
    }
    var commonFiles = 0
    // Names: 255 bytes of ASCII, 255 bytes of UTF-8 (127 two-byte characters and one more),
    // unicode outside the BMP, spaces and punctuation FAT allows.
    for name in [
      String(repeating: "L", count: 255), String(repeating: "é", count: 127) + "x", "héllo wörld ☃ 日本語 🙂.txt",
      "name with spaces & (parens) #1 [x] +=,;.txt", "UPPER.TXT", "Mixed Case Name.Text",
    ] {
      try file("common/\(name)", 100 + seed)
      commonFiles += 1
    }
    // Empty files.
    try fm.createDirectory(atPath: "\(common)/empties", withIntermediateDirectories: true)
    for i in 0..<5 {
      try file("common/empties/e\(i)", 0)
      commonFiles += 1
    }
    // Sizes around 1 KiB and 4 KiB blocks, and ext's block-map boundaries.
    try fm.createDirectory(atPath: "\(common)/sizes", withIntermediateDirectories: true)
    var sizes: Set<Int> = [1, 2, 511, 512, 513]
    for b in [1024, 2048, 4096] {
      for k in [1, 2, 12] { sizes.formUnion([k * b - 1, k * b, k * b + 1]) }
    }
    // Into the double-indirect block map at 1 KiB and 4 KiB.
    if size != .small { sizes.formUnion([(12 + 256) * 1024 + 1, (12 + 1024) * 4096 + 1]) }
    for s in sizes.sorted() {
      try file("common/sizes/s\(s)", s)
      commonFiles += 1
    }
    // A folder 20 deep, a file at every level.
    var deep = "common/deep"
    for i in 1...20 {
      deep += "/level\(i)"
      try fm.createDirectory(atPath: "\(root)/\(deep)", withIntermediateDirectories: true)
      try file("\(deep)/at\(i).txt", 10 * i)
      commonFiles += 1
    }
    // The bulk: one folder of many entries (a directory of many blocks), then folders of 100.
    let bulk = max(0, size.bulkFiles - commonFiles)
    let first = min(size == .big ? 1000 : size == .small ? 100 : 300, bulk)  // 300: several 4 KiB blocks
    try fm.createDirectory(atPath: "\(common)/many", withIntermediateDirectories: true)
    for i in 0..<first {
      try file("common/many/file-\(i)-\(String(repeating: "x", count: i % 40))", (i * 37) % 2500)
      commonFiles += 1
    }
    var made = first
    var folder = 0
    while made < bulk {
      let dir = String(format: "common/dir%03d", folder)
      try fm.createDirectory(atPath: "\(root)/\(dir)", withIntermediateDirectories: true)
      for i in 0..<min(100, bulk - made) {
        try file("\(dir)/f\(i).dat", (i * 131 + folder * 7) % 3000)
        made += 1
        commonFiles += 1
      }
      folder += 1
    }
    // Folder times last: creating files changed them.
    for dir in try allFolders(common) { try setTime(dir, time(dir.utf8.count * 31)) }

    // posix/: symlinks, hard links, owner and special modes.
    let posix = "\(root)/posix"
    try fm.createDirectory(atPath: posix, withIntermediateDirectories: true)
    let lengths = [1, 59, 60, 61, 500] + (longLinks ? [4000] : [])
    for n in lengths {
      var target = ""
      while target.utf8.count < n { target += target.utf8.count % 50 == 49 ? "/" : "t" }
      guard symlink(target, "\(posix)/link\(n)") == 0 else { throw ToolFailure("symlink \(n) failed") }
      try setTime("\(posix)/link\(n)", time(n))
    }
    guard symlink("../common/sizes/s1", "\(posix)/relative") == 0 else { throw ToolFailure("symlink failed") }
    try file("posix/hard1", 4321)
    guard link("\(posix)/hard1", "\(posix)/hard2") == 0, link("\(posix)/hard1", "\(common)/empties/hard3") == 0
    else { throw ToolFailure("link failed") }
    try file("posix/owned", 100)
    guard chown("\(posix)/owned", 1234, 5678) == 0, chmod("\(posix)/owned", 0o4751) == 0 else {
      throw ToolFailure("chown/chmod failed")
    }
    try fm.createDirectory(atPath: "\(posix)/sticky", withIntermediateDirectories: true)
    guard chmod("\(posix)/sticky", 0o1777) == 0, chown("\(posix)/sticky", 42, 43) == 0 else {
      throw ToolFailure("chmod failed")
    }
    try setTime("\(posix)/sticky", time(77))
    try setTime(posix, time(78))
    // special/: a FIFO.
    try fm.createDirectory(atPath: "\(root)/special", withIntermediateDirectories: true)
    guard mkfifo("\(root)/special/fifo", 0o640) == 0 else { throw ToolFailure("mkfifo failed") }
    // sparse/: islands in a large hole; the file ends in data (mke2fs 1.47.0 -d with
    // inline_data drops a trailing hole from i_size).
    try fm.createDirectory(atPath: "\(root)/sparse", withIntermediateDirectories: true)
    let sparseSize: UInt64 = size == .big ? 3 << 30 : 64 << 20
    let islands: [(offset: UInt64, length: Int)] =
      size == .big
      ? [(0, 5000), (1 << 30 | 4096, 12288), ((2 << 30) + 12345, 7000), (sparseSize - 3000, 3000)]
      : [(0, 5000), (17 << 20 | 777, 9000), (sparseSize - 3000, 3000)]
    let sparsePath = "sparse/sparse-file"
    guard fm.createFile(atPath: "\(root)/\(sparsePath)", contents: nil),
      let h = FileHandle(forWritingAtPath: "\(root)/\(sparsePath)")
    else { throw ToolFailure("cannot create the sparse file") }
    for (i, island) in islands.enumerated() {
      try h.seek(toOffset: island.offset)
      h.write(content(island.length, seed: 90_000 + i))
    }
    try h.truncate(atOffset: sparseSize)
    try h.close()
    try setTime("\(root)/\(sparsePath)", time(5))
    // 400 islands of 1,000 bytes, 64 KiB apart: more extents than an inode holds (an extent
    // tree of depth 1 at 4 KiB, 2 at 1 KiB) and sparse indirect blocks in block-map layouts.
    try writeSparse("\(root)/sparse/fragments", size: 400 << 16, islands: (0..<400).map { ($0 << 16 | $0, 1000) })
    // A hole first and last.
    try writeSparse("\(root)/sparse/hole-first", size: 9 << 20, islands: [(5 << 20 | 7, 3000)])
    return MatrixTree(
      root: root, size: size, symlinkLengths: lengths, sparsePath: sparsePath, sparseSize: sparseSize,
      sparseIslands: islands, commonFiles: commonFiles)
  }

  static func writeSparse(_ path: String, size: UInt64, islands: [(Int, Int)]) throws {
    guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path)
    else { throw ToolFailure("cannot create \(path)") }
    for (i, island) in islands.enumerated() {
      try h.seek(toOffset: UInt64(island.0))
      h.write(content(island.1, seed: 70_000 + i))
    }
    try h.truncate(atOffset: size)
    try h.close()
    try setTime(path, time(islands.count))
  }

  static func allFolders(_ root: String) throws -> [String] {
    var out = [root]
    guard let e = FileManager.default.enumerator(atPath: root) else { throw ToolFailure("cannot list \(root)") }
    while let p = e.nextObject() as? String {
      if (e.fileAttributes?[.type] as? FileAttributeType) == .typeDirectory { out.append("\(root)/\(p)") }
    }
    return out.sorted { $0.count > $1.count }
  }
}
