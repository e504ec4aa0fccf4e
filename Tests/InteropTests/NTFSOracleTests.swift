// The NTFS reader against ntfs-3g and sleuthkit. mkntfs makes a volume (4 KiB and 512-byte
// clusters, 1 KiB and 4 KiB MFT records), ntfs-3g fills it through a FUSE mount (folders,
// long and unicode names, 600 small files, hard links, Interix symlinks from `ln -s`, a
// Windows symlink and a junction written as reparse data, alternate data streams, a sparse
// file, a file past 4 GiB, a compressed folder). Our walk must equal `fls -r -p` (names,
// record numbers, streams) and a read-only ntfs-3g mount (types, sizes, times, link counts,
// symlink targets, and the md5 of every file and stream); a few contents also go through
// `icat`. One volume also goes inside a GPT disk, as monolithicSparse, read by vmdk-files.

import Foundation
import Glibc
import Testing
import VMDKBlock
import VMDKFiles

// <sys/xattr.h> is not part of Glibc's Swift module: the three calls, declared by hand.
@_silgen_name("lsetxattr")
private func c_lsetxattr(
  _ path: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>, _ value: UnsafeRawPointer?, _ size: Int, _ flags: Int32
) -> Int32
@_silgen_name("llistxattr")
private func c_llistxattr(_ path: UnsafePointer<CChar>, _ list: UnsafeMutablePointer<CChar>?, _ size: Int) -> Int
@_silgen_name("lgetxattr")
private func c_lgetxattr(
  _ path: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>, _ value: UnsafeMutableRawPointer?, _ size: Int
) -> Int

struct NTFSLayout: CustomStringConvertible, Sendable {
  var cluster: Int
  var sector: Int
  var description: String { "cluster \(cluster), sector \(sector)" }
  static let all = [
    NTFSLayout(cluster: 4096, sector: 512),  // 1 KiB records, CU of 64 KiB
    NTFSLayout(cluster: 512, sector: 512),  // records straddle clusters, CU of 8 KiB
    NTFSLayout(cluster: 4096, sector: 4096),  // 4 KiB records
    NTFSLayout(cluster: 65536, sector: 512),  // index blocks smaller than a cluster; no compression
  ]
}

/// What one side sees of one path.
struct NTFSSeen: Equatable, CustomStringConvertible {
  var type: String
  var size: UInt64
  var mtime: FileTime?
  var links: UInt32?
  var md5: String?
  var target: String?
  var description: String {
    "\(type) \(size) \(mtime.map { "\($0.seconds).\($0.nanoseconds)" } ?? "-") links \(links.map(String.init) ?? "-") \(md5 ?? "") \(target ?? "")"
  }
}

enum NTFSOracle {
  /// Files larger than this are compared by their data ranges and the bytes at their end, not
  /// a full md5 (the 5 GiB sparse file).
  static let fullDigestLimit: UInt64 = 64 << 20

  static func content(_ size: Int, seed: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: size)
    var x = UInt32(truncatingIfNeeded: seed &* 2_654_435_761 &+ 1)
    for i in 0..<size {
      x ^= x << 13
      x ^= x >> 17
      x ^= x << 5
      bytes[i] = UInt8(truncatingIfNeeded: x)
    }
    return bytes
  }

  /// Compressible text.
  static func text(_ size: Int, seed: Int) -> [UInt8] {
    var s = ""
    var i = seed
    while s.utf8.count < size {
      s += "line \(i) of the compressed file, with some repeated words words words\n"
      i += 1
    }
    return Array(s.utf8.prefix(size))
  }

  static func write(_ path: String, _ bytes: [UInt8]) throws {
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
      throw ToolFailure("cannot write \(path)")
    }
  }

  static func pwriteFile(_ path: String, _ bytes: [UInt8], at offset: off_t) throws {
    let fd = open(path, O_WRONLY | O_CREAT, 0o644)
    guard fd >= 0 else { throw ToolFailure("open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) }
    guard n == bytes.count else { throw ToolFailure("pwrite \(path): \(String(cString: strerror(errno)))") }
  }

  static func setXattr(_ path: String, _ name: String, _ value: [UInt8]) throws {
    let r = value.withUnsafeBytes { c_lsetxattr(path, name, $0.baseAddress, $0.count, 0) }
    guard r == 0 else { throw ToolFailure("setxattr \(name) on \(path): \(String(cString: strerror(errno)))") }
  }

  /// Reparse data for a symbolic link (tag 0xA000000C) or a junction (0xA0000003).
  static func reparse(junction: Bool, substitute: String, print: String, relative: Bool) -> [UInt8] {
    let s = Array(substitute.utf16)
    let p = Array(print.utf16)
    let header = junction ? 8 : 12
    var v: [UInt8] = []
    func u16(_ x: Int) { v += [UInt8(x & 0xFF), UInt8(x >> 8 & 0xFF)] }
    func u32(_ x: UInt32) { v += (0..<4).map { UInt8(x >> (8 * UInt32($0)) & 0xFF) } }
    u32(junction ? 0xA000_0003 : 0xA000_000C)
    u16(header + 2 * (s.count + p.count) + (junction ? 4 : 0))
    u16(0)
    u16(0)
    u16(2 * s.count)
    u16(2 * s.count + (junction ? 2 : 0))
    u16(2 * p.count)
    if !junction { u32(relative ? 1 : 0) }
    for u in s { u16(Int(u)) }
    if junction { u16(0) }
    for u in p { u16(Int(u)) }
    if junction { u16(0) }
    return v
  }

  /// Fills a mounted ntfs-3g volume. Returns the number of names made.
  static func fill(_ m: String, many: Int) throws {
    let fm = FileManager.default
    try fm.createDirectory(atPath: "\(m)/Folder/Sub Folder", withIntermediateDirectories: true)
    try write("\(m)/Folder/Sub Folder/readme.txt", Array("hello from NTFS\n".utf8))
    try write("\(m)/\(String(repeating: "L", count: 255))", content(10, seed: 1))
    try write("\(m)/héllo wörld ☃ 日本語 🙂.txt", content(77, seed: 2))
    try write("\(m)/\(String(repeating: "é", count: 200))", content(5, seed: 3))
    try write("\(m)/CaseName", content(6, seed: 4))
    try write("\(m)/empty", [])
    // A Win32 name with a DOS 8.3 twin (two $FILE_NAMEs, two index entries): listed once.
    try write("\(m)/A long file name.txt", content(33, seed: 15))
    try setXattr("\(m)/A long file name.txt", "system.ntfs_dos_name", Array("ALONGF~1.TXT".utf8))
    var deep = "\(m)/deep"
    for i in 1...15 { deep += "/level\(i)" }
    try fm.createDirectory(atPath: deep, withIntermediateDirectories: true)
    try write("\(deep)/bottom.txt", content(42, seed: 9))
    // Sizes around the resident limit and cluster boundaries.
    try fm.createDirectory(atPath: "\(m)/sizes", withIntermediateDirectories: true)
    for (i, s) in [1, 500, 700, 900, 1000, 511, 512, 513, 4095, 4096, 4097, 65535, 65536, 65537, 1 << 20].enumerated() {
      try write("\(m)/sizes/s\(s)", content(s, seed: 100 + i))
    }
    // Many files: the index grows INDX blocks and a B+tree of more than one level.
    try fm.createDirectory(atPath: "\(m)/many", withIntermediateDirectories: true)
    for i in 0..<many {
      try write("\(m)/many/file-\(i)-\(String(repeating: "x", count: i % 60))", content(i % 2000, seed: 1000 + i))
    }
    // Hard links.
    try write("\(m)/hard", content(4321, seed: 8))
    guard link("\(m)/hard", "\(m)/Folder/hard2") == 0, link("\(m)/hard", "\(m)/many/hard3") == 0 else {
      throw ToolFailure("link failed")
    }
    // Symlinks from ln -s (ntfs-3g writes Interix links), relative and absolute.
    guard symlink("Folder/Sub Folder/readme.txt", "\(m)/link-rel") == 0, symlink("/etc/hostname", "\(m)/link-abs") == 0
    else { throw ToolFailure("symlink failed") }
    // A Windows symbolic link and a junction, as reparse data.
    try write("\(m)/winlink", [])
    try setXattr(
      "\(m)/winlink", "system.ntfs_reparse_data",
      reparse(junction: false, substitute: "Folder\\hard2", print: "Folder\\hard2", relative: true))
    try fm.createDirectory(atPath: "\(m)/junction", withIntermediateDirectories: true)
    try setXattr(
      "\(m)/junction", "system.ntfs_reparse_data",
      reparse(junction: true, substitute: "\\??\\C:\\Folder", print: "C:\\Folder", relative: false))
    // Alternate data streams: a small resident one and a non-resident one; a stream on a folder.
    try write("\(m)/ads.txt", Array("main stream\n".utf8))
    try setXattr("\(m)/ads.txt", "user.secret", Array("stream data".utf8))
    try setXattr("\(m)/ads.txt", "user.big", content(60000, seed: 11))
    try setXattr("\(m)/Folder", "user.folderstream", Array("on a folder".utf8))
    // Sparse: one byte at 10 MiB; a file past 4 GiB (data at 5 GiB).
    try pwriteFile("\(m)/sparse.bin", [0x5A], at: 10 << 20)
    try pwriteFile("\(m)/big.bin", content(8192, seed: 12), at: 5 << 30)
    // A compressed folder (FILE_ATTRIBUTE_COMPRESSED, big-endian): text, random bytes.
    try fm.createDirectory(atPath: "\(m)/comp", withIntermediateDirectories: true)
    try setXattr("\(m)/comp", "system.ntfs_attrib_be", [0, 0, 0x08, 0])
    try write("\(m)/comp/text.txt", text(300_000, seed: 1))
    try write("\(m)/comp/small.txt", text(5000, seed: 2))
    try write("\(m)/comp/random.bin", content(100_000, seed: 13))
    var mixed = text(70_000, seed: 3)
    mixed += content(30_000, seed: 14)
    mixed += [UInt8](repeating: 0, count: 200_000)
    mixed += text(10_000, seed: 4)
    try write("\(m)/comp/mixed.bin", mixed)
  }

  /// Runs ntfs-3g in the foreground (so that its writes are known to be done when it exits),
  /// calls `body` with the mount point, and unmounts.
  static func withMount<T>(_ image: String, _ mountPoint: String, options: String, _ body: () throws -> T) throws -> T {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try requireTool("ntfs-3g"))
    process.arguments = ["-o", "no_detach," + options, image, mountPoint]
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    defer { unmount(mountPoint, process) }
    // Wait for the mount to appear.
    var mounted = false
    for _ in 0..<200 {
      if let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8), mounts.contains(" \(mountPoint) ") {
        mounted = true
        break
      }
      usleep(20_000)
      guard process.isRunning else { break }
    }
    guard mounted else { throw ToolFailure("ntfs-3g did not mount \(image)") }
    return try body()
  }

  /// Unmounts (retrying while the mount is busy, then lazily) and waits for ntfs-3g to exit,
  /// ending it (our own child) if it has not after 30 s.
  static func unmount(_ mountPoint: String, _ process: Process) {
    for attempt in 0..<50 {
      let r = try? runProcess("/bin/umount", attempt < 40 ? [mountPoint] : ["-l", mountPoint])
      if r?.status == 0 { break }
      guard process.isRunning else { break }
      usleep(200_000)
    }
    for _ in 0..<300 where process.isRunning { usleep(100_000) }
    if process.isRunning {
      Issue.record("ntfs-3g on \(mountPoint) did not exit after the unmount; ending it")
      process.terminate()
      process.waitUntilExit()
    }
  }

  static func md5(_ bytes: [UInt8]) -> String {
    let c = DigestContext(.md5)
    bytes.withUnsafeBytes { c.update($0) }
    return c.finalHex()
  }

  /// Our side: every path (streams as `path:name`).
  static func walk(_ fs: NTFSFileSystem) throws -> [String: (id: FileID, seen: NTFSSeen)] {
    var out: [String: (id: FileID, seen: NTFSSeen)] = [:]
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    func digest(_ size: UInt64, _ read: (UInt64, UnsafeMutableRawBufferPointer) throws -> Int) throws -> String {
      let ctx = DigestContext(.md5)
      var offset: UInt64 = 0
      while true {
        let n = try buffer.withUnsafeMutableBytes { try read(offset, $0) }
        if n == 0 { break }
        buffer.withUnsafeBytes { ctx.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        offset += UInt64(n)
      }
      #expect(offset == size)
      return ctx.finalHex()
    }
    try fs.walk(from: fs.root) { item in
      let a = try fs.stat(item.entry.id)
      #expect(a.type == item.entry.type, "\(item.displayPath): entry \(item.entry.type), stat \(a.type)")
      var seen = NTFSSeen(type: a.type.rawValue, size: a.size, mtime: a.modificationTime, links: a.linkCount)
      if a.type == .regular && a.size <= fullDigestLimit {
        seen.md5 = try digest(a.size) { try fs.read(item.entry.id, at: $0, into: $1) }
      }
      if a.type == .symlink { seen.target = String(decoding: try fs.readlink(item.entry.id), as: UTF8.self) }
      out[item.displayPath] = (item.entry.id, seen)
      for s in try fs.streams(item.entry.id) {
        let md5 = try digest(s.size) { try fs.readStream(item.entry.id, named: s.displayName, at: $0, into: $1) }
        out[item.displayPath + ":" + s.displayName] = (
          item.entry.id, NTFSSeen(type: "stream", size: s.size, mtime: nil, links: nil, md5: md5)
        )
      }
      return a.type == .directory
    }
    return out
  }

  /// `fls -r -p`: "path record" for every name and data stream, without $OrphanFiles and the
  /// index streams of system files.
  static func flsListing(_ image: String) throws -> Set<String> {
    let r = try runChecked(try requireTool("fls"), ["-r", "-p", image])
    var out: Set<String> = []
    for line in r.output.split(separator: "\n") {
      guard let tab = line.firstIndex(of: "\t") else { continue }
      let head = line[..<tab]
      var path = String(line[line.index(after: tab)...])
      let parts = head.split(separator: " ")
      guard parts.count == 2, !path.hasPrefix("$OrphanFiles") else { continue }
      let address = parts[1].dropLast().split(separator: "-")
      guard let record = address.first else { continue }
      // A system file with only index streams ("$Secure:$SDH") stands for the file itself.
      if parts[0] != "d/d" && address.count > 1 && address[1] != "128", let colon = path.lastIndex(of: ":") {
        path = String(path[..<colon])
      }
      // fls names a folder's stream "Folder/.:name".
      path = path.replacingOccurrences(of: "/.:", with: ":")
      out.insert("\(path) \(record)")
    }
    return out
  }

  /// The ntfs-3g side, through a read-only mount: every path below `m` with lstat, md5s,
  /// readlink and the user.* streams.
  static func mountSide(_ m: String, skip: Set<String>) throws -> [String: NTFSSeen] {
    var out: [String: NTFSSeen] = [:]
    var queue = [""]
    while let rel = queue.popLast() {
      let names = try FileManager.default.contentsOfDirectory(atPath: rel.isEmpty ? m : "\(m)/\(rel)")
      for name in names {
        let path = rel.isEmpty ? name : "\(rel)/\(name)"
        if skip.contains(path) { continue }
        let full = "\(m)/\(path)"
        var st = stat()
        guard lstat(full, &st) == 0 else { throw ToolFailure("lstat \(full)") }
        let fmt = st.st_mode & S_IFMT
        let type = fmt == S_IFDIR ? "directory" : fmt == S_IFLNK ? "symlink" : fmt == S_IFREG ? "regular" : "other"
        var seen = NTFSSeen(
          type: type, size: UInt64(st.st_size),
          mtime: FileTime(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: UInt32(st.st_mtim.tv_nsec)),
          links: UInt32(st.st_nlink))
        if type == "regular" && seen.size <= fullDigestLimit { seen.md5 = try fileDigest(full, .md5) }
        if type == "symlink" {
          var buf = [Int8](repeating: 0, count: 8192)
          let n = Glibc.readlink(full, &buf, buf.count)
          seen.target = String(decoding: buf[0..<max(0, n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        if type == "directory" { queue.append(path) }
        if type == "directory" { seen.links = nil }  // ntfs-3g counts folders differently
        out[path] = seen
        if type != "symlink" {
          var names = [Int8](repeating: 0, count: 65536)
          let n = c_llistxattr(full, &names, names.count)
          if n > 0 {
            for x in names[0..<n].split(separator: 0) {
              let xn = String(decoding: x.map { UInt8(bitPattern: $0) }, as: UTF8.self)
              guard xn.hasPrefix("user.") else { continue }
              let len = c_lgetxattr(full, xn, nil, 0)
              var value = [UInt8](repeating: 0, count: max(0, len))
              let got = value.withUnsafeMutableBytes { c_lgetxattr(full, xn, $0.baseAddress, $0.count) }
              guard got == len else { throw ToolFailure("getxattr \(xn) on \(full)") }
              out[path + ":" + xn.dropFirst(5)] = NTFSSeen(
                type: "stream", size: UInt64(len), mtime: nil, links: nil, md5: md5(value))
            }
          }
        }
      }
    }
    return out
  }
}

@Suite(.serialized) struct NTFSOracleTests {
  @Test(arguments: NTFSLayout.all)
  func walkMatchesNtfs3gAndSleuthkit(_ layout: NTFSLayout) throws {
    let mkntfs = try requireTool("mkntfs")
    _ = try requireTool("ntfs-3g")
    try withTemporaryFolder { dir in
      let image = "\(dir)/ntfs.img"
      let mnt = "\(dir)/mnt"
      try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
      try runChecked("/usr/bin/truncate", ["-s", "256M", image])
      try runChecked(
        mkntfs, ["-F", "-f", "-q", "-c", String(layout.cluster), "-s", String(layout.sector), "-L", "NTFSTEST", image])
      let many = 600
      let fillStart = Date()
      try NTFSOracle.withMount(image, mnt, options: "rw") { try NTFSOracle.fill(mnt, many: many) }
      print(
        "ntfs \(layout): filled through ntfs-3g in \(String(format: "%.1f", Date().timeIntervalSince(fillStart))) s")

      let start = Date()
      let volume = try ExtRawVolume(image)
      let probed = try FileSystems.open(volume)
      let fs = try #require(probed as? NTFSFileSystem)
      #expect(fs.kind == "ntfs")
      #expect(fs.label == "NTFSTEST")
      #expect(fs.boot.clusterSize == layout.cluster)
      #expect(fs.boot.mftRecordSize == max(1024, layout.sector))
      #expect(fs.warnings.isEmpty, "\(fs.warnings)")
      let ours = try NTFSOracle.walk(fs)
      let elapsed = Date().timeIntervalSince(start)
      print("ntfs \(layout): \(ours.count) names and streams read in \(String(format: "%.2f", elapsed)) s")
      #expect(ours.count > many + 60)

      // Names, record numbers and streams: fls. (sleuthkit descends into the junction, which
      // is an empty folder to it; it has no entries, so the sets still match.)
      let flsSide = try NTFSOracle.flsListing(image)
      let ourSide = Set(ours.map { "\($0.key) \($0.value.id)" })
      // sleuthkit 4.11.1 sometimes cuts a 200-character name to 128 (seen with 64 KiB clusters;
      // ntfs-3g agrees with ours): such a pair, same record and a prefix, is not a difference.
      var onlyOurs = ourSide.subtracting(flsSide)
      var onlyFls = flsSide.subtracting(ourSide)
      for f in onlyFls {
        guard let space = f.lastIndex(of: " ") else { continue }
        let (name, record) = (f[..<space], f[space...])
        if let o = onlyOurs.first(where: { $0.hasSuffix(record) && $0.hasPrefix(name) && $0.count > f.count }) {
          print("ntfs \(layout): fls cut a name to \(name.count) characters: \(name.prefix(20))…")
          onlyOurs.remove(o)
          onlyFls.remove(f)
        }
      }
      let sameAsFls = onlyOurs.isEmpty && onlyFls.isEmpty
      #expect(
        sameAsFls,
        "only ours: \(onlyOurs.sorted().prefix(10)); only fls: \(onlyFls.sorted().prefix(10))"
      )

      // Types, sizes, times, links, targets and digests: a read-only ntfs-3g mount. It hides
      // the system files; the Windows symlink and the junction are checked below.
      let special: Set<String> = ["winlink", "junction"]
      let mounted = try NTFSOracle.withMount(image, mnt, options: "ro") {
        try NTFSOracle.mountSide(mnt, skip: special)
      }
      var mismatches: [String] = []
      var compared = 0
      for (path, theirs) in mounted {
        guard let mine = ours[path]?.seen else {
          mismatches.append("\(path): only in the ntfs-3g mount")
          continue
        }
        var m = mine
        if theirs.links == nil { m.links = nil }
        if theirs.type == "directory" { m.size = theirs.size }  // st_size of a folder is ntfs-3g's own
        // ntfs-3g's st_nlink is the record's link count, which counts a DOS 8.3 twin as a
        // second name; ours counts links (names other than DOS-only ones), as a restore needs.
        if path == "A long file name.txt" && theirs.links == 2 { m.links = 2 }
        if m != theirs { mismatches.append("\(path): ours \(m), ntfs-3g \(theirs)") }
        compared += 1
      }
      let oursVisible = ours.keys.filter { !$0.hasPrefix("$") && !special.contains($0) }
      #expect(compared == oursVisible.count, "ours has \(oursVisible.count) visible names, ntfs-3g \(compared)")
      #expect(mismatches.isEmpty, "\(mismatches.count) differ: \(mismatches.sorted().prefix(8))")
      let digests = mounted.values.filter { $0.md5 != nil }.count
      print("ntfs \(layout): \(compared) names compared with ntfs-3g, \(digests) md5 digests equal")

      // The special cases.
      #expect(ours["winlink"]?.seen.type == "symlink")
      #expect(ours["winlink"]?.seen.target == "Folder/hard2")
      #expect(ours["junction"]?.seen.type == "symlink")
      #expect(ours["junction"]?.seen.target == "C:/Folder")
      #expect(ours["link-rel"]?.seen.target == "Folder/Sub Folder/readme.txt")
      #expect(ours["hard"]?.seen.links == 3)
      #expect(ours["A long file name.txt"]?.seen.links == 1)
      #expect(ours["ALONGF~1.TXT"] == nil)
      #expect(ours["ads.txt:big"]?.seen.size == 60000)
      #expect(ours["Folder:folderstream"]?.seen.size == 11)
      #expect(try fs.reparseTag(try #require(ours["winlink"]?.id)) == 0xA000_000C)
      // Compressed files really are compressed (else the LZNT1 path went untested).
      let text = try #require(ours["comp/text.txt"]?.id)
      if layout.cluster <= 4096 { #expect(try fs.fileAttributes(text) & 0x800 != 0) }
      // Case-insensitive lookup through $UpCase.
      #expect(
        try fs.entry(named: Array("HÉLLO WÖRLD ☃ 日本語 🙂.TXT".utf8), in: fs.root)?.name
          == Array("héllo wörld ☃ 日本語 🙂.txt".utf8))
      #expect(try fs.entry(named: Array("casename".utf8), in: fs.root)?.displayName == "CaseName")
      // Paths resolve by the same rule (vmdk-files cat/stat/ls go through lookup).
      #expect(try fs.lookup("/CASENAME") == fs.entry(named: Array("CaseName".utf8), in: fs.root)?.id)

      // The file past 4 GiB: size, holes, and its data.
      let big = try #require(ours["big.bin"])
      #expect(big.seen.size == 5 << 30 + 8192)
      let ranges = try fs.dataRanges(big.id)
      #expect(ranges.count == 1 && ranges.first?.upperBound == 5 << 30 + 8192, "\(ranges)")
      #expect((ranges.first?.lowerBound ?? 0) >= 5 << 30 - 65536)
      var tail = [UInt8](repeating: 0, count: 8192)
      _ = try tail.withUnsafeMutableBytes { try fs.read(big.id, at: 5 << 30, into: $0) }
      #expect(tail == NTFSOracle.content(8192, seed: 12))
      let sparse = try #require(ours["sparse.bin"])
      #expect(try fs.dataRanges(sparse.id).reduce(0) { $0 + $1.count } <= max(65536, layout.cluster))

      // icat (sleuthkit's own LZNT1 and runlist code) for the compressed, sparse and ADS data.
      let icat = try requireTool("icat")
      for path in ["comp/text.txt", "comp/mixed.bin", "comp/random.bin", "sparse.bin", "many/hard3"] {
        let f = try #require(ours[path])
        let data = try runChecked(icat, [image, String(f.id)]).stdout
        #expect(NTFSOracle.md5(Array(data)) == f.seen.md5, "icat \(path)")
      }
    }
  }

  @Test func insideAGPTDiskAsMonolithicSparse() throws {
    let mkntfs = try requireTool("mkntfs")
    _ = try requireTool("sgdisk")
    try withTemporaryFolder { dir in
      let image = "\(dir)/ntfs.img"
      let mnt = "\(dir)/mnt"
      try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
      try runChecked("/usr/bin/truncate", ["-s", "64M", image])
      try runChecked(mkntfs, ["-F", "-f", "-q", "-c", "4096", "-L", "INGPT", image])
      try NTFSOracle.withMount(image, mnt, options: "rw") {
        try FileManager.default.createDirectory(atPath: "\(mnt)/docs", withIntermediateDirectories: true)
        try NTFSOracle.write("\(mnt)/docs/report.txt", NTFSOracle.text(200_000, seed: 5))
        try NTFSOracle.setXattr("\(mnt)/docs/report.txt", "user.Zone.Identifier", Array("[ZoneTransfer]\n".utf8))
      }
      let disk = "\(dir)/disk.img"
      try runChecked(
        "/bin/bash",
        [
          "-euo", "pipefail", "-c",
          """
          cd '\(dir)'
          truncate -s 80M disk.img
          sgdisk -o -n 1:2048:+64M -t 1:0700 -c 1:data disk.img >/dev/null
          dd if=ntfs.img of=disk.img bs=1M seek=1 conv=notrunc,sparse status=none
          """,
        ])
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", disk, "\(dir)/disk.vmdk")
      let tool = try builtToolPath("vmdk-files")
      let parts = try runChecked(tool, ["partitions", "\(dir)/disk.vmdk"]).output
      #expect(parts.contains("ntfs") && parts.contains("INGPT"), "\(parts)")
      let ls = try runChecked(tool, ["ls", "-R", "\(dir)/disk.vmdk"]).output
      #expect(ls.contains("docs/report.txt"), "\(ls)")
      #expect(!ls.contains(":Zone.Identifier"), "\(ls)")
      let withStreams = try runChecked(tool, ["ls", "-R", "--streams", "\(dir)/disk.vmdk"]).output
      #expect(withStreams.contains("/docs/report.txt:Zone.Identifier"), "\(withStreams)")
      try runChecked(tool, ["extract", "\(dir)/disk.vmdk", "/docs", "--to", "\(dir)/out"])
      #expect(try fileDigest("\(dir)/out/docs/report.txt", .md5) == NTFSOracle.md5(NTFSOracle.text(200_000, seed: 5)))
      let cat = try runChecked(tool, ["cat", "\(dir)/disk.vmdk", "/docs/report.txt"]).stdout
      #expect(NTFSOracle.md5(Array(cat)) == NTFSOracle.md5(NTFSOracle.text(200_000, seed: 5)))
      // icat on the raw disk at the partition's offset agrees.
      let icat = try runChecked(try requireTool("ifind"), ["-o", "2048", "-n", "/docs/report.txt", disk]).output
      let record = icat.trimmingCharacters(in: .whitespacesAndNewlines)
      let theirs = try runChecked(try requireTool("icat"), ["-o", "2048", disk, record]).stdout
      #expect(theirs == cat)
    }
  }
}
