// Issue 14's NTFS matrix: volumes made by mkntfs and filled through a read-write ntfs-3g
// mount (NTFSOracle.fill, plus the bulk, names, streams, sparse islands and the churn
// below), put inside GPT and MBR disks (a primary or a logical partition, type 7), as
// qemu-img's monolithicSparse, streamOptimized and a 2-link chain. What the library reads
// from each VMDK is compared with ntfs-3g and sleuthkit on the raw partition.
//
// Layouts (mkntfs -c CLUSTER -s SECTOR; mkntfs makes MFT records of max(1 KiB, SECTOR)):
//  - 4 KiB clusters, 1 KiB records: the big tree (10,000 files and more, a fragmented MFT);
//  - 512-byte clusters, 1 KiB records, and 4 KiB clusters, 4 KiB records: a smaller tree.
//    (512-byte clusters with 4 KiB records would need clusters smaller than sectors, which
//    mkntfs refuses.)
//  Each layout goes into a GPT and an MBR disk (a primary or a logical partition), each as
//  monolithicSparse, streamOptimized and a 2-link chain: 18 disks.
//
// Oracles, once per file-system image (v1, and the chain's v2):
//  - fls -r -p: every name, record number and stream (NTFSOracle.flsListing);
//  - a read-only ntfs-3g mount: type, size, mtime to 100 ns, link count, symlink target and
//    md5 of every file, md5 of every stream (user.* xattrs) (NTFSOracle.mountSide);
//  - istat: link count, the four $STANDARD_INFORMATION times to 100 ns and the $DATA size of a
//    sample (>= 1,000 records on the big tree), its flags (the compressed files);
//  - icat RECORD-128-ID: the md5 of a sample of streams; ntfscat -i: the md5 of a sample of
//    files; istat 0: $MFT's clusters, which must lie in several runs on the big tree.
// Per disk: the raw conversion equals the disk it was made from, mmls's partitions equal
// `vmdk-files partitions`, and the whole walk through the library is compared; vmdk-files
// cat and ls --streams read a few files. A chain's child shows the changed files and its
// parent the old ones, and the child holds only the changed 64 KiB chunks.

import Foundation
import Glibc
import Testing
import VMDKBlock
import VMDKFiles

enum NTFSMatrixTable: String, Sendable, CustomStringConvertible {
  case mbrPrimary, mbrLogical, gpt
  var description: String { rawValue }
}

struct NTFSMatrixCombo: Sendable, CustomStringConvertible {
  var table: NTFSMatrixTable
  var format: MatrixFormat
  var description: String { "\(table)/\(format)" }
}

struct NTFSMatrixLayout: Sendable, CustomStringConvertible {
  var cluster: Int
  var sector: Int
  var big: Bool
  var megabytes: Int
  var combos: [NTFSMatrixCombo]
  var record: Int { max(1024, sector) }
  var description: String {
    "cluster \(cluster), records \(record) (\(big ? "big" : "small") tree; \(combos.map(\.description).joined(separator: ", ")))"
  }
}

/// What istat says of one record.
struct NTFSIStat: Equatable, CustomStringConvertible {
  var links: UInt32?
  /// $STANDARD_INFORMATION's times as "seconds.nanoseconds", keyed a/m/c/cr.
  var times: [String: String] = [:]
  /// The unnamed $DATA's size.
  var dataSize: UInt64?
  var flags = ""
  var description: String {
    "links \(links.map(String.init) ?? "-") size \(dataSize.map(String.init) ?? "-") times \(times.sorted { $0.key < $1.key })"
  }
}

/// The oracles' results on one file-system image.
struct NTFSMatrixOracleRun {
  /// "path record" of every name and stream (fls).
  var fls: Set<String>
  var records: [String: UInt64]
  var mounted: [String: NTFSSeen]
  /// The mount's atime and ctime of every name ("seconds.nanoseconds").
  var mountTimes: [String: [String]]
  /// md5 of big.bin's 8 KiB at 5 GiB, read through the mount.
  var bigTail: String
  /// Every path `ntfsls -R -a` lists (no system files, no streams).
  var ntfsls: Set<String>
  var istats: [String: NTFSIStat]
  var ntfscat: [String: String]
  var icatStreams: [String: String]
  /// Clusters of $MFT's $DATA that do not follow the one before (istat 0).
  var mftBreaks: Int
}

struct NTFSMatrixTotals {
  var disks = 0
  var flsNames = 0
  var ntfslsNames = 0
  var mountNames = 0
  var fileDigests = 0
  var streamDigests = 0
  var links = 0
  var mtimes = 0
  var otherTimes = 0
  var istats = 0
  var istatTimes = 0
  var ntfscat = 0
  var icatStreams = 0
  var toolReads = 0
}

enum NTFSMatrixTree {
  static let deleted = "many/file-3-xxx"
  static let changed = "sizes/s4096"
  static let added = "new-in-child.txt"
  static let islands: [(offset: Int, length: Int)] = [
    (0, 5000), (17 << 20 | 777, 9000), (40 << 20 | 5, 70000), ((64 << 20) - 3000, 3000),
  ]

  /// Writes 64 KiB files into churn/ until the volume is full, then deletes nine in ten: the
  /// MFT, which grows while the rest is written, has to go around the survivors.
  static func churn(_ m: String) throws -> Int {
    try FileManager.default.createDirectory(atPath: "\(m)/churn", withIntermediateDirectories: true)
    let block = NTFSOracle.content(65536, seed: 4242)
    var made = 0
    while made < 100_000 {
      let fd = open("\(m)/churn/c\(made)", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
      guard fd >= 0 else { break }
      let n = block.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
      close(fd)
      made += 1
      if n != block.count { break }
    }
    guard made > 100 else { throw ToolFailure("the churn stopped after \(made) files") }
    for i in 0..<made where i % 10 != 0 { unlink("\(m)/churn/c\(i)") }
    return made
  }

  /// Fills a mounted volume: NTFSOracle.fill, then names of 255 UTF-16 units (Latin, CJK,
  /// emoji), a file with streams that differ from their names only in case, sparse islands,
  /// and on the big tree folders of 100 files (every 97th with a stream) up to 10,000 files.
  static func fill(_ m: String, big: Bool) throws {
    try NTFSOracle.fill(m, many: big ? 1000 : 120)
    let fm = FileManager.default
    try fm.createDirectory(atPath: "\(m)/names", withIntermediateDirectories: true)
    for (i, name) in [
      String(repeating: "ß", count: 255), String(repeating: "漢", count: 255), String(repeating: "🙂", count: 127),
      "Ελληνικά κείμενο", "日本語のファイル名.txt", "mixed 🎉 Ünïcödé 中文.bin",
    ].enumerated() {
      try NTFSOracle.write("\(m)/names/\(name)", NTFSOracle.content(100 + i, seed: 500 + i))
    }
    for (i, s) in [1, 500, 4096, 65536, 1 << 20].enumerated() {
      try NTFSOracle.setXattr("\(m)/sizes/s\(s)", "user.note\(i)", NTFSOracle.content(i * 700, seed: 700 + i))
    }
    try NTFSOracle.write("\(m)/case-ads.txt", Array("main".utf8))
    try NTFSOracle.setXattr("\(m)/case-ads.txt", "user.MixedCase", Array("mixed case stream".utf8))
    try fm.createDirectory(atPath: "\(m)/sparse", withIntermediateDirectories: true)
    for (i, island) in islands.enumerated() {
      try NTFSOracle.pwriteFile(
        "\(m)/sparse/islands.bin", NTFSOracle.content(island.length, seed: 600 + i), at: off_t(island.offset))
    }
    guard big else { return }
    for folder in 0..<90 {
      let dir = String(format: "\(m)/bulk/d%03d", folder)
      try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
      for i in 0..<100 {
        let n = folder * 100 + i
        try NTFSOracle.write("\(dir)/f\(i).dat", NTFSOracle.content((n * 131) % 3000, seed: 20_000 + n))
        if n % 97 == 0 {
          try NTFSOracle.setXattr("\(dir)/f\(i).dat", "user.s\(n)", NTFSOracle.content(n % 900, seed: n))
        }
      }
    }
  }
}

@Suite(.serialized) struct NTFSMatrixTests {
  static func combos(_ list: [(NTFSMatrixTable, MatrixFormat)]) -> [NTFSMatrixCombo] {
    list.map { NTFSMatrixCombo(table: $0.0, format: $0.1) }
  }

  /// Every layout in GPT and MBR, each as all three formats; the MBR disks alternate between
  /// a primary and a logical partition.
  static let layouts: [NTFSMatrixLayout] = [
    NTFSMatrixLayout(
      cluster: 4096, sector: 512, big: true, megabytes: 256,
      combos: combos([
        (.gpt, .monolithicSparse), (.gpt, .streamOptimized), (.gpt, .chain),
        (.mbrLogical, .monolithicSparse), (.mbrPrimary, .streamOptimized), (.mbrLogical, .chain),
      ])),
    NTFSMatrixLayout(
      cluster: 512, sector: 512, big: false, megabytes: 64,
      combos: combos([
        (.gpt, .monolithicSparse), (.gpt, .streamOptimized), (.gpt, .chain),
        (.mbrPrimary, .monolithicSparse), (.mbrLogical, .streamOptimized), (.mbrPrimary, .chain),
      ])),
    NTFSMatrixLayout(
      cluster: 4096, sector: 4096, big: false, megabytes: 64,
      combos: combos([
        (.gpt, .monolithicSparse), (.gpt, .streamOptimized), (.gpt, .chain),
        (.mbrLogical, .monolithicSparse), (.mbrPrimary, .streamOptimized), (.mbrLogical, .chain),
      ])),
  ]

  /// VMDK_MATRIX_ONLY=4096 runs only the layouts whose description contains it (while
  /// debugging).
  static var selected: [NTFSMatrixLayout] {
    guard let only = ProcessInfo.processInfo.environment["VMDK_MATRIX_ONLY"], !only.isEmpty else { return layouts }
    return layouts.filter { $0.description.contains(only) }
  }

  @Test(arguments: selected)
  func matrix(_ layout: NTFSMatrixLayout) throws {
    for tool in [
      "mkntfs", "ntfs-3g", "ntfscat", "ntfsls", "qemu-img", "qemu-io", "mmls", "fls", "istat", "icat", "sfdisk",
      "sgdisk",
    ] {
      _ = try requireTool(tool)
    }
    let started = Date()
    try withMatrixFolder { dir in
      let v1 = "\(dir)/fs-v1.img"
      let mnt = "\(dir)/mnt"
      try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
      try runChecked("/usr/bin/truncate", ["-s", "\(layout.megabytes)M", v1])
      try runChecked(
        try requireTool("mkntfs"),
        ["-F", "-f", "-q", "-c", String(layout.cluster), "-s", String(layout.sector), "-L", "MATRIX", v1])
      var churned = 0
      try NTFSOracle.withMount(v1, mnt, options: "rw,compression") {
        if layout.big { churned = try NTFSMatrixTree.churn(mnt) }
        try NTFSMatrixTree.fill(mnt, big: layout.big)
      }
      print(
        "ntfs matrix \(layout): v1 filled in \(String(format: "%.1f", Date().timeIntervalSince(started))) s (churn \(churned) files)"
      )
      var v2: String?
      var changes: (changed: [UInt8], added: [UInt8])?
      if layout.combos.contains(where: { $0.format == .chain }) {
        let path = "\(dir)/fs-v2.img"
        try runChecked("/bin/cp", ["--sparse=always", v1, path])
        let c = (NTFSOracle.content(4096 + 333, seed: 777_777), NTFSOracle.content(12_345, seed: 888_888))
        try NTFSOracle.withMount(path, mnt, options: "rw") {
          guard unlink("\(mnt)/\(NTFSMatrixTree.deleted)") == 0 else { throw ToolFailure("cannot delete") }
          try NTFSOracle.write("\(mnt)/\(NTFSMatrixTree.changed)", c.0)
          try NTFSOracle.write("\(mnt)/\(NTFSMatrixTree.added)", c.1)
        }
        v2 = path
        changes = c
      }
      var totals = NTFSMatrixTotals()
      var oracles: [String: NTFSMatrixOracleRun] = [:]
      func oracle(_ image: String, full: Bool) throws -> NTFSMatrixOracleRun {
        if let o = oracles[image] { return o }
        let o = try Self.runOracles(image, mnt: mnt, layout: layout, full: full)
        oracles[image] = o
        totals.istats += o.istats.count
        totals.ntfscat += o.ntfscat.count
        totals.icatStreams += o.icatStreams.count
        return o
      }
      for combo in layout.combos {
        let comboStarted = Date()
        let d1 = try Self.disk(v1, table: combo.table, at: "\(dir)/\(combo.table)-v1.raw")
        switch combo.format {
        case .monolithicSparse, .streamOptimized:
          let vmdk = "\(dir)/\(combo.table)-\(combo.format).vmdk"
          try MatrixImages.convert(d1.raw, to: vmdk, subformat: combo.format)
          try Self.check(
            layout, vmdk: vmdk, disk: d1, oracle: try oracle(v1, full: true), scratch: dir, totals: &totals)
          try? FileManager.default.removeItem(atPath: vmdk)
        case .chain:
          guard let v2, let changes else { throw ToolFailure("no v2 image") }
          let d2 = try Self.disk(v2, table: combo.table, at: "\(dir)/\(combo.table)-v2.raw")
          let parent = "\(dir)/\(combo.table)-parent.vmdk"
          let child = "\(dir)/\(combo.table)-child.vmdk"
          try FileManager.default.createDirectory(atPath: "\(dir)/chunks", withIntermediateDirectories: true)
          let chunks = try MatrixImages.chain(
            v1: d1.raw, v2: d2.raw, parent: parent, child: child, scratch: "\(dir)/chunks")
          try? FileManager.default.removeItem(atPath: "\(dir)/chunks")
          let o1 = try oracle(v1, full: true)
          try Self.check(
            layout, vmdk: child, disk: d2, oracle: try oracle(v2, full: false), scratch: dir, totals: &totals)
          try Self.checkChain(parent: parent, child: child, v1: o1, chunks: chunks, changes: changes)
          try? FileManager.default.removeItem(atPath: d2.raw)
        }
        try? FileManager.default.removeItem(atPath: d1.raw)
        print(
          "ntfs matrix \(layout.cluster)/\(layout.record) \(combo): checked in \(String(format: "%.1f", Date().timeIntervalSince(comboStarted))) s"
        )
      }
      print(
        "ntfs matrix \(layout): \(totals.disks) disks; \(totals.flsNames) names and streams vs fls, \(totals.ntfslsNames) names vs ntfsls, \(totals.mountNames) vs the ntfs-3g mount (\(totals.fileDigests) file md5, \(totals.streamDigests) stream md5, \(totals.links) link counts, \(totals.mtimes) mtimes and \(totals.otherTimes) atimes and ctimes to 100 ns); \(totals.istats) istat runs (\(totals.istatTimes) times to 100 ns), \(totals.ntfscat) ntfscat md5, \(totals.icatStreams) icat stream md5, \(totals.toolReads) vmdk-files reads; \(String(format: "%.1f", Date().timeIntervalSince(started))) s"
      )
    }
  }

  // MARK: Disks

  /// Puts the file-system image into a new sparse disk:
  ///  - mbrPrimary: partition 1 (type 7) at 1 MiB;
  ///  - mbrLogical: primary 1 (empty), extended 2 holding logical 5 (type 7, the file system)
  ///    and logical 6 (empty);
  ///  - gpt: 1 an EFI partition (empty), 2 the file system (0700).
  static func disk(_ fs: String, table: NTFSMatrixTable, at raw: String) throws -> MatrixDisk {
    var st = stat()
    guard stat(fs, &st) == 0 else { throw ToolFailure("cannot stat \(fs)") }
    let sectors = UInt64(st.st_size) / 512
    let (start, partition, script): (UInt64, Int, String)
    switch table {
    case .mbrPrimary:
      (start, partition) = (2048, 1)
      script = "printf 'label: dos\\nstart=2048, size=\(sectors), type=7\\n' | sfdisk -q '\(raw)' >/dev/null"
    case .mbrLogical:
      (start, partition) = (6144, 5)
      script =
        "printf 'label: dos\\nstart=2048, size=2048, type=83\\nstart=4096, size=\(sectors + 6144), type=5\\nstart=6144, size=\(sectors), type=7\\nstart=\(6144 + sectors + 2048), size=2048, type=83\\n' | sfdisk -q '\(raw)' >/dev/null"
    case .gpt:
      (start, partition) = (4096, 2)
      script =
        "sgdisk -o -n 1:2048:4095 -t 1:ef00 -c 1:EFI -n 2:4096:\(4096 + sectors - 1) -t 2:0700 -c 2:data '\(raw)' >/dev/null"
    }
    try shell(
      """
      truncate -s \((start + sectors + 6144) * 512) '\(raw)'
      \(script)
      dd if='\(fs)' of='\(raw)' bs=512 seek=\(start) conv=notrunc,sparse status=none
      """)
    return MatrixDisk(raw: raw, startSector: start, partition: partition)
  }

  // MARK: Oracles

  /// istat of one record, parsed: the first block of times is $STANDARD_INFORMATION's.
  static func istat(_ image: String, record: UInt64) throws -> NTFSIStat? {
    let r = try runProcess("/usr/bin/env", ["TZ=UTC", try requireTool("istat"), image, String(record)])
    // sleuthkit 4.11.1 refuses a sparse run longer than the volume ("ntfs_make_run: Run
    // length is larger than file system"): big.bin, 5 GiB on a smaller volume.
    if r.status != 0 && r.errorOutput.contains("Run length is larger than file system") { return nil }
    guard r.status == 0 else { throw ToolFailure("istat \(record) exited \(r.status): \(r.errorOutput)") }
    let text = r.output
    var s = NTFSIStat()
    var section = ""
    for line in text.split(separator: "\n") {
      if line.hasSuffix("Attribute Values:") { section = String(line) }
      if line.hasPrefix("Links: ") { s.links = UInt32(line.dropFirst(7)) }
      if line.hasPrefix("Flags: ") && s.flags.isEmpty { s.flags = String(line.dropFirst(7)) }
      if section.hasPrefix("$STANDARD_INFORMATION") {
        for (key, name) in [("Created:", "cr"), ("File Modified:", "m"), ("MFT Modified:", "c"), ("Accessed:", "a")]
        where line.hasPrefix(key) {
          s.times[name] = MatrixOracle.parseTime(line.dropFirst(key.count))
        }
      }
      if s.dataSize == nil, line.hasPrefix("Type: $DATA (128-"), line.contains("Name: N/A"),
        let r = line.range(of: " size: ")
      {
        s.dataSize = UInt64(line[r.upperBound...].prefix { $0.isNumber })
      }
    }
    return s
  }

  static func runOracles(_ image: String, mnt: String, layout: NTFSMatrixLayout, full: Bool) throws
    -> NTFSMatrixOracleRun
  {
    let started = Date()
    // fls's own listing once more, for what flsListing drops: the attribute ids of streams
    // (for icat), and names whose record sleuthkit cannot load ("r/-": stale index entries of
    // the churn's deleted files, which ntfs-3g and we hide).
    var streamAddresses: [(String, String)] = []
    var stale: Set<String> = []
    for line in try runChecked(try requireTool("fls"), ["-r", "-p", image]).output.split(separator: "\n") {
      guard let tab = line.firstIndex(of: "\t") else { continue }
      let path = String(line[line.index(after: tab)...])
      let head = line[..<tab].split(separator: " ")
      guard head.count == 2, !path.hasPrefix("$") else { continue }
      let address = String(head[1].dropLast())
      if head[0].hasSuffix("/-") { stale.insert("\(path) \(address)") }
      if head[0] == "r/r", path.contains(":"), address.split(separator: "-").count == 3 {
        streamAddresses.append((path, address))
      }
    }
    let listed = try NTFSOracle.flsListing(image)
    let fls = listed.subtracting(stale)
    #expect(listed.count - fls.count == stale.count, "\(stale.sorted().prefix(4))")
    var records: [String: UInt64] = [:]
    for line in fls {
      guard let space = line.lastIndex(of: " "), let r = UInt64(line[line.index(after: space)...]) else { continue }
      records[String(line[..<space])] = r
    }
    var mountTimes: [String: [String]] = [:]
    var bigTail = ""
    let mounted = try NTFSOracle.withMount(image, mnt, options: "ro") {
      let seen = try NTFSOracle.mountSide(mnt, skip: ["winlink", "junction"])
      // atime and ctime too (mountSide keeps mtime).
      for (p, v) in seen where v.type != "stream" {
        var st = stat()
        guard lstat("\(mnt)/\(p)", &st) == 0 else { throw ToolFailure("lstat \(p)") }
        mountTimes[p] = ["\(st.st_atim.tv_sec).\(st.st_atim.tv_nsec)", "\(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec)"]
      }
      let fd = Glibc.open("\(mnt)/big.bin", O_RDONLY)
      guard fd >= 0 else { throw ToolFailure("cannot open big.bin on the mount") }
      defer { close(fd) }
      var tail = [UInt8](repeating: 0, count: 8192)
      let n = tail.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(5) << 30) }
      guard n == tail.count else { throw ToolFailure("pread big.bin: \(n)") }
      bigTail = NTFSOracle.md5(tail)
      return seen
    }
    // ntfsls -R -a: "/folder:" then its names ("." and ".." too), a blank line between folders.
    var ntfsls: Set<String> = []
    var folder = ""
    for line in try runChecked(try requireTool("ntfsls"), ["-R", "-a", image]).output.split(separator: "\n") {
      if line.hasPrefix("/") && line.hasSuffix(":") {
        folder = String(line.dropFirst().dropLast())
      } else if line != "." && line != ".." {
        ntfsls.insert(folder.isEmpty ? String(line) : "\(folder)/\(line)")
      }
    }
    // The istat sample: every name outside the bulk folders, then every n-th of the rest.
    let names = records.keys.filter { !$0.contains(":") && !$0.hasPrefix("$") }.sorted()
    let isBulk = { (p: String) in p.hasPrefix("bulk/") || p.hasPrefix("many/") || p.hasPrefix("churn/") }
    var chosen = names.filter { !isBulk($0) }
    let want = full ? (layout.big ? 1100 : 400) : 150
    let bulk = names.filter(isBulk)
    if want > chosen.count, !bulk.isEmpty {
      let step = max(1, bulk.count / (want - chosen.count))
      chosen += stride(from: 0, to: bulk.count, by: step).map { bulk[$0] }
    }
    let results = try concurrentMap(chosen.compactMap { p in records[p].map { (p, $0) } }) { p, r in
      (p, try istat(image, record: r))
    }
    let refused = results.filter { $0.1 == nil }.map(\.0)
    #expect(refused.allSatisfy { $0 == "big.bin" }, "istat refused \(refused.prefix(6))")
    let istats = Dictionary(uniqueKeysWithValues: results.compactMap { p, s in s.map { (p, $0) } })
    #expect(istats.count >= min(full && layout.big ? 1000 : 100, names.count - 1), "\(istats.count) istat runs")
    // ntfscat -i: a sample of files.
    let files = mounted.filter { $0.value.type == "regular" && $0.value.size <= 1 << 20 }.keys.sorted()
    let catSample = stride(from: 0, to: files.count, by: max(1, files.count / (full ? 60 : 20))).map { files[$0] }
    let ntfscat = Dictionary(
      uniqueKeysWithValues: try concurrentMap(catSample.compactMap { p in records[p].map { (p, $0) } }) { p, r in
        let data = try runChecked(try requireTool("ntfscat"), ["-f", "-i", String(r), image]).stdout
        return (p, NTFSOracle.md5(Array(data)))
      })
    // icat RECORD-128-ID: a sample of the streams.
    let icatStreams = Dictionary(
      uniqueKeysWithValues: try concurrentMap(Array(streamAddresses.prefix(full ? 120 : 30))) { p, a in
        (p, NTFSOracle.md5(Array(try runChecked(try requireTool("icat"), [image, a]).stdout)))
      })
    // $MFT's clusters.
    let mftText = try runChecked(try requireTool("istat"), [image, "0"]).output
    var clusters: [UInt64] = []
    var inData = false
    for line in mftText.split(separator: "\n") {
      if line.hasPrefix("Type: ") {
        inData = line.hasPrefix("Type: $DATA (128-")
        continue
      }
      if inData { clusters += line.split(separator: " ").compactMap { UInt64($0) } }
    }
    let breaks = zip(clusters, clusters.dropFirst()).filter { $0.1 != $0.0 + 1 }.count
    print(
      "ntfs matrix oracles on \(URL(fileURLWithPath: image).lastPathComponent): \(fls.count) fls names, \(mounted.count) mounted, \(ntfsls.count) ntfsls, \(istats.count) istat, \(ntfscat.count) ntfscat, \(icatStreams.count) icat streams, $MFT in \(clusters.count) clusters with \(breaks) breaks, \(stale.count) stale names; \(String(format: "%.1f", Date().timeIntervalSince(started))) s"
    )
    return NTFSMatrixOracleRun(
      fls: fls, records: records, mounted: mounted, mountTimes: mountTimes, bigTail: bigTail, ntfsls: ntfsls,
      istats: istats,
      ntfscat: ntfscat,
      icatStreams: icatStreams,
      mftBreaks: breaks)
  }

  // MARK: The comparison

  static func open(_ vmdk: String, disk: MatrixDisk) throws -> NTFSFileSystem {
    let d = try Disk.open(vmdk)
    let diskLayout = try DiskLayout(disk: d, name: vmdk)
    let (entry, fs) = try diskLayout.fileSystem(partition: nil)
    #expect(entry.partition.index == disk.partition, "\(vmdk): file system in partition \(entry.partition.index)")
    #expect(entry.partition.startBytes == disk.startSector * 512)
    return try #require(fs as? NTFSFileSystem)
  }

  /// What every disk of a matrix must show (the same checks as FilesMatrixTests.check's
  /// first lines, which could call this): its raw conversion is `disk`, mmls's partitions are
  /// `vmdk-files partitions`', and the file system's partition is of `kind`.
  static func expectDiskMatches(_ vmdk: String, disk: MatrixDisk, kind: String, scratch: String) throws {
    let raw = "\(scratch)/conversion.raw"
    try Qemu.img("convert", "-O", "raw", vmdk, raw)
    defer { try? FileManager.default.removeItem(atPath: raw) }
    let same = try runProcess(try requireTool("qemu-img"), ["compare", "-q", "-f", "raw", "-F", "raw", raw, disk.raw])
    #expect(same.status == 0, "\(vmdk): its raw conversion differs from the disk it was made from")
    let parts = try partitionsJSON(vmdk)
    let listed = parts.map { p in
      [(p["start"] as? NSNumber)?.uint64Value ?? 0, (p["size"] as? NSNumber)?.uint64Value ?? 0].map { $0 / 512 }
    }
    #expect(listed.sorted { $0[0] < $1[0] } == (try mmlsPartitions(disk.raw)), "\(vmdk): partitions \(listed)")
    let fsPart = parts.first { ($0["index"] as? Int) == disk.partition }
    #expect(fsPart?["fileSystem"] as? String == kind, "\(vmdk): \(parts)")
  }

  /// The "path record" lines only one side has. sleuthkit 4.11.1 cuts some long names
  /// (NTFSOracleTests): a name of fls's that begins one of ours, with the same record, is no
  /// difference.
  static func flsDifferences(_ ours: Set<String>, _ fls: Set<String>) -> (Set<String>, Set<String>) {
    var onlyOurs = ours.subtracting(fls)
    var onlyFls = fls.subtracting(ours)
    for f in onlyFls {
      guard let space = f.lastIndex(of: " ") else { continue }
      // A cut inside a character leaves U+FFFD at the end (the 255 CJK characters: sleuthkit
      // lists the record under its full name as well as under the cut one).
      var prefix = String(f[..<space])
      while prefix.hasSuffix("\u{FFFD}") { prefix.removeLast() }
      let record = f[space...]
      if let o = ours.first(where: { $0.hasSuffix(record) && $0.hasPrefix(prefix) && $0.count > f.count }) {
        onlyOurs.remove(o)
        onlyFls.remove(f)
      }
    }
    return (onlyOurs, onlyFls)
  }

  static func timeText(_ t: FileTime?) -> String? { t.map { "\($0.seconds).\($0.nanoseconds)" } }

  static func check(
    _ layout: NTFSMatrixLayout, vmdk: String, disk: MatrixDisk, oracle: NTFSMatrixOracleRun, scratch: String,
    totals: inout NTFSMatrixTotals
  ) throws {
    try expectDiskMatches(vmdk, disk: disk, kind: "ntfs", scratch: scratch)
    totals.disks += 1

    let fs = try open(vmdk, disk: disk)
    #expect(fs.boot.clusterSize == layout.cluster && fs.boot.mftRecordSize == layout.record)
    #expect(fs.warnings.isEmpty, "\(vmdk): \(fs.warnings)")
    let walkStarted = Date()
    let mine = try NTFSOracle.walk(fs)
    print(
      "ntfs matrix \(vmdk): \(mine.count) names and streams walked in \(String(format: "%.1f", Date().timeIntervalSince(walkStarted))) s"
    )

    // fls: names, record numbers, streams.
    let (onlyOurs, onlyFls) = flsDifferences(Set(mine.map { "\($0.key) \($0.value.id)" }), oracle.fls)
    #expect(
      onlyOurs.isEmpty && onlyFls.isEmpty,
      "\(vmdk): only ours \(onlyOurs.count) \(onlyOurs.sorted().prefix(8)); only fls \(onlyFls.count) \(onlyFls.sorted().prefix(8))"
    )
    totals.flsNames += oracle.fls.count
    // ntfsls: every name but the system files'.
    let plain = Set(
      mine.keys.filter { p in !p.contains(":") && !p.split(separator: "/").contains { $0.hasPrefix("$") } })
    #expect(
      plain == oracle.ntfsls,
      "\(vmdk): only ours \(plain.subtracting(oracle.ntfsls).sorted().prefix(6)), only ntfsls \(oracle.ntfsls.subtracting(plain).sorted().prefix(6))"
    )
    totals.ntfslsNames += oracle.ntfsls.count

    // The ntfs-3g mount: every file and stream.
    var mismatches: [String] = []
    for (path, theirs) in oracle.mounted {
      guard var m = mine[path]?.seen else {
        mismatches.append("\(path): only in the ntfs-3g mount")
        continue
      }
      if theirs.links == nil { m.links = nil }
      if theirs.type == "directory" { m.size = theirs.size }
      // A DOS 8.3 twin counts as a link to ntfs-3g, not to us (NTFSOracleTests).
      if path == "A long file name.txt" && theirs.links == 2 { m.links = 2 }
      if m != theirs { mismatches.append("\(path): ours \(m), ntfs-3g \(theirs)") }
      if theirs.md5 != nil && theirs.type == "stream" { totals.streamDigests += 1 }
      if theirs.md5 != nil && theirs.type != "stream" { totals.fileDigests += 1 }
      if theirs.links != nil { totals.links += 1 }
      if theirs.mtime != nil { totals.mtimes += 1 }
    }
    // atime and ctime ($STANDARD_INFORMATION's accessed and MFT-changed) of every name.
    var timeDiffs: [String] = []
    for (path, theirs) in oracle.mountTimes {
      guard let id = mine[path]?.id else { continue }
      let a = try fs.stat(id)
      let ours = [timeText(a.accessTime) ?? "-", timeText(a.changeTime) ?? "-"]
      if ours != theirs { timeDiffs.append("\(path): ours \(ours), ntfs-3g \(theirs)") }
      totals.otherTimes += 2
    }
    #expect(timeDiffs.isEmpty, "\(vmdk): \(timeDiffs.count) times differ: \(timeDiffs.sorted().prefix(6))")
    let visible = mine.keys.filter { !$0.hasPrefix("$") && $0 != "winlink" && $0 != "junction" }
    #expect(
      visible.count == oracle.mounted.count, "\(vmdk): ours \(visible.count) visible, ntfs-3g \(oracle.mounted.count)")
    #expect(mismatches.isEmpty, "\(vmdk): \(mismatches.count) differ from ntfs-3g: \(mismatches.sorted().prefix(8))")
    totals.mountNames += oracle.mounted.count

    // istat: links, times to 100 ns, sizes.
    var statDiffs: [String] = []
    for (p, s) in oracle.istats {
      // (A name fls cut is found by its record.)
      guard let id = mine[p]?.id ?? oracle.records[p] else { continue }
      let a = try fs.stat(id)
      var o = NTFSIStat(flags: s.flags)
      o.links = p == "A long file name.txt" && s.links == 2 ? 2 : a.linkCount
      // istat's Links is the record's count of names, folders included; ours counts names
      // too, so both are compared.
      o.dataSize = a.type == .regular ? a.size : s.dataSize
      for (key, t) in [("a", a.accessTime), ("m", a.modificationTime), ("c", a.changeTime), ("cr", a.creationTime)] {
        o.times[key] = timeText(t)
      }
      if o != s { statDiffs.append("\(p): ours \(o), istat \(s)") }
      totals.istatTimes += s.times.count
    }
    #expect(statDiffs.isEmpty, "\(vmdk): \(statDiffs.count) differ from istat: \(statDiffs.sorted().prefix(6))")

    // ntfscat and icat.
    for (p, md5) in oracle.ntfscat { #expect(mine[p]?.seen.md5 == md5, "\(vmdk): ntfscat \(p)") }
    for (p, md5) in oracle.icatStreams { #expect(mine[p]?.seen.md5 == md5, "\(vmdk): icat \(p)") }
    #expect(oracle.icatStreams.count >= 4 && oracle.ntfscat.count >= 10)

    // What the tree must hold, so that the comparisons above covered it.
    #expect(mine.values.filter { $0.seen.type == "regular" }.count >= (layout.big ? 10_000 : 150))
    for p in ["link-rel", "link-abs", "winlink", "junction"] { #expect(mine[p]?.seen.type == "symlink", "\(p)") }
    #expect(try fs.reparseTag(try #require(mine["junction"]?.id)) == 0xA000_0003)
    #expect(mine["hard"]?.seen.links == 3)
    #expect(mine.keys.contains { $0.hasPrefix("deep/level1/") && $0.split(separator: "/").count >= 16 })
    for name in [String(repeating: "漢", count: 255), String(repeating: "🙂", count: 127)] {
      #expect(mine["names/\(name)"] != nil, "\(vmdk): names/\(name.prefix(3))…")
    }
    let text = try #require(mine["comp/text.txt"])
    #expect(try fs.fileAttributes(text.id) & 0x800 != 0, "comp/text.txt is not compressed")
    #expect(oracle.istats["comp/text.txt"]?.flags.contains("Compressed") == true, "istat: comp/text.txt")
    // Stream names without case (Windows: one stream).
    let caseADS = try #require(mine["case-ads.txt"]).id
    #expect(try fs.stream(named: "MIXEDCASE", of: caseADS)?.displayName == "MixedCase")
    var folded = [UInt8](repeating: 0, count: 64)
    let n = try folded.withUnsafeMutableBytes { try fs.readStream(caseADS, named: "mixedcase", at: 0, into: $0) }
    #expect(NTFSOracle.md5(Array(folded[0..<n])) == oracle.mounted["case-ads.txt:MixedCase"]?.md5)
    let islands = try #require(mine["sparse/islands.bin"])
    #expect(islands.seen.size == 64 << 20)
    #expect(try fs.dataRanges(islands.id).reduce(0) { $0 + $1.count } <= 1 << 20, "the islands are not sparse")
    let big = try #require(mine["big.bin"])
    #expect(big.seen.size == 5 << 30 + 8192)
    var tail = [UInt8](repeating: 0, count: 8192)
    _ = try tail.withUnsafeMutableBytes { try fs.read(big.id, at: 5 << 30, into: $0) }
    #expect(tail == NTFSOracle.content(8192, seed: 12) && NTFSOracle.md5(tail) == oracle.bigTail, "big.bin at 5 GiB")
    if layout.big {
      #expect(fs.mftRuns > 1 && oracle.mftBreaks > 0, "$MFT: \(fs.mftRuns) runs, istat \(oracle.mftBreaks) breaks")
      print("ntfs matrix \(vmdk): $MFT in \(fs.mftRuns) runs (istat: \(oracle.mftBreaks + 1) stretches)")
    }

    // vmdk-files: a few files and the streams.
    for p in ["Folder/Sub Folder/readme.txt", "comp/mixed.bin", "names/日本語のファイル名.txt"] {
      let r = try vmdkFiles(["cat", vmdk, "/" + p])
      #expect(
        r.status == 0 && NTFSOracle.md5(Array(r.stdout)) == oracle.mounted[p]?.md5, "\(vmdk): vmdk-files cat \(p)")
      totals.toolReads += 1
    }
    let ls = try vmdkFiles(["ls", "--streams", vmdk, "/"])
    #expect(ls.output.contains("ads.txt:secret") && ls.output.contains("case-ads.txt:MixedCase"), "\(ls.output)")
  }

  /// The chain: the child shows the changes, the parent the old files; the child holds only
  /// the chunks that changed.
  static func checkChain(
    parent: String, child: String, v1: NTFSMatrixOracleRun, chunks: Int, changes: (changed: [UInt8], added: [UInt8])
  ) throws {
    #expect(try vmdkFiles(["cat", child, "/" + NTFSMatrixTree.changed]).stdout == Data(changes.changed))
    #expect(try vmdkFiles(["cat", child, "/" + NTFSMatrixTree.added]).stdout == Data(changes.added))
    #expect(try vmdkFiles(["cat", child, "/" + NTFSMatrixTree.deleted]).status == 2)
    let old = try vmdkFiles(["cat", parent, "/" + NTFSMatrixTree.changed])
    #expect(NTFSOracle.md5(Array(old.stdout)) == v1.mounted[NTFSMatrixTree.changed]?.md5)
    #expect(try vmdkFiles(["cat", parent, "/" + NTFSMatrixTree.added]).status == 2)
    let deleted = try vmdkFiles(["cat", parent, "/" + NTFSMatrixTree.deleted])
    #expect(deleted.status == 0 && NTFSOracle.md5(Array(deleted.stdout)) == v1.mounted[NTFSMatrixTree.deleted]?.md5)
    // The parent's names are fls's on v1.
    let d = try Disk.open(parent)
    let (_, pfs) = try DiskLayout(disk: d, name: parent).fileSystem(partition: nil)
    let fs = try #require(pfs as? NTFSFileSystem)
    var names: Set<String> = []
    try fs.walk(from: fs.root) { item in
      names.insert("\(item.displayPath) \(item.entry.id)")
      for s in try fs.streams(item.entry.id) { names.insert("\(item.displayPath):\(s.displayName) \(item.entry.id)") }
      return item.entry.type == .directory
    }
    let (onlyOurs, onlyFls) = NTFSMatrixTests.flsDifferences(names, v1.fls)
    #expect(
      onlyOurs.isEmpty && onlyFls.isEmpty,
      "\(parent): the parent's names differ from fls on v1: \(onlyOurs.sorted().prefix(4)) \(onlyFls.sorted().prefix(4))"
    )
    let map = try Qemu.map(child)
    let own = map.filter { $0.depth == 0 && $0.data }.reduce(UInt64(0)) { $0 + $1.length }
    #expect(chunks > 0 && own == UInt64(chunks) * 65536, "\(child): \(own) bytes of its own, \(chunks) chunks written")
    let parentData = try Qemu.map(parent).filter { $0.data }.reduce(UInt64(0)) { $0 + $1.length }
    #expect(own * 2 < parentData, "\(child): \(own) bytes of its own, the parent \(parentData)")
    print("ntfs matrix chain: the child holds \(chunks) chunks of 64 KiB, the parent \(parentData) bytes")
  }
}
