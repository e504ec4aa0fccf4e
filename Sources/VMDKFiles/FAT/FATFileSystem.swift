// FAT12/16/32 with VFAT long names, read-only. The FAT in use is decoded once at open (capped);
// chains are followed with a length cap from the file size and loop detection; directories are
// capped at 65,536 entries. A file's id is the byte offset of its short entry in the volume
// (the root is 0), so stat and read need no table of their own. FAT stores local time with
// no zone: the times are the guest's wall clock taken as UTC, and `timesAreLocal` says so.
import VMDKBlock

/// Caps on what a FAT volume may claim, with their reasons.
public enum FATLimits {
  /// Clusters whose FAT is decoded into memory (4 bytes each: 32 MiB at this cap, which
  /// covers FAT32 volumes of 32 GiB with 4 KiB clusters and 256 GiB with 32 KiB ones).
  public static let maxClusters: UInt32 = 8 << 20
  /// Entries in one directory (Linux FAT_MAX_DIR_ENTRIES; 2 MiB of entries).
  public static let maxDirectoryEntries = 65_536
}

public final class FATFileSystem: FileSystem, FileSystemProbe {
  public let volume: any VolumeReader
  let geometry: FATGeometry
  /// fat[n] = the next cluster of n, masked to the width (FAT32: low 28 bits).
  let fat: [UInt32]
  public let label: String?
  public let uuid: String?
  public let warnings: [String]
  /// The last chain followed, for sequential reads of a large file.
  private let lastChain = Locked<(first: UInt32, clusters: [UInt32], complete: Bool)?>(nil)

  public var kind: String { "fat\(geometry.width.rawValue)" }
  public var root: FileID { 0 }

  public static func probe(_ volume: any VolumeReader) throws -> (any FileSystem)? {
    try open(volume)
  }

  /// Opens the FAT file system of `volume`: nil when it is not FAT.
  public static func open(_ volume: any VolumeReader) throws -> FATFileSystem? {
    guard volume.size >= 512 else { return nil }
    let boot = try volume.read(at: 0, count: 512)
    guard let g = try FATBootSector.parse(boot, volumeSize: volume.size, name: volume.name) else { return nil }
    guard g.clusterCount <= FATLimits.maxClusters else {
      throw VMDKError(
        .fileSystemLimit, "FAT volume with \(g.clusterCount) clusters is more than the cap of \(FATLimits.maxClusters)",
        file: volume.name, offset: 13)
    }
    let fat = try readFAT(g, volume: volume)
    return try FATFileSystem(volume: volume, geometry: g, fat: fat)
  }

  init(volume: any VolumeReader, geometry: FATGeometry, fat: [UInt32]) throws {
    self.volume = volume
    self.geometry = geometry
    self.fat = fat
    self.uuid = geometry.serial
    var w = geometry.warnings
    w.append("FAT stores local time without a time zone: times are the guest's wall clock shown as UTC")
    self.warnings = w
    // The label: the root's volume-ID entry, else the boot sector's copy.
    var rootLabel: String?
    let scanned = try FATFileSystem.scanRoot(volume: volume, geometry: geometry, fat: fat)
    rootLabel = scanned
    self.label = rootLabel ?? geometry.bootLabel
  }

  /// Decodes the FAT in use, 1 MiB at a time.
  static func readFAT(_ g: FATGeometry, volume: any VolumeReader) throws -> [UInt32] {
    let entries = Int(g.clusterCount) + 2
    var fat = [UInt32](repeating: 0, count: entries)
    switch g.width {
    case .fat12:
      let bytes = try volume.read(at: g.fatOffset, count: min(Int(g.fatBytes), entries * 3 / 2 + 2))
      for n in 0..<entries {
        let o = n + n / 2
        guard o + 1 < bytes.count else { break }
        let v = UInt32(bytes.le16(o))
        fat[n] = n & 1 == 1 ? v >> 4 : v & 0xFFF
      }
    case .fat16, .fat32:
      let width = g.width == .fat16 ? 2 : 4
      let total = entries * width
      let chunk = 1 << 20
      var done = 0
      while done < total {
        let n = min(chunk, total - done)
        let bytes = try volume.read(at: g.fatOffset + UInt64(done), count: n)
        let first = done / width
        for i in 0..<(n / width) {
          fat[first + i] = width == 2 ? UInt32(bytes.le16(i * 2)) : bytes.le32(i * 4) & 0x0FFF_FFFF
        }
        done += n
      }
    }
    return fat
  }

  // MARK: Chains

  /// Follows the chain from `first` for at most `limit` clusters. A loop, a free, bad or
  /// out-of-range link before the end is corruption.
  func chain(from first: UInt32, limit: Int, stopAtLimit: Bool, what: String) throws -> [UInt32] {
    if let c = lastChain.withLock({ $0 }), c.first == first,
      c.complete ? (c.clusters.count <= limit || stopAtLimit) : (stopAtLimit && c.clusters.count >= limit)
    {
      return stopAtLimit ? Array(c.clusters.prefix(limit)) : c.clusters
    }
    var complete = true
    var clusters: [UInt32] = []
    var seen = Set<UInt32>()
    var n = first
    let eoc = geometry.endOfChain
    while true {
      guard n >= 2, n <= geometry.maxCluster else {
        throw VMDKError(
          .corruptFileSystem,
          "\(what): cluster \(n) after \(clusters.count) clusters is outside 2...\(geometry.maxCluster)",
          file: volume.name, offset: fatOffset(of: clusters.last ?? first))
      }
      guard seen.insert(n).inserted else {
        throw VMDKError(
          .corruptFileSystem, "\(what): the cluster chain loops back to cluster \(n) after \(clusters.count) clusters",
          file: volume.name, offset: fatOffset(of: clusters.last ?? first))
      }
      clusters.append(n)
      if clusters.count >= limit {
        if stopAtLimit {
          complete = fat[Int(n)] >= eoc
          break
        }
        throw VMDKError(
          .fileSystemLimit, "\(what): the cluster chain is longer than the cap of \(limit) clusters",
          file: volume.name, offset: fatOffset(of: n))
      }
      let next = fat[Int(n)]
      if next >= eoc { break }
      n = next
    }
    lastChain.withLock { $0 = (first, clusters, complete) }
    return clusters
  }

  func fatOffset(of cluster: UInt32) -> UInt64 {
    switch geometry.width {
    case .fat12: geometry.fatOffset + UInt64(cluster) + UInt64(cluster / 2)
    case .fat16: geometry.fatOffset + UInt64(cluster) * 2
    case .fat32: geometry.fatOffset + UInt64(cluster) * 4
    }
  }

  // MARK: Entries

  /// A short directory entry, decoded.
  struct Entry {
    var raw: [UInt8]
    var attributes: UInt8 { raw[11] }
    var isDirectory: Bool { raw[11] & 0x10 != 0 }
    var size: UInt32 { raw.le32(28) }
  }

  func firstCluster(_ e: [UInt8]) -> UInt32 {
    let lo = UInt32(e.le16(26))
    return geometry.width == .fat32 ? (UInt32(e.le16(20)) << 16 | lo) & 0x0FFF_FFFF : lo
  }

  /// The short entry at `id`, checked to be one.
  func entry(_ id: FileID) throws -> [UInt8] {
    guard id % 32 == 0, id >= geometry.rootOffset, id <= volume.size, volume.size - id >= 32 else {
      throw VMDKError(.invalidArgument, "FAT file id \(id) is not a directory entry", file: volume.name, offset: id)
    }
    let e = try volume.read(at: id, count: 32)
    guard e[0] != 0, e[0] != 0xE5, e[11] & 0x3F != 0x0F, e[11] & 0x08 == 0 else {
      throw VMDKError(.invalidArgument, "FAT file id \(id) is not a file's entry", file: volume.name, offset: id)
    }
    return e
  }

  /// The bytes of a directory with the volume offset of each 32-byte entry's cluster run.
  func directoryBytes(_ id: FileID) throws -> (bytes: [UInt8], offsets: [UInt64]) {
    let cap = FATLimits.maxDirectoryEntries * 32
    if id == root && geometry.width != .fat32 {
      let bytes = try volume.read(at: geometry.rootOffset, count: geometry.rootBytes)
      return (bytes, [geometry.rootOffset])
    }
    let first: UInt32
    if id == root {
      first = geometry.rootCluster
    } else {
      let e = try entry(id)
      guard e[11] & 0x10 != 0 else {
        throw VMDKError(.invalidArgument, "not a directory", file: volume.name, offset: id)
      }
      first = firstCluster(e)
      if first == 0 { return ([], []) }
    }
    let limit = max(1, cap / geometry.clusterSize)
    let clusters = try chain(from: first, limit: limit, stopAtLimit: false, what: "directory at \(id)")
    var bytes: [UInt8] = []
    bytes.reserveCapacity(clusters.count * geometry.clusterSize)
    var offsets: [UInt64] = []
    for c in clusters {
      let o = geometry.offset(ofCluster: c)
      bytes += try volume.read(at: o, count: geometry.clusterSize)
      offsets.append(o)
    }
    return (bytes, offsets)
  }

  /// Walks a directory's entries, long names joined; `body` gets the name, the short
  /// entry's volume offset and the entry.
  func entries(_ id: FileID, _ body: ([UInt8], UInt64, [UInt8]) throws -> Void) throws {
    let (bytes, offsets) = try directoryBytes(id)
    let perRun = id == root && geometry.width != .fat32 ? max(bytes.count, 1) : geometry.clusterSize
    var long: [[UInt16]] = []
    var expected = 0
    var sum: UInt8 = 0
    var count = 0
    for o in stride(from: 0, to: bytes.count - bytes.count % 32, by: 32) {
      let e = Array(bytes[o..<(o + 32)])
      if e[0] == 0 { break }
      count += 1
      guard count <= FATLimits.maxDirectoryEntries else {
        throw VMDKError(
          .fileSystemLimit, "directory with more than \(FATLimits.maxDirectoryEntries) entries", file: volume.name,
          offset: offsets[o / perRun] + UInt64(o % perRun))
      }
      if e[0] == 0xE5 {
        long = []
        expected = 0
        continue
      }
      if e[11] & 0x3F == 0x0F {
        let ord = Int(e[0] & 0x3F)
        if e[0] & 0x40 != 0, (1...20).contains(ord) {
          long = [FATNames.units(e)]
          expected = ord - 1
          sum = e[13]
        } else if expected > 0, ord == expected, e[13] == sum {
          long.append(FATNames.units(e))
          expected -= 1
        } else {
          long = []
          expected = -1
        }
        continue
      }
      defer {
        long = []
        expected = 0
      }
      if e[11] & 0x08 != 0 { continue }  // volume label (or invalid 0x18)
      if e[0] == 0x2E {
        let rest = e[1..<11]
        if rest.allSatisfy({ $0 == 0x20 }) || (e[1] == 0x2E && e[2..<11].allSatisfy { $0 == 0x20 }) { continue }
      }
      var name = FATNames.shortName(e)
      if !long.isEmpty, expected == 0, FATNames.checksum(e) == sum {
        name = FATNames.utf8(fromUTF16: long.reversed().flatMap { $0 })
      }
      let offset = offsets[o / perRun] + UInt64(o % perRun)
      try body(name, offset, e)
    }
  }

  static func scanRoot(volume: any VolumeReader, geometry: FATGeometry, fat: [UInt32]) throws -> String? {
    // Reads only the root's first cluster (or the fixed root) for the label entry.
    let offset = geometry.width == .fat32 ? geometry.offset(ofCluster: geometry.rootCluster) : geometry.rootOffset
    let n = geometry.width == .fat32 ? geometry.clusterSize : geometry.rootBytes
    guard offset <= volume.size, UInt64(n) <= volume.size - offset else {
      throw VMDKError(
        .corruptFileSystem, "the root directory runs past the end of the volume", file: volume.name, offset: offset)
    }
    let bytes = try volume.read(at: offset, count: n)
    for o in stride(from: 0, to: n - n % 32, by: 32) {
      if bytes[o] == 0 { break }
      if bytes[o] == 0xE5 { continue }
      let attr = bytes[o + 11]
      if attr & 0x3F != 0x0F, attr & 0x18 == 0x08 {
        let l = FATNames.oem(Array(bytes[o..<(o + 11)])).trimmingTrailingSpaces()
        return l.isEmpty ? nil : l
      }
    }
    return nil
  }

  // MARK: FileSystem

  public func list(_ id: FileID) throws -> [DirectoryEntry] {
    var result: [DirectoryEntry] = []
    try entries(id) { name, offset, e in
      result.append(DirectoryEntry(name: name, id: offset, type: e[11] & 0x10 != 0 ? .directory : .regular))
    }
    return result
  }

  public func stat(_ id: FileID) throws -> FileAttributes {
    if id == root {
      return FileAttributes(id: root, type: .directory, size: 0, mode: 0o755, linkCount: 1, timesAreLocal: true)
    }
    let e = try entry(id)
    let dir = e[11] & 0x10 != 0
    let readOnly = e[11] & 0x01 != 0
    let mode: UInt32 = dir ? (readOnly ? 0o555 : 0o755) : (readOnly ? 0o444 : 0o644)
    let created = FATTime.time(date: e.le16(16), time: e.le16(14), hundredths: e[13])
    return FileAttributes(
      id: id, type: dir ? .directory : .regular, size: dir ? 0 : UInt64(e.le32(28)), mode: mode, linkCount: 1,
      accessTime: FATTime.time(date: e.le16(18), time: 0, hundredths: 0),
      modificationTime: FATTime.time(date: e.le16(24), time: e.le16(22), hundredths: 0),
      creationTime: created, timesAreLocal: true)
  }

  public func read(_ id: FileID, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    let e = try entry(id)
    guard e[11] & 0x10 == 0 else {
      throw VMDKError(.invalidArgument, "a directory has no file data", file: volume.name, offset: id)
    }
    let size = UInt64(e.le32(28))
    guard offset < size, buffer.count > 0 else { return 0 }
    let want = Int(min(UInt64(buffer.count), size - offset))
    let cs = UInt64(geometry.clusterSize)
    let needed = Int((size + cs - 1) / cs)
    let first = firstCluster(e)
    guard first != 0 else {
      throw VMDKError(
        .corruptFileSystem, "a file of \(size) bytes has no first cluster", file: volume.name, offset: id + 26)
    }
    let clusters = try chain(from: first, limit: needed, stopAtLimit: true, what: "file at \(id)")
    guard clusters.count == needed else {
      throw VMDKError(
        .corruptFileSystem,
        "the cluster chain ends after \(clusters.count) clusters; the file's \(size) bytes need \(needed)",
        file: volume.name, offset: fatOffset(of: clusters.last ?? first))
    }
    var done = 0
    while done < want {
      let pos = offset + UInt64(done)
      var index = Int(pos / cs)
      let within = pos % cs
      // Merge physically contiguous clusters into one read.
      var run = UInt64(1)
      while index + Int(run) < clusters.count, clusters[index + Int(run)] == clusters[index] + UInt32(run),
        (run * cs - within) < UInt64(want - done)
      {
        run += 1
      }
      let n = Int(min(run * cs - within, UInt64(want - done)))
      let from = geometry.offset(ofCluster: clusters[index]) + within
      try volume.read(at: from, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]))
      done += n
      index += Int(run)
    }
    return want
  }

  /// FAT names match without regard to ASCII case (as DOS and Windows compare them); an
  /// exact match wins.
  public func entry(named name: [UInt8], in folder: FileID) throws -> DirectoryEntry? {
    let entries = try list(folder)
    let lower = asciiLower(name)
    return entries.first { $0.name == name } ?? entries.first { asciiLower($0.name) == lower }
  }

  public func readlink(_ id: FileID) throws -> [UInt8] {
    throw VMDKError(.invalidArgument, "FAT has no symbolic links", file: volume.name, offset: id)
  }
}

/// FAT dates and times: local wall-clock time, no zone.
enum FATTime {
  /// Date bits 0-4 day, 5-8 month, 9-15 years since 1980; time bits 0-4 seconds / 2, 5-10
  /// minutes, 11-15 hours. A zero date is "not set". Day or month 0 count as 1 (Linux).
  static func time(date: UInt16, time: UInt16, hundredths: UInt8) -> FileTime? {
    guard date != 0 else { return nil }
    let day = max(1, Int64(date & 0x1F))
    let month = max(1, min(12, Int64((date >> 5) & 0x0F)))
    let year = 1980 + Int64(date >> 9)
    let h = Int64(time >> 11)
    let m = Int64((time >> 5) & 0x3F)
    let s = Int64(time & 0x1F) * 2
    let extra = Int64(min(hundredths, 199))
    let days = daysFromCivil(year, month, day)
    let seconds = days * 86400 + h * 3600 + m * 60 + s + extra / 100
    return FileTime(seconds: seconds, nanoseconds: UInt32(extra % 100) * 10_000_000)
  }

  /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
  static func daysFromCivil(_ y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
    let y = m <= 2 ? y0 - 1 : y0
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let mp = (m + 9) % 12
    let doy = (153 * mp + 2) / 5 + d - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146097 + doe - 719468
  }
}
