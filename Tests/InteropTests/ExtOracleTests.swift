// The ext2/3/4 reader against e2fsprogs and sleuthkit: a source tree with the awkward cases
// (long and unicode names, symlinks of many lengths, hard links, empty files, sizes at block
// and block-map boundaries, a sparse file, a folder 20 deep, 2,000 files) goes through
// `mke2fs -d` in each layout; our listing must equal `fls -r -p`, our attributes `debugfs
// stat`, and our bytes the files `debugfs rdump` restores.

import Foundation
import Glibc
import Testing
import VMDKBlock
import VMDKFiles

/// A raw image file as a volume: positional reads with pread.
final class ExtRawVolume: VolumeReader, @unchecked Sendable {
  let fd: Int32
  let size: UInt64
  let name: String

  init(_ path: String) throws {
    fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw ToolFailure("cannot open \(path)") }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw ToolFailure("cannot stat \(path)") }
    size = UInt64(st.st_size)
    name = path
  }

  deinit { close(fd) }

  func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
    guard offset <= size, UInt64(buffer.count) <= size - offset else {
      throw VMDKError(.outOfRange, "read past the end", file: name, offset: offset)
    }
    var done = 0
    while done < buffer.count {
      let n = pread(fd, buffer.baseAddress.map { $0 + done }, buffer.count - done, off_t(offset) + off_t(done))
      guard n > 0 else { throw VMDKError(.fileAccess, "pread failed", file: name, offset: offset) }
      done += n
    }
  }
}

/// One file as our reader sees it, by path.
struct ExtSeenFile {
  var path: String
  var attributes: FileAttributes
  var md5: String?
  var target: [UInt8]?
}

enum ExtOracle {
  /// Symlink target lengths: both sides of the 60-byte fast-symlink limit, and up to the
  /// largest a block allows (a target must be shorter than one block).
  static func symlinkLengths(blockSize: Int) -> [Int] {
    [1, 2, 30, 58, 59, 60, 61, 62, 100, 255, 500, 1000, 1022, 1023]
      + (blockSize > 1024 ? [1024, 2047, 2048, 4000, 4094, 4095] : [])
  }

  /// A deterministic byte pattern for file `seed`.
  static func content(_ size: Int, seed: Int) -> Data {
    var bytes = [UInt8](repeating: 0, count: size)
    var x = UInt32(truncatingIfNeeded: seed &* 2_654_435_761 &+ 1)
    for i in 0..<size {
      x ^= x << 13
      x ^= x >> 17
      x ^= x << 5
      bytes[i] = UInt8(truncatingIfNeeded: x)
    }
    return Data(bytes)
  }

  static func write(_ path: String, _ data: Data) throws {
    guard FileManager.default.createFile(atPath: path, contents: data) else {
      throw ToolFailure("cannot write \(path)")
    }
  }

  /// Builds the source tree in `src`.
  static func buildTree(_ src: String, blockSize: Int, files: Int) throws {
    let fm = FileManager.default
    try fm.createDirectory(atPath: src, withIntermediateDirectories: true)
    // Long and unicode names.
    try write("\(src)/\(String(repeating: "L", count: 255))", content(10, seed: 1))
    try write("\(src)/héllo wörld ☃ 日本語 🙂.txt", content(77, seed: 2))
    try write("\(src)/\(String(repeating: "é", count: 127))", content(5, seed: 3))
    try write("\(src)/name with spaces & (parens) #1", content(3, seed: 4))
    // Empty files and a file with unusual owner and mode.
    try write("\(src)/empty", Data())
    try fm.createDirectory(atPath: "\(src)/empties", withIntermediateDirectories: true)
    for i in 0..<5 { try write("\(src)/empties/e\(i)", Data()) }
    try write("\(src)/owned", content(100, seed: 5))
    guard chown("\(src)/owned", 1234, 5678) == 0, chmod("\(src)/owned", 0o4751) == 0 else {
      throw ToolFailure("chown/chmod failed")
    }
    try fm.createDirectory(atPath: "\(src)/sticky", withIntermediateDirectories: true)
    guard chmod("\(src)/sticky", 0o1777) == 0 else { throw ToolFailure("chmod failed") }
    // Sizes around block boundaries and the block map's indirect boundaries.
    try fm.createDirectory(atPath: "\(src)/sizes", withIntermediateDirectories: true)
    let p = blockSize / 4
    var sizes = [
      1, blockSize - 1, blockSize, blockSize + 1, 2 * blockSize, 12 * blockSize - 1, 12 * blockSize,
      12 * blockSize + 1, (12 + p) * blockSize, (12 + p) * blockSize + 1,
    ]
    if blockSize == 1024 { sizes.append((12 + p + p * p) * blockSize + 1) }  // triple indirect
    for (i, s) in sizes.enumerated() { try write("\(src)/sizes/s\(s)", content(s, seed: 100 + i)) }
    // A sparse file: data, a hole, data, and a hole at the end.
    let sparse = "\(src)/sparse"
    try write(sparse, content(5000, seed: 6))
    guard let h = FileHandle(forWritingAtPath: sparse) else { throw ToolFailure("open sparse") }
    try h.seek(toOffset: 1 << 20 | 123)
    h.write(content(3000, seed: 7))
    try h.truncate(atOffset: 3 << 20)
    try h.close()
    // Symlinks of many lengths; targets name nothing, so only the text matters.
    try fm.createDirectory(atPath: "\(src)/links", withIntermediateDirectories: true)
    for n in symlinkLengths(blockSize: blockSize) {
      var target = ""
      while target.utf8.count < n { target += target.utf8.count % 50 == 49 ? "/" : "t" }
      guard symlink(target, "\(src)/links/l\(n)") == 0 else { throw ToolFailure("symlink \(n) failed") }
    }
    guard symlink("../sizes/s1", "\(src)/links/relative") == 0 else { throw ToolFailure("symlink failed") }
    // Hard links: three names for one inode.
    try write("\(src)/hard", content(4321, seed: 8))
    guard link("\(src)/hard", "\(src)/links/hard2") == 0, link("\(src)/hard", "\(src)/empties/hard3") == 0 else {
      throw ToolFailure("link failed")
    }
    // A folder 20 deep.
    var deep = "\(src)/deep"
    for i in 1...20 { deep += "/d\(i)" }
    try fm.createDirectory(atPath: deep, withIntermediateDirectories: true)
    try write("\(deep)/bottom.txt", content(42, seed: 9))
    // A FIFO.
    guard mkfifo("\(src)/fifo", 0o640) == 0 else { throw ToolFailure("mkfifo failed") }
    // Many files in one folder (a directory of many blocks), with varied small sizes.
    try fm.createDirectory(atPath: "\(src)/many", withIntermediateDirectories: true)
    for i in 0..<files {
      try write("\(src)/many/file-\(i)-\(String(repeating: "x", count: i % 40))", content(i % 300, seed: 1000 + i))
    }
  }

  /// Walks the whole file system: every path with its attributes, the md5 of every regular
  /// file and the target of every symlink.
  static func walk(_ fs: any FileSystem) throws -> [ExtSeenFile] {
    var out: [ExtSeenFile] = []
    var queue: [(FileID, String)] = [(fs.root, "")]
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while let (dir, prefix) = queue.popLast() {
      for e in try fs.list(dir) {
        let path = prefix.isEmpty ? e.displayName : prefix + "/" + e.displayName
        let a = try fs.stat(e.id)
        #expect(a.type == e.type, "\(path): the entry says \(e.type), the inode \(a.type)")
        var seen = ExtSeenFile(path: path, attributes: a)
        switch a.type {
        case .directory:
          queue.append((e.id, path))
        case .regular:
          let ctx = DigestContext(.md5)
          var offset: UInt64 = 0
          while true {
            let n = try buffer.withUnsafeMutableBytes { try fs.read(e.id, at: offset, into: $0) }
            if n == 0 { break }
            buffer.withUnsafeBytes { ctx.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            offset += UInt64(n)
          }
          #expect(offset == a.size, "\(path): read \(offset) of \(a.size) bytes")
          seen.md5 = ctx.finalHex()
        case .symlink:
          seen.target = try fs.readlink(e.id)
        default:
          break
        }
        out.append(seen)
      }
    }
    return out
  }

  static func typeLetter(_ t: FileType) -> String {
    switch t {
    case .regular: "r"
    case .directory: "d"
    case .symlink: "l"
    case .fifo: "p"
    case .characterDevice: "c"
    case .blockDevice: "b"
    case .socket: "s"
    case .unknown: "-"
    }
  }

  /// `fls -r -p`: "path inode type" for every live name, without sleuthkit's $OrphanFiles.
  static func flsListing(_ image: String) throws -> Set<String> {
    let r = try runChecked(try requireTool("fls"), ["-r", "-p", image])
    var out: Set<String> = []
    for line in r.output.split(separator: "\n") {
      guard let tab = line.firstIndex(of: "\t") else { continue }
      let head = line[..<tab]  // "r/r 12:" or "r/r * 12:" (deleted)
      let path = String(line[line.index(after: tab)...])
      let parts = head.split(separator: " ")
      guard parts.count == 2, !path.hasPrefix("$OrphanFiles") else { continue }
      let type = parts[0].split(separator: "/").last.map(String.init) ?? "?"
      let inode = parts[1].dropLast()
      out.insert("\(path) \(inode) \(type)")
    }
    return out
  }

  /// What `debugfs stat` says of each inode: type, mode, uid, gid, size, links, mtime.
  struct Stat: Equatable, CustomStringConvertible {
    var type: String
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var size: UInt64
    var links: UInt32
    var mtime: Int64
    var mtimeNanoseconds: UInt32
    var description: String {
      "\(type) \(String(mode, radix: 8)) \(uid):\(gid) size \(size) links \(links) mtime \(mtime).\(mtimeNanoseconds)"
    }

    init(type: String, mode: UInt32, uid: UInt32, gid: UInt32, size: UInt64, links: UInt32, mtime: Int64, ns: UInt32) {
      self.type = type
      self.mode = mode
      self.uid = uid
      self.gid = gid
      self.size = size
      self.links = links
      self.mtime = mtime
      self.mtimeNanoseconds = ns
    }

    init(_ a: FileAttributes) {
      let names: [FileType: String] = [
        .regular: "regular", .directory: "directory", .symlink: "symlink", .fifo: "FIFO",
        .characterDevice: "character special", .blockDevice: "block special", .socket: "socket",
      ]
      self.init(
        type: names[a.type] ?? "bad type", mode: a.mode, uid: a.uid ?? 0, gid: a.gid ?? 0, size: a.size,
        links: a.linkCount, mtime: a.modificationTime?.seconds ?? 0, ns: a.modificationTime?.nanoseconds ?? 0)
    }
  }

  static func value(_ text: Substring, after key: String) -> Substring? {
    guard let r = text.range(of: key) else { return nil }
    let rest = text[r.upperBound...].drop { $0 == " " }
    return rest.prefix { $0 != " " && $0 != "\n" }
  }

  /// Runs `debugfs stat <N>` for every inode in one debugfs process.
  static func debugfsStats(_ image: String, inodes: [FileID], scratch: String) throws -> [FileID: Stat] {
    let script = "\(scratch)/stat.cmds"
    try inodes.map { "stat <\($0)>" }.joined(separator: "\n").write(toFile: script, atomically: true, encoding: .utf8)
    let r = try runChecked(try requireTool("debugfs"), ["-f", script, image])
    var out: [FileID: Stat] = [:]
    for chunk in r.output.components(separatedBy: "Inode: ").dropFirst() {
      let c = Substring(chunk)
      guard let n = c.prefix(while: { $0.isNumber }).nonEmpty.flatMap({ FileID($0) }),
        let typeRange = c.range(of: "Type: "), let modeText = value(c, after: "Mode:"),
        let uid = value(c, after: "User:").flatMap({ UInt32($0) }),
        let gid = value(c, after: "Group:").flatMap({ UInt32($0) }),
        let size = value(c, after: "Size:").flatMap({ UInt64($0) }),
        let links = value(c, after: "Links:").flatMap({ UInt32($0) }),
        let mtimeText = value(c, after: "mtime: 0x")
      else { throw ToolFailure("cannot parse debugfs stat output: \(chunk.prefix(400))") }
      let type = c[typeRange.upperBound...].prefix { $0 != "\n" }.components(separatedBy: "  ").first ?? ""
      let parts = mtimeText.split(separator: ":")
      let seconds = Int64(Int32(bitPattern: UInt32(parts[0], radix: 16) ?? 0))
      let extra = parts.count > 1 ? UInt32(parts[1], radix: 16) ?? 0 : 0
      out[n] = Stat(
        type: type.trimmingCharacters(in: .whitespaces), mode: UInt32(modeText, radix: 8) ?? 0, uid: uid, gid: gid,
        size: size, links: links, mtime: seconds + Int64(extra & 3) << 32, ns: extra >> 2)
    }
    return out
  }
}

extension Substring {
  fileprivate var nonEmpty: Substring? { isEmpty ? nil : self }
}

/// One mke2fs layout.
struct ExtLayout: CustomStringConvertible, Sendable {
  var type: String
  var blockSize: Int
  var options: [String]
  /// Run `e2fsck -fyD` afterwards, which turns large directories into htrees.
  var htree = false
  var description: String { "\(type) \(blockSize) \(options.joined(separator: " "))\(htree ? " htree" : "")" }

  static let all: [ExtLayout] = [
    ExtLayout(type: "ext2", blockSize: 1024, options: []),
    ExtLayout(type: "ext2", blockSize: 4096, options: []),
    ExtLayout(type: "ext3", blockSize: 1024, options: []),
    ExtLayout(type: "ext3", blockSize: 4096, options: ["-O", "^dir_index"]),
    ExtLayout(type: "ext4", blockSize: 4096, options: []),
    ExtLayout(type: "ext4", blockSize: 1024, options: ["-O", "^extent,^64bit,^metadata_csum"]),
    ExtLayout(type: "ext4", blockSize: 4096, options: ["-O", "inline_data,^has_journal"]),
    ExtLayout(
      type: "ext4", blockSize: 1024, options: ["-O", "inline_data,64bit,metadata_csum", "-I", "512"], htree: true),
    ExtLayout(type: "ext4", blockSize: 4096, options: ["-I", "128", "-O", "^metadata_csum,^64bit"], htree: true),
  ]
}

@Suite struct ExtOracleTests {
  @Test(arguments: ExtLayout.all)
  func listingAttributesAndContentMatchTheOracles(_ layout: ExtLayout) throws {
    let mke2fs = try requireTool("mke2fs")
    let debugfs = try requireTool("debugfs")
    try withTemporaryFolder { dir in
      let src = "\(dir)/src"
      let files = 2000
      try ExtOracle.buildTree(src, blockSize: layout.blockSize, files: files)
      let image = "\(dir)/raw.img"
      try runChecked(
        mke2fs,
        ["-q", "-F", "-t", layout.type, "-b", String(layout.blockSize)] + layout.options + ["-d", src, image, "96M"])
      if layout.htree {
        // Exit status 1 means "errors corrected" (here: directories optimised).
        let r = try runProcess(try requireTool("e2fsck"), ["-fyD", image])
        #expect(r.status <= 1, "e2fsck -fyD: \(r.errorOutput)")
      }
      // Nanoseconds and the epoch bits: mke2fs -d does not copy them, so set them with debugfs.
      var nanoseconds = false
      if !layout.options.contains("128") {
        try runChecked(debugfs, ["-w", "-R", "sif /hard mtime_extra 0x1D6F3455", image])
        nanoseconds = true
      }

      let start = Date()
      let volume = try ExtRawVolume(image)
      let probed = try ExtFileSystem.probe(volume)
      let fs = try #require(probed)
      #expect(fs.kind == layout.type)
      let seen = try ExtOracle.walk(fs)
      let elapsed = Date().timeIntervalSince(start)
      print("ext oracle \(layout): \(seen.count) names read in \(String(format: "%.2f", elapsed)) s")
      #expect(seen.count > files + 50)

      // Names, inode numbers and types: fls.
      let ours = Set(seen.map { "\($0.path) \($0.attributes.id) \(ExtOracle.typeLetter($0.attributes.type))" })
      let theirs = try ExtOracle.flsListing(image)
      #expect(
        ours == theirs,
        "only ours: \(ours.subtracting(theirs).sorted().prefix(10)); only fls: \(theirs.subtracting(ours).sorted().prefix(10))"
      )

      // Attributes: debugfs stat.
      let stats = try ExtOracle.debugfsStats(
        image, inodes: Array(Set(seen.map { $0.attributes.id })).sorted(), scratch: dir)
      var mismatches: [String] = []
      for f in seen {
        let mine = ExtOracle.Stat(f.attributes)
        if stats[f.attributes.id] != mine {
          mismatches.append("\(f.path): ours \(mine), debugfs \(stats[f.attributes.id].map(\.description) ?? "none")")
        }
      }
      #expect(mismatches.isEmpty, "\(mismatches.count) attribute mismatches: \(mismatches.prefix(10))")
      if nanoseconds {
        let hard = try #require(seen.first { $0.path == "hard" })
        #expect(hard.attributes.modificationTime?.nanoseconds == 123_456_789)
        #expect((hard.attributes.modificationTime?.seconds ?? 0) > 1 << 32)
        #expect(hard.attributes.linkCount == 3)
      }

      // Contents and symlink targets: debugfs rdump.
      let out = "\(dir)/out"
      try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
      try runChecked(debugfs, ["-R", "rdump / \(out)", image])
      var contentMismatches: [String] = []
      var digests = 0
      var links = 0
      // debugfs 1.47.0 dumps an inline-data file as its whole 60-byte i_block, so with
      // inline_data the source tree is the oracle for the files small enough to be inline.
      // (Larger files keep debugfs as the oracle: with inline_data, mke2fs 1.47.0 -d stores
      // `sparse` with i_size 1052672, dropping the trailing hole, so the source is not.)
      let inline = layout.options.joined().contains("inline_data")
      for f in seen {
        if let md5 = f.md5 {
          let theirs = try fileDigest("\(inline && f.attributes.size <= 160 ? src : out)/\(f.path)", .md5)
          if theirs != md5 { contentMismatches.append(f.path) }
          digests += 1
        }
        if let target = f.target {
          var buffer = [Int8](repeating: 0, count: 8192)
          let n = Glibc.readlink("\(out)/\(f.path)", &buffer, buffer.count)
          let theirs = n > 0 ? buffer[0..<n].map { UInt8(bitPattern: $0) } : []
          if theirs != target {
            contentMismatches.append("\(f.path): ours \(target.count) bytes, theirs \(theirs.count)")
          }
          links += 1
        }
      }
      #expect(contentMismatches.isEmpty, "\(contentMismatches.count) differ: \(contentMismatches.prefix(5))")
      #expect(links == ExtOracle.symlinkLengths(blockSize: layout.blockSize).count + 1)
      print("ext oracle \(layout): \(digests) md5 digests and \(links) symlink targets equal to debugfs rdump")

      // The sparse file: the hole is not data, the data is.
      let sparse = try #require(seen.first { $0.path == "sparse" })
      let ranges = try fs.dataRanges(sparse.attributes.id)
      let hole: Range<UInt64> = 8192..<(1 << 20)
      #expect(!ranges.contains { $0.overlaps(hole) }, "\(ranges)")
      #expect(ranges.contains { $0.contains(0) } && ranges.contains { $0.contains(1 << 20 | 200) }, "\(ranges)")
      #expect(!ranges.contains { $0.contains((3 << 20) - 1) }, "\(ranges)")
    }
  }

  /// A file larger than 2 TiB (3 TiB + 8 bytes, two extents far apart) is read by offset,
  /// and its data ranges are the two blocks.
  @Test func fileBeyondTwoTebibytes() throws {
    let mke2fs = try requireTool("mke2fs")
    try withTemporaryFolder { dir in
      let src = "\(dir)/src"
      try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
      let far: UInt64 = 3 << 40 | 5
      try ExtOracle.write("\(src)/huge", Data("start".utf8))
      guard let h = FileHandle(forWritingAtPath: "\(src)/huge") else { throw ToolFailure("open huge") }
      try h.seek(toOffset: far)
      h.write(Data("end".utf8))
      try h.close()
      let image = "\(dir)/raw.img"
      try runChecked(mke2fs, ["-q", "-F", "-t", "ext4", "-b", "4096", "-d", src, image, "64M"])
      let fs = try #require(try ExtFileSystem.probe(try ExtRawVolume(image)))
      let entry = try #require(try fs.list(fs.root).first { $0.displayName == "huge" })
      let a = try fs.stat(entry.id)
      #expect(a.size == far + 3)
      var buffer = [UInt8](repeating: 0xFF, count: 16)
      let n = try buffer.withUnsafeMutableBytes { try fs.read(entry.id, at: far - 8, into: $0) }
      #expect(n == 11)
      #expect(Array(buffer[0..<11]) == [0, 0, 0, 0, 0, 0, 0, 0] + Array("end".utf8))
      let head = try buffer.withUnsafeMutableBytes { try fs.read(entry.id, at: 0, into: $0) }
      #expect(head == 16 && Array(buffer[0..<5]) == Array("start".utf8) && buffer[5..<16].allSatisfy { $0 == 0 })
      let ranges = try fs.dataRanges(entry.id)
      #expect(ranges == [0..<4096, (far & ~4095)..<(far + 3)])
    }
  }
}
