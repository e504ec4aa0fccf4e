// Issue 13's test matrix: file systems made by mke2fs -d and mkfs.fat + mcopy from one
// generated tree, inside an MBR disk (a logical partition) or a GPT disk, as qemu-img's
// monolithicSparse, streamOptimized and a 2-link chain; what the library and vmdk-files read
// is compared with sleuthkit, debugfs and mtools on the raw conversion.
//
// Which combinations run (FilesMatrixTests.layouts):
//  - the big tree (10,000 files, see FilesMatrixTree.swift) in ext4 with 4 KiB blocks and in
//    FAT32, each in both tables x all three formats (12 disks);
//  - every other layout with a smaller tree (medium: about 500 files; FAT16: about 2,000;
//    FAT12: about 90), also in both tables x all three formats: ext2 1 KiB 128-byte inodes,
//    ext3 4 KiB sparse_super2 with htree folders, ext4 1 KiB without extents/64bit/flex_bg/
//    metadata_csum (block maps), ext4 4 KiB inline_data, ext4 1 KiB 64bit + metadata_csum +
//    flex_bg + meta_bg without a journal, FAT12 and FAT16 (54 disks in all).
//
// Per disk: the raw conversion (qemu-img convert -O raw) must equal the raw disk the VMDK was
// made from, and the oracles run on it once:
//  - mmls: the partitions, against `vmdk-files partitions --json`;
//  - fls -r -p -o: every name, type and (ext) inode number, against the library's walk;
//  - istat: size, mode, uid/gid, link count and times (ext to the nanosecond, FAT to the
//    second) of >= 200 names (all of them in the small tree) including every special kind,
//    on the first disk of each file-system image; on the second table's disk (the same
//    file-system bytes) the special names only (about 100);
//  - icat: md5 of a sample of files; debugfs cat: the sparse files (icat cannot read the 3 GiB one);
//  - debugfs rdump (ext) / mcopy -s -m (FAT): every file restored (once per file-system
//    image, on its first disk), against `vmdk-files extract` of the whole tree from every
//    disk: the same names, types, sizes, md5 of every file, symlink targets, modes, owners
//    and modification times.
// The extracted tree also keeps the library's times (nanoseconds), hard links as links (one
// inode, the link count of fls's names) and the sparse file sparse. A chain's child shows the
// changed files (one rewritten, one added, one deleted) and its parent the old ones, and the
// child holds only the changed 64 KiB chunks.

import Foundation
import Glibc
import Testing
import VMDKBlock
import VMDKFiles

/// A fresh folder on /dev/shm (tmpfs: the images are sparse, and writing is fast), removed
/// afterwards.
func withMatrixFolder<T>(_ body: (String) throws -> T) throws -> T {
  let parent = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
  var template = Array("\(parent)/vmdk-matrix.XXXXXX".utf8CString)
  guard let made = mkdtemp(&template) else { throw ToolFailure("mkdtemp failed") }
  let folder = String(cString: made)
  defer { try? FileManager.default.removeItem(atPath: folder) }
  return try body(folder)
}

/// One name as the library sees it.
struct MatrixOurs {
  var attributes: FileAttributes
  var target: [UInt8]?
}

/// The oracles' results on one raw disk.
struct MatrixOracleRun {
  var disk: MatrixDisk
  var listing: [String: MatrixListed]
  var istats: [String: MatrixIStat]
  var icat: [String: String]
  var restored: [String: MatrixScanned]
  /// debugfs cat's block digest of each file in sparse/.
  var sparseDigests: [String: String]
}

@Suite(.serialized) struct FilesMatrixTests {
  static func combos(_ list: [(MatrixTable, MatrixFormat)]) -> [MatrixCombo] {
    list.map { MatrixCombo(table: $0.0, format: $0.1) }
  }
  static let everyCombo = combos([
    (.mbrLogical, .monolithicSparse), (.mbrLogical, .streamOptimized), (.mbrLogical, .chain),
    (.gpt, .monolithicSparse), (.gpt, .streamOptimized), (.gpt, .chain),
  ])

  static let layouts: [MatrixLayout] = [
    MatrixLayout(
      name: "ext4-4k (extents, 64bit, metadata_csum, flex_bg, huge_file, journal)", kind: "ext4",
      blockSize: 4096, tree: .big, megabytes: 256, combos: everyCombo),
    MatrixLayout(name: "fat32-4k", kind: "fat32", blockSize: 4096, tree: .big, megabytes: 512, combos: everyCombo),
    MatrixLayout(
      name: "ext2-1k (128-byte inodes)", kind: "ext2", blockSize: 1024, options: ["-I", "128"], tree: .medium,
      megabytes: 64, combos: everyCombo),
    MatrixLayout(
      name: "ext3-4k sparse_super2, htree folders (e2fsck -fyD)", kind: "ext3", blockSize: 4096,
      options: ["-O", "sparse_super2"], htree: true, tree: .medium, megabytes: 64,
      combos: everyCombo),
    MatrixLayout(
      name: "ext4-1k without extents, 64bit, flex_bg, metadata_csum", kind: "ext4", blockSize: 1024,
      options: ["-O", "^extent,^64bit,^flex_bg,^metadata_csum"], tree: .medium, megabytes: 64,
      combos: everyCombo),
    MatrixLayout(
      name: "ext4-4k inline_data", kind: "ext4", blockSize: 4096, options: ["-O", "inline_data"], tree: .medium,
      megabytes: 64, combos: everyCombo),
    MatrixLayout(
      name: "ext4-1k 64bit, metadata_csum, flex_bg (-G 4), meta_bg, no journal, 512-byte inodes", kind: "ext4",
      blockSize: 1024,
      options: ["-O", "64bit,metadata_csum,flex_bg,meta_bg,^resize_inode,^has_journal", "-G", "4", "-I", "512"],
      tree: .medium, megabytes: 64, combos: everyCombo),
    MatrixLayout(
      name: "fat12-1k", kind: "fat12", blockSize: 1024, tree: .small, megabytes: 3,
      combos: everyCombo),
    MatrixLayout(
      name: "fat16-2k", kind: "fat16", blockSize: 2048, tree: .thousands, megabytes: 64,
      combos: everyCombo),
  ]

  /// VMDK_MATRIX_ONLY=fat12 runs only the layouts whose name contains it (while debugging).
  static var selected: [MatrixLayout] {
    guard let only = ProcessInfo.processInfo.environment["VMDK_MATRIX_ONLY"], !only.isEmpty else { return layouts }
    return layouts.filter { $0.name.contains(only) }
  }

  @Test(arguments: selected)
  func matrix(_ layout: MatrixLayout) throws {
    for tool in ["qemu-img", "qemu-io", "mmls", "fls", "istat", "icat", "sfdisk", "sgdisk"] {
      _ = try requireTool(tool)
    }
    _ = try requireTool(layout.isExt ? "debugfs" : "mcopy")
    let started = Date()
    let tree = try MatrixTreeCache.shared.tree(layout.tree, blockSize: layout.blockSize)
    try withMatrixFolder { dir in
      let v1 = "\(dir)/fs-v1.img"
      try MatrixImages.fileSystem(layout, tree: tree, at: v1)
      var v2: String?
      var changes: (changed: Data, added: Data)?
      if layout.combos.contains(where: { $0.format == .chain }) {
        try FileManager.default.createDirectory(atPath: "\(dir)/changes", withIntermediateDirectories: true)
        v2 = "\(dir)/fs-v2.img"
        changes = try MatrixImages.changedCopy(layout, v1: v1, v2: "\(dir)/fs-v2.img", scratch: "\(dir)/changes")
      }
      var totals = MatrixTotals()
      // The first disk of each file-system image (v1, v2) gets the full istat sample and the
      // oracle's whole restore; the second table's disk holds the same file-system bytes, so
      // it gets its own fls, icat and istat of the special names only, and is compared with
      // the first disk's restore.
      var firstRun: [String: MatrixOracleRun] = [:]
      var sparseCache: [String: String] = [:]
      func oracles(_ version: String, _ disk: MatrixDisk, _ scratch: String) throws -> MatrixOracleRun {
        let o = try Self.runOracles(
          layout, disk: disk, scratch: scratch, first: firstRun[version], sparseCache: &sparseCache)
        if firstRun[version] == nil { firstRun[version] = o }
        return o
      }
      for table in [MatrixTable.mbrLogical, .gpt] {
        let here = layout.combos.filter { $0.table == table }
        guard !here.isEmpty else { continue }
        let d1 = try MatrixImages.disk(layout, fileSystem: v1, table: table, at: "\(dir)/\(table)-v1.raw")
        var oracle1: MatrixOracleRun?
        func v1Oracle() throws -> MatrixOracleRun {
          if let oracle1 { return oracle1 }
          let o = try oracles("v1", d1, "\(dir)/\(table)-v1-oracle")
          oracle1 = o
          return o
        }
        for combo in here {
          let comboStarted = Date()
          switch combo.format {
          case .monolithicSparse, .streamOptimized:
            let vmdk = "\(dir)/\(table)-\(combo.format).vmdk"
            try MatrixImages.convert(d1.raw, to: vmdk, subformat: combo.format)
            try Self.check(layout, tree: tree, vmdk: vmdk, oracle: try v1Oracle(), scratch: dir, totals: &totals)
          case .chain:
            guard let v2, let changes else { throw ToolFailure("no v2 image") }
            let d2 = try MatrixImages.disk(layout, fileSystem: v2, table: table, at: "\(dir)/\(table)-v2.raw")
            let parent = "\(dir)/\(table)-parent.vmdk"
            let child = "\(dir)/\(table)-child.vmdk"
            try FileManager.default.createDirectory(atPath: "\(dir)/chunks", withIntermediateDirectories: true)
            let chunks = try MatrixImages.chain(
              v1: d1.raw, v2: d2.raw, parent: parent, child: child, scratch: "\(dir)/chunks")
            try? FileManager.default.removeItem(atPath: "\(dir)/chunks")
            let o2 = try oracles("v2", d2, "\(dir)/\(table)-v2-oracle")
            try Self.check(layout, tree: tree, vmdk: child, oracle: o2, scratch: dir, totals: &totals)
            try Self.checkChain(
              layout, tree: tree, parent: parent, child: child, v1Raw: d1, chunks: chunks, changes: changes,
              v1Listing: oracle1?.listing)
            try? FileManager.default.removeItem(atPath: d2.raw)
          }
          print(
            "files matrix \(layout.name) \(combo): checked in \(String(format: "%.1f", Date().timeIntervalSince(comboStarted))) s"
          )
        }
        try? FileManager.default.removeItem(atPath: d1.raw)
      }
      print(
        "files matrix \(layout.name): \(totals.disks) disks, \(totals.names) names vs fls, \(totals.istats) istat runs compared, \(totals.icats) icat md5, \(totals.restored) restored files compared with \(layout.isExt ? "debugfs rdump" : "mcopy -s") (\(totals.digests) md5), \(totals.hardLinkGroups) hard-link groups, \(totals.truncatedByFls) long names cut by fls matched by prefix; \(String(format: "%.1f", Date().timeIntervalSince(started))) s"
      )
    }
  }

  // MARK: Oracles

  /// The sample of names given to istat: every name outside the bulk folders (symlinks,
  /// hard links, FIFO, sparse file, sizes, empties, deep folders, long names), then every
  /// n-th name of the rest up to 240 in all.
  static func sample(_ paths: [String], full: Bool) -> [String] {
    let bulk = paths.filter { $0.hasPrefix("common/many/") || $0.hasPrefix("common/dir") }
    var chosen = paths.filter { !($0.hasPrefix("common/many/") || $0.hasPrefix("common/dir")) }
    let room = full ? max(0, 240 - chosen.count) : 0
    if room > 0 && !bulk.isEmpty {
      let step = max(1, bulk.count / room)
      chosen += stride(from: 0, to: bulk.count, by: step).prefix(room).map { bulk[$0] }
    }
    return chosen
  }

  static func runOracles(
    _ layout: MatrixLayout, disk: MatrixDisk, scratch: String, first: MatrixOracleRun?,
    sparseCache: inout [String: String]
  ) throws
    -> MatrixOracleRun
  {
    let listing = try MatrixOracle.fls(disk.raw, offsetSectors: disk.startSector)
    let sampled = sample(listing.keys.sorted(), full: first == nil).compactMap { p in listing[p].map { (p, $0) } }
    let istats = Dictionary(
      uniqueKeysWithValues: try concurrentMap(sampled) { p, l in
        (p, try MatrixOracle.istat(disk.raw, offsetSectors: disk.startSector, inode: l.inode))
      })
    #expect(istats.count >= min(first == nil ? 200 : 50, listing.count), "\(disk.raw): \(istats.count) istat")
    let files = listing.filter { $0.value.type == "r" && !$0.key.hasPrefix("sparse/") }.keys.sorted()
    let icatSample = Set(
      stride(from: 0, to: files.count, by: max(1, files.count / 40)).map { files[$0] }
        + files.filter { $0.hasPrefix("posix/") })
    let icat = Dictionary(
      uniqueKeysWithValues: try concurrentMap(icatSample.sorted().compactMap { p in listing[p].map { (p, $0) } }) {
        p, l in (p, try MatrixOracle.icatMD5(disk.raw, offsetSectors: disk.startSector, inode: l.inode))
      })
    // The sparse files through debugfs cat: sleuthkit 4.11.1's icat fails on it ("Invalid
    // address in run (too large)") when its size exceeds the file system's, as the 3 GiB
    // one does.
    // Reading 3 GiB through debugfs costs seconds, so a file whose block map (debugfs stat's
    // BLOCKS or EXTENTS, logical and physical) equals one already read on another disk of
    // this layout reuses that digest: the other table's disk and the chain's v2 image.
    let debugfsImage = "\(disk.raw)?offset=\(disk.startSector * 512)"
    var sparseDigests: [String: String] = [:]
    for (p, l) in listing where layout.isExt && p.hasPrefix("sparse/") && l.type == "r" {
      let stat = try runChecked(try requireTool("debugfs"), ["-R", "stat /\(p)", debugfsImage]).output
      guard let map = stat.range(of: "BLOCKS:") ?? stat.range(of: "EXTENTS:") else {
        throw ToolFailure("debugfs stat /\(p): no block map in \(stat.prefix(300))")
      }
      let key = "\(p)\n\(stat[map.lowerBound...])"
      if let known = sparseCache[key] {
        sparseDigests[p] = known
        continue
      }
      var digest = BlockDigest()
      try MatrixOracle.stream(try requireTool("debugfs"), ["-R", "cat /\(p)", debugfsImage]) { digest.add($0) }
      sparseDigests[p] = digest.finish()
      sparseCache[key] = sparseDigests[p]
    }
    // The whole restore once per file-system image: the second table's disk holds the same
    // file-system bytes (its fls listing, icat and istat above are its own).
    if let first {
      return MatrixOracleRun(
        disk: disk, listing: listing, istats: istats, icat: icat, restored: first.restored, sparseDigests: sparseDigests
      )
    }
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    if layout.isExt {
      try runChecked(
        try requireTool("debugfs"),
        ["-R", "rdump /common /posix \(scratch)", "\(disk.raw)?offset=\(disk.startSector * 512)"])
    } else {
      try MatrixOracle.utc(
        "mcopy", ["-s", "-m", "-n", "-i", "\(disk.raw)@@\(disk.startSector * 512)", "::common", scratch])
    }
    let restored = try MatrixOracle.scan(scratch)
    try? FileManager.default.removeItem(atPath: scratch)
    return MatrixOracleRun(
      disk: disk, listing: listing, istats: istats, icat: icat, restored: restored, sparseDigests: sparseDigests)
  }

  // MARK: Ours

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

  /// Opens the VMDK through the library and walks the whole file system.
  static func walk(_ vmdk: String, layout: MatrixLayout, disk: MatrixDisk) throws -> [String: MatrixOurs] {
    let d = try Disk.open(vmdk)
    let diskLayout = try DiskLayout(disk: d, name: vmdk)
    let (entry, fs) = try diskLayout.fileSystem(partition: nil)
    #expect(entry.partition.index == disk.partition, "\(vmdk): file system in partition \(entry.partition.index)")
    #expect(entry.partition.startBytes == disk.startSector * 512)
    #expect(entry.partition.isLogical == (diskLayout.table.scheme != .gpt))
    #expect(fs.kind == layout.kind)
    var out: [String: MatrixOurs] = [:]
    try fs.walk(from: fs.root) { item in
      let a = try fs.stat(item.entry.id)
      #expect(a.type == item.entry.type, "\(item.displayPath): the entry says \(item.entry.type), stat \(a.type)")
      out[item.displayPath] = MatrixOurs(attributes: a, target: a.type == .symlink ? try fs.readlink(a.id) : nil)
      return true
    }
    return out
  }

  /// sleuthkit 4.11.1 keeps only the last 18 or 19 of a FAT long name's 13-character entries,
  /// so fls shows names of 234 characters or more cut to 234 or 247 (verified by hand with
  /// mcopy names of 246 to 250 characters). Such a name is matched to the one name of ours
  /// in the same folder that it begins; everything else must match exactly. Returns the
  /// oracle's results under our names and the number of names matched this way.
  static func reconcile(_ oracle: MatrixOracleRun, _ mine: [String: MatrixOurs]) -> (MatrixOracleRun, Int) {
    var renames: [String: String] = [:]
    for p in oracle.listing.keys where mine[p] == nil {
      let slash = p.lastIndex(of: "/")
      let parent = slash.map { String(p[..<$0]) } ?? ""
      let name = slash.map { String(p[p.index(after: $0)...]) } ?? p
      guard name.count >= 234, name.count % 13 == 0 else { continue }
      let candidates = mine.keys.filter { q in
        guard oracle.listing[q] == nil, q.count > p.count, q.hasPrefix(p) else { return false }
        return !q.dropFirst(p.count).contains("/") && (parent.isEmpty || q.hasPrefix(parent + "/"))
      }
      if candidates.count == 1, let q = candidates.first { renames[p] = q }
    }
    guard !renames.isEmpty else { return (oracle, 0) }
    func renamed<V>(_ d: [String: V]) -> [String: V] {
      Dictionary(uniqueKeysWithValues: d.map { (renames[$0.key] ?? $0.key, $0.value) })
    }
    var o = oracle
    o.listing = renamed(o.listing)
    o.istats = renamed(o.istats)
    o.icat = renamed(o.icat)
    return (o, renames.count)
  }

  static func timeText(_ t: FileTime?, nanoseconds: Bool) -> String? {
    guard let t else { return nil }
    return nanoseconds ? "\(t.seconds).\(t.nanoseconds)" : "\(t.seconds)"
  }

  // MARK: The comparison

  static func check(
    _ layout: MatrixLayout, tree: MatrixTree, vmdk: String, oracle: MatrixOracleRun, scratch: String,
    totals: inout MatrixTotals
  ) throws {
    let disk = oracle.disk
    // The raw conversion is the disk the oracles read.
    let raw = "\(scratch)/conversion.raw"
    try Qemu.img("convert", "-O", "raw", vmdk, raw)
    let same = try runProcess(try requireTool("qemu-img"), ["compare", "-q", "-f", "raw", "-F", "raw", raw, disk.raw])
    #expect(same.status == 0, "\(vmdk): its raw conversion differs from the disk it was made from")
    try? FileManager.default.removeItem(atPath: raw)
    totals.disks += 1

    // Partitions: mmls.
    let parts = try partitionsJSON(vmdk)
    let ours = parts.map { p -> [UInt64] in
      [((p["start"] as? NSNumber)?.uint64Value ?? 0) / 512, ((p["size"] as? NSNumber)?.uint64Value ?? 0) / 512]
    }
    #expect(ours.sorted { $0[0] < $1[0] } == (try mmlsPartitions(disk.raw)), "\(vmdk): partitions")
    let fsPart = parts.first { ($0["index"] as? Int) == disk.partition }
    #expect(fsPart?["fileSystem"] as? String == layout.kind, "\(vmdk): \(parts)")

    // Names, types, inode numbers: fls.
    let mine = try walk(vmdk, layout: layout, disk: disk)
    let (oracle, truncated) = reconcile(oracle, mine)
    totals.truncatedByFls += truncated
    var listingDiffs: [String] = []
    for (p, l) in oracle.listing {
      guard let m = mine[p] else {
        listingDiffs.append("only fls: \(p) \(l)")
        continue
      }
      let t = typeLetter(m.attributes.type)
      if t != l.type || (layout.isExt && m.attributes.id != l.inode) {
        listingDiffs.append("\(p): ours \(t) \(m.attributes.id), fls \(l)")
      }
    }
    for p in mine.keys where oracle.listing[p] == nil { listingDiffs.append("only ours: \(p)") }
    #expect(listingDiffs.isEmpty, "\(vmdk): \(listingDiffs.count) listing differences: \(listingDiffs.prefix(8))")
    totals.names += oracle.listing.count

    // Attributes: istat.
    var statDiffs: [String] = []
    for (p, s) in oracle.istats {
      guard let a = mine[p]?.attributes else { continue }
      var o = MatrixIStat(type: typeLetter(a.type))
      if layout.isExt {
        (o.mode, o.uid, o.gid, o.size, o.links) = (a.mode, a.uid, a.gid, a.size, a.linkCount)
        for (key, t) in [("a", a.accessTime), ("m", a.modificationTime), ("c", a.changeTime), ("cr", a.creationTime)] {
          guard let theirs = s.times[key] else { continue }
          o.times[key] = timeText(t, nanoseconds: theirs.contains("."))
        }
      } else {
        o.size = a.type == .directory ? s.size : a.size
        o.readOnly = s.readOnly.map { _ in a.mode & 0o222 == 0 }
        for (key, t) in [("a", a.accessTime), ("m", a.modificationTime), ("cr", a.creationTime)] {
          guard s.times[key] != nil else { continue }
          o.times[key] = timeText(t, nanoseconds: false)
        }
      }
      if o != s { statDiffs.append("\(p): ours \(o), istat \(s)") }
    }
    #expect(statDiffs.isEmpty, "\(vmdk): \(statDiffs.count) attribute differences: \(statDiffs.prefix(6))")
    if totals.oracleDisks.insert(oracle.disk.raw).inserted { totals.istats += oracle.istats.count }

    // The whole tree through vmdk-files extract.
    let out = "\(scratch)/extracted"
    try? FileManager.default.removeItem(atPath: out)
    let x = try vmdkFiles(["extract", vmdk, "/", "--to", out])
    #expect(x.status == 0, "\(vmdk): extract exited \(x.status): \(x.errorOutput.prefix(600))")
    let extracted = try MatrixOracle.scan(out)
    try? FileManager.default.removeItem(atPath: out)

    // Extracted against the library: every name, type, size, target, mode, owner and time.
    var extractDiffs: [String] = []
    for (p, m) in mine {
      let a = m.attributes
      guard let e = extracted[p] else {
        extractDiffs.append("not extracted: \(p)")
        continue
      }
      let type = ["r": "f", "d": "d", "l": "l", "p": "p"][typeLetter(a.type)] ?? "other"
      if e.type != type { extractDiffs.append("\(p): extracted a \(e.type), is \(type)") }
      if a.type == .regular && e.size != a.size { extractDiffs.append("\(p): size \(e.size), not \(a.size)") }
      if a.type == .symlink && e.target != m.target { extractDiffs.append("\(p): link target differs") }
      if layout.isExt && a.type != .symlink {
        if e.mode != a.mode & 0o7777 { extractDiffs.append("\(p): mode \(String(e.mode, radix: 8))") }
        if geteuid() == 0 && (e.uid != a.uid || e.gid != a.gid) { extractDiffs.append("\(p): owner \(e.uid):\(e.gid)") }
      }
      if let t = a.modificationTime, e.mtime != t.seconds || e.mtimeNanoseconds != Int(t.nanoseconds) {
        extractDiffs.append("\(p): mtime \(e.mtime).\(e.mtimeNanoseconds), not \(t.seconds).\(t.nanoseconds)")
      }
    }
    for p in extracted.keys where mine[p] == nil { extractDiffs.append("extracted, not listed: \(p)") }
    #expect(extractDiffs.isEmpty, "\(vmdk): \(extractDiffs.count) extract differences: \(extractDiffs.prefix(8))")

    // Extracted against the oracle's restore: names, types, sizes, md5, targets, modes, owners,
    // times. (debugfs rdump sets the owner after the mode, which clears setuid and setgid:
    // those two bits are compared with istat above, through the library, which extract
    // matches.)
    var restoreDiffs: [String] = []
    let prefixes = layout.isExt ? ["common", "posix"] : ["common"]
    let ourPart = extracted.filter { kv in prefixes.contains { kv.key == $0 || kv.key.hasPrefix($0 + "/") } }
    let source = layout.inlineData ? try MatrixOracle.scan(tree.root) : [:]
    for (p, r) in oracle.restored {
      guard let e = ourPart[p] else {
        restoreDiffs.append("only the oracle restored \(p)")
        continue
      }
      var theirs = r
      // debugfs 1.47.0 dumps a file kept in the inode (inline_data) as its whole i_block:
      // the source tree is the oracle for files that small.
      if layout.inlineData, r.type == "f", r.size <= 160 || e.size <= 160,
        let src = source[p]
      {
        theirs.md5 = src.md5
        theirs.size = src.size
      }
      if e.type != theirs.type || e.size != theirs.size || e.md5 != theirs.md5 || e.target != theirs.target {
        restoreDiffs.append("\(p): ours \(e), oracle \(theirs)")
      } else if layout.isExt && e.type == "f"
        && (e.mode & ~0o6000 != theirs.mode & ~0o6000 || e.uid != theirs.uid || e.gid != theirs.gid
          || e.mtime != theirs.mtime)
      {
        restoreDiffs.append("\(p): ours \(e), oracle \(theirs)")
      } else if !layout.isExt && e.type == "f" && e.mtime != theirs.mtime {
        restoreDiffs.append("\(p): mtime ours \(e.mtime), mcopy \(theirs.mtime)")
      }
      if e.md5 != nil { totals.digests += 1 }
    }
    for p in ourPart.keys where oracle.restored[p] == nil { restoreDiffs.append("only ours restored \(p)") }
    #expect(
      restoreDiffs.isEmpty, "\(vmdk): \(restoreDiffs.count) differ from the oracle's restore: \(restoreDiffs.prefix(6))"
    )
    #expect(oracle.restored.count > min(tree.commonFiles, 80), "\(vmdk): the oracle restored \(oracle.restored.count)")
    totals.restored += oracle.restored.count

    // icat's md5 of the sample.
    var icatDiffs: [String] = []
    for (p, md5) in oracle.icat where extracted[p]?.md5 != md5 {
      if layout.inlineData && (extracted[p]?.size ?? 0) <= 60 { continue }  // checked against the source above
      icatDiffs.append(p)
    }
    #expect(icatDiffs.isEmpty, "\(vmdk): icat md5 differs for \(icatDiffs.prefix(6))")
    if totals.icatDisks.insert(oracle.disk.raw).inserted { totals.icats += oracle.icat.count }

    guard layout.isExt else { return }
    // Hard links: the names fls gives one inode are one extracted inode with that link count.
    var groups: [UInt64: [String]] = [:]
    for (p, l) in oracle.listing where l.type == "r" { groups[l.inode, default: []].append(p) }
    var linkDiffs: [String] = []
    var seenInodes: Set<UInt64> = []
    for (inode, names) in groups {
      let inodes = Set(names.compactMap { extracted[$0]?.inode })
      if inodes.count != 1 { linkDiffs.append("inode \(inode): \(names) extracted as \(inodes.count) files") }
      for n in names where extracted[n]?.links != UInt64(names.count) {
        linkDiffs.append("\(n): \(extracted[n]?.links ?? 0) links, fls names \(names.count)")
      }
      if let i = inodes.first, !seenInodes.insert(i).inserted { linkDiffs.append("inode \(inode) shares a file") }
      if names.count > 1 { totals.hardLinkGroups += 1 }
    }
    #expect(linkDiffs.isEmpty, "\(vmdk): hard links: \(linkDiffs.prefix(6))")
    #expect(groups.values.contains { $0.count == 3 }, "\(vmdk): the three names of posix/hard1")

    // The FIFO and the sparse files (content and allocation).
    #expect(extracted["special/fifo"]?.type == "p")
    let sparse = try #require(extracted[tree.sparsePath])
    #expect(sparse.size == tree.sparseSize)
    #expect(mine[tree.sparsePath]?.attributes.size == tree.sparseSize)
    #expect(oracle.sparseDigests.count == 3, "\(vmdk): \(oracle.sparseDigests.keys.sorted())")
    for (p, digest) in oracle.sparseDigests {
      let e = extracted[p]
      #expect(e?.md5 == digest, "\(vmdk): \(p)'s content differs from debugfs cat's")
      // 400 islands take 400 pages of 4 KiB here: 1.6 MiB.
      #expect((e?.blocks ?? .max) * 512 <= 2 << 20, "\(vmdk): \(p) takes \((e?.blocks ?? 0) * 512) bytes")
    }
  }

  /// The chain: the child shows the changes, the parent the old files; the child holds only
  /// the chunks that changed.
  static func checkChain(
    _ layout: MatrixLayout, tree: MatrixTree, parent: String, child: String, v1Raw: MatrixDisk, chunks: Int,
    changes: (changed: Data, added: Data), v1Listing: [String: MatrixListed]?
  ) throws {
    let old = try Data(contentsOf: URL(fileURLWithPath: "\(tree.root)/\(MatrixLayout.changedInChild)"))
    #expect(try vmdkFiles(["cat", child, "/" + MatrixLayout.changedInChild]).stdout == changes.changed)
    #expect(try vmdkFiles(["cat", child, "/" + MatrixLayout.addedInChild]).stdout == changes.added)
    #expect(try vmdkFiles(["cat", child, "/" + MatrixLayout.deletedInChild]).status == 2)
    #expect(try vmdkFiles(["cat", parent, "/" + MatrixLayout.changedInChild]).stdout == old)
    #expect(try vmdkFiles(["cat", parent, "/" + MatrixLayout.addedInChild]).status == 2)
    let deleted = try Data(contentsOf: URL(fileURLWithPath: "\(tree.root)/\(MatrixLayout.deletedInChild)"))
    #expect(try vmdkFiles(["cat", parent, "/" + MatrixLayout.deletedInChild]).stdout == deleted)
    // The parent's whole listing is fls's on the unchanged disk.
    let mine = try walk(parent, layout: layout, disk: v1Raw)
    let listing = try v1Listing ?? MatrixOracle.fls(v1Raw.raw, offsetSectors: v1Raw.startSector)
    let (theirs, _) = reconcile(
      MatrixOracleRun(disk: v1Raw, listing: listing, istats: [:], icat: [:], restored: [:], sparseDigests: [:]), mine)
    let differ = Set(mine.keys).symmetricDifference(theirs.listing.keys)
    #expect(differ.isEmpty, "\(parent): the parent's names differ from fls on v1: \(differ.sorted().prefix(6))")
    let types = mine.filter { typeLetter($0.value.attributes.type) != theirs.listing[$0.key]?.type }.keys
    #expect(types.isEmpty, "\(parent): types differ from fls on v1: \(types.sorted().prefix(6))")
    // Only the changed chunks are in the child.
    let map = try Qemu.map(child)
    let own = map.filter { $0.depth == 0 && $0.data }.reduce(UInt64(0)) { $0 + $1.length }
    #expect(chunks > 0 && own == UInt64(chunks) * 65536, "\(child): \(own) bytes of its own, \(chunks) chunks written")
    let parentData = try Qemu.map(parent).filter { $0.data }.reduce(UInt64(0)) { $0 + $1.length }
    // A 3 MiB FAT12 is mostly the changed chunks; on the larger ones the child is the small part.
    if layout.megabytes >= 64 {
      #expect(own * 2 < parentData, "\(child): \(own) bytes of its own, the parent \(parentData)")
    }
  }
}

struct MatrixTotals {
  var disks = 0
  var names = 0
  var istats = 0
  var icats = 0
  var restored = 0
  var digests = 0
  var hardLinkGroups = 0
  var truncatedByFls = 0
  /// istat and icat run once per disk; these count each disk's runs once.
  var oracleDisks: Set<String> = []
  var icatDisks: Set<String> = []
}
