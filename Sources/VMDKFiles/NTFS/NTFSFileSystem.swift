// NTFS, read-only, behind the FileSystem protocol. FileIDs are MFT record numbers. The MFT is
// found through the boot sector and read through its own $DATA runlist (which may be spread
// over extension records named by $MFT's attribute list). $LogFile is never replayed: a volume
// marked dirty is read as it is on disk, and a warning says so.
import VMDKBlock

public final class NTFSFileSystem: FileSystem, FileSystemProbe, Sendable {
  // Caps, with their reasons.
  /// Windows limits an attribute list to 256 KiB (ntfs-3g layout.h).
  public static let maxAttributeListBytes: UInt64 = 256 << 10
  /// Each list entry is at least 32 bytes, so 256 KiB names at most 8192 records.
  public static let maxExtensionRecords = 8192
  /// Index B+trees of real volumes are a few levels deep; 32 is far beyond them.
  public static let maxIndexDepth = 32
  /// A compression unit larger than this is refused (16 clusters of 64 KiB).
  public static let maxCompressionUnitBytes = 1 << 20
  /// Parsed files kept in memory.
  static let cacheFiles = 8192
  /// $MFT's bitmap is held for listings up to 16 MiB (134 million records); a larger $MFT
  /// (or one a hostile boot sector claims) is listed by record headers instead.
  static let maxBitmapBytes: UInt64 = 16 << 20

  public let volume: any VolumeReader
  public let boot: NTFSBootSector
  let mft: NTFSStream
  let recordCount: UInt64
  private let files = Locked(FileCache())
  private let mftChunks = Locked(MFTChunkCache())
  private let upcaseTable = Locked<[UInt16]?>(nil)
  private let lastUnit = Locked<(key: String, bytes: [UInt8])?>(nil)
  public let warnings: [String]
  public let label: String?
  /// True when $Volume says the volume is dirty (not cleanly unmounted).
  public let isDirty: Bool
  /// True when the volume is not marked dirty and $LogFile has nothing to replay: its
  /// folder indexes then agree with the records they name, and a listing takes an index
  /// entry's type and sequence as they are (checking only $MFT's bitmap), as Windows and
  /// ntfs-3g do. On any other volume each entry's record header is read to hide stale ones.
  public let isClean: Bool
  /// $MFT's $BITMAP (one bit per record in use), read at the first listing; nil inside
  /// when it cannot be read.
  private let mftBitmap = Locked<[UInt8]??>(nil)
  /// NTFS version from $VOLUME_INFORMATION ("3.1").
  public let version: String

  /// Runs of $MFT's own $DATA (more than one: a fragmented MFT).
  public var mftRuns: Int { mft.runs.count }
  /// Whether records 0-3 (or $MFT's runlist) came from $MFTMirr because $MFT's record 0 was
  /// unreadable; `warnings` says why.
  public let usesMFTMirror: Bool
  /// MFT records the volume has room for.
  public var mftRecords: UInt64 { recordCount }

  public var kind: String { "ntfs" }
  public var root: FileID { 5 }
  public var uuid: String? {
    let hex = String(boot.serial, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 16 - hex.count)) + hex
  }

  private struct FileCache {
    /// Room for every entry from the start: growing would move each cached file.
    var files: [UInt64: NTFSFile] = Dictionary(minimumCapacity: NTFSFileSystem.cacheFiles)
    var ring: [UInt64] = []
    var next = 0
  }

  /// $MFT is read 16 KiB at a time (16 records of 1 KiB in one volume read) and the last 32
  /// chunks are kept (512 KiB): a walk meets the records of a folder in roughly ascending
  /// order. (64 KiB chunks made `ls -R` of 4,500 folders among 52,000 files slower: a clean
  /// volume's listing reads only the folders' records, about one in twelve.)
  static let mftChunkBytes = 16 << 10
  static let mftChunkCount = 32

  private struct MFTChunkCache {
    /// Chunk index and its bytes; empty bytes: the chunk could not be read whole.
    var chunks: [(index: UInt64, bytes: [UInt8])] = []
    var next = 0
  }

  public static func probe(_ volume: any VolumeReader) throws -> (any FileSystem)? {
    guard volume.size >= UInt64(NTFSBootSector.size) else { return nil }
    let raw = try volume.read(at: 0, count: NTFSBootSector.size)
    guard NTFSBootSector.isNTFS(raw) else { return nil }
    return try NTFSFileSystem(volume: volume)
  }

  public init(volume: any VolumeReader) throws {
    self.volume = volume
    var mirrorNote: String?
    do {
      guard volume.size >= UInt64(NTFSBootSector.size) else {
        throw NTFSError.corrupt("volume of \(volume.size) bytes has no room for a boot sector")
      }
      let boot = try NTFSBootSector(
        parsing: try volume.read(at: 0, count: NTFSBootSector.size), volumeSize: volume.size)
      self.boot = boot
      let (mft, count, note) = try Self.bootstrapMFTOrMirror(volume: volume, boot: boot)
      self.mft = mft
      recordCount = count
      mirrorNote = note
    } catch let e as VMDKError {
      throw e.at(file: volume.name)
    }
    usesMFTMirror = mirrorNote != nil
    var notes: [String] = mirrorNote.map { [$0] } ?? []
    let fsBytes = boot.totalSectors * UInt64(boot.bytesPerSector)
    if fsBytes > volume.size {
      notes.append(
        "the volume (\(volume.size) bytes) is smaller than the file system (\(fsBytes) bytes); clusters past its end cannot be read"
      )
    }
    // $Volume: label, version, dirty flag.
    var dirty = false
    var label: String?
    var version = "?"
    do {
      let v = try Self.loadFile(3, mft: mft, volume: volume, boot: boot, recordCount: recordCount)
      if let name = v.volumeName, !name.isEmpty { label = String(decoding: ntfsUTF8(name), as: UTF8.self) }
      if let info = v.volumeInformation, info.count >= 12 {
        let b = NTFSBytes(info)
        version = "\(b.u8(8)).\(b.u8(9))"
        dirty = b.u16(10) & 1 != 0
      }
    } catch let e as VMDKError {
      throw e.at(file: volume.name)
    }
    if dirty {
      notes.append("the volume is marked dirty: $LogFile was not replayed, so metadata may be inconsistent")
    }
    let logClean = Self.logFileIsClean(volume: volume, boot: boot, mft: mft, recordCount: recordCount)
    if !dirty && !logClean {
      notes.append(
        "$LogFile has changes that were not replayed (Windows crashed, hibernated or used fast startup): metadata may be inconsistent"
      )
    }
    self.label = label
    self.version = version
    isDirty = dirty
    isClean = !dirty && logClean
    warnings = notes
    let r = try withFile { try file(5) }
    guard r.isDirectory, r.indexRoot != nil else {
      throw VMDKError(.corruptFileSystem, "ntfs: the root (record 5) is not a directory", file: volume.name)
    }
  }

  func withFile<T>(_ body: () throws -> T) throws -> T {
    do {
      return try body()
    } catch let e as VMDKError {
      throw e.at(file: volume.name)
    }
  }

  // MARK: Bootstrapping and records

  /// bootstrapMFT; when $MFT's record 0 is torn or its runlist unreadable, the same from the
  /// copy of record 0 in $MFTMirr (the boot sector's second LCN), with records 0-3 then read
  /// from $MFTMirr (mirroring) and every other record from $MFT. The note says so;
  /// when the mirror fails too, $MFT's own error is thrown.
  static func bootstrapMFTOrMirror(volume: any VolumeReader, boot: NTFSBootSector) throws -> (
    NTFSStream, UInt64, String?
  ) {
    do {
      let (stream, count) = try bootstrapMFT(volume: volume, boot: boot)
      return (stream, count, nil)
    } catch let first as VMDKError {
      let mirrorAt = boot.mftMirrorLCN * UInt64(boot.clusterSize)
      guard let fromMirror = try? bootstrapMFT(volume: volume, boot: boot, recordZeroAt: mirrorAt) else {
        throw first
      }
      let (stream, count) = fromMirror
      let why = "$MFT's record 0 is unreadable (\(first.message))"
      guard let mirrored = mirroring(stream, volume: volume, boot: boot, recordCount: count) else {
        return (
          stream, count,
          "\(why): $MFT's runlist was taken from $MFTMirr at cluster \(boot.mftMirrorLCN); records 0-3 are still read from $MFT ($MFTMirr holds less than $MFT's first cluster)"
        )
      }
      return (mirrored, count, "\(why): records 0-3 are read from $MFTMirr at cluster \(boot.mftMirrorLCN)")
    }
  }

  /// $MFT's stream with its first records mapped to $MFTMirr's clusters instead: four
  /// records, or the first cluster when it holds more (the mirror then keeps a whole cluster,
  /// as mkntfs and ntfs-3g write it). Nil when the mirror's own $DATA (record 1, read through
  /// it) is smaller than that.
  static func mirroring(_ mft: NTFSStream, volume: any VolumeReader, boot: NTFSBootSector, recordCount: UInt64)
    -> NTFSStream?
  {
    let cs = UInt64(boot.clusterSize)
    let k = max(1, 4 * UInt64(boot.mftRecordSize) / cs)
    var runs = [NTFSRun(vcn: 0, length: k, lcn: boot.mftMirrorLCN)]
    for r in mft.runs where r.vcn + r.length > k {
      let skip = r.vcn >= k ? 0 : k - r.vcn
      runs.append(NTFSRun(vcn: r.vcn + skip, length: r.length - skip, lcn: r.lcn.map { $0 + skip }))
    }
    var out = mft
    out.runs = runs
    guard let mirror = try? loadFile(1, mft: out, volume: volume, boot: boot, recordCount: recordCount),
      let size = mirror.data[[]]?.size, size >= k * cs
    else { return nil }
    return out
  }

  /// Builds $MFT's $DATA from record 0 (at `recordZeroAt`, $MFT's first cluster by default)
  /// and, through its attribute list, from the extension records; each extension must lie in
  /// the part of $MFT already mapped.
  static func bootstrapMFT(volume: any VolumeReader, boot: NTFSBootSector, recordZeroAt: UInt64? = nil) throws
    -> (NTFSStream, UInt64)
  {
    let size = boot.mftRecordSize
    let at = recordZeroAt ?? boot.mftLCN * UInt64(boot.clusterSize)
    let raw = try volume.read(at: at, count: size)
    guard let rec0 = try NTFSRecord.parse(raw, number: 0, clusterCount: boot.clusterCount, volumeOffset: at),
      rec0.inUse
    else { throw NTFSError.corrupt("$MFT's record 0 is not a FILE record in use", offset: at) }
    let isMFTData = { (a: NTFSAttribute) in a.type == NTFSAttribute.data && a.name.isEmpty }
    var extents = rec0.attributes.filter(isMFTData)
    guard !extents.isEmpty else { throw NTFSError.corrupt("$MFT has no $DATA", offset: at) }
    var stream = try NTFSStream.merge(extents)
    if let list = rec0.attributes.first(where: { $0.type == NTFSAttribute.attributeList }) {
      let bytes = try listBytes(list, volume: volume, boot: boot)
      var seen: Set<UInt64> = [0]
      for e in try parseList(bytes, base: 0) where e.type == NTFSAttribute.data && e.nameLength == 0 {
        let n = e.reference & 0xFFFF_FFFF_FFFF
        guard seen.insert(n).inserted else { continue }
        guard seen.count <= maxExtensionRecords else {
          throw NTFSError.limit("$MFT's attribute list names more than \(maxExtensionRecords) records")
        }
        let count = stream.dataSize / UInt64(size)
        guard n < count else { throw NTFSError.corrupt("$MFT extension record \(n) is outside $MFT") }
        let rec = try readRecord(n, mft: stream, volume: volume, boot: boot)
        guard let rec, rec.inUse, rec.baseReference & 0xFFFF_FFFF_FFFF == 0 else {
          throw NTFSError.corrupt("$MFT extension record \(n) is not an extension of record 0")
        }
        extents += rec.attributes.filter(isMFTData)
        stream = try NTFSStream.merge(extents)
      }
    }
    guard stream.dataSize >= UInt64(size) * 16 else {
      throw NTFSError.corrupt("$MFT of \(stream.dataSize) bytes holds fewer than the 16 system records")
    }
    return (stream, stream.dataSize / UInt64(size))
  }

  struct ListEntry {
    var type: UInt32
    var nameLength: Int
    var name: [UInt16]
    var lowestVCN: UInt64
    var reference: UInt64
  }

  /// The entries of an $ATTRIBUTE_LIST value.
  static func parseList(_ bytes: [UInt8], base: UInt64) throws -> [ListEntry] {
    let b = NTFSBytes(bytes)
    var out: [ListEntry] = []
    var p = 0
    while p + 26 <= b.count {
      let length = Int(b.u16(p + 4))
      let nameLength = Int(b.u8(p + 6))
      let nameOffset = Int(b.u8(p + 7))
      guard length >= 26, length <= b.count - p,
        nameLength == 0 || (nameOffset >= 26 && nameOffset + 2 * nameLength <= length)
      else {
        throw NTFSError.corrupt("MFT record \(base): attribute list entry at \(p) of \(length) bytes is invalid")
      }
      out.append(
        ListEntry(
          type: b.u32(p), nameLength: nameLength, name: b.utf16(p + nameOffset, units: nameLength),
          lowestVCN: b.u64(p + 8), reference: b.u64(p + 16)))
      p += (length + 7) & ~7
    }
    return out
  }

  /// The value of an attribute list, resident or not, within the cap.
  static func listBytes(_ a: NTFSAttribute, volume: any VolumeReader, boot: NTFSBootSector) throws -> [UInt8] {
    if let v = a.value { return v }
    guard a.dataSize <= maxAttributeListBytes else {
      throw NTFSError.limit(
        "MFT record \(a.record): attribute list of \(a.dataSize) bytes is beyond the cap of \(maxAttributeListBytes)")
    }
    let s = try NTFSStream.merge([a])
    var bytes = [UInt8](repeating: 0, count: Int(a.dataSize))
    let n = try bytes.withUnsafeMutableBytes { try readStream(s, at: 0, into: $0, volume: volume, boot: boot) }
    guard n == bytes.count else { throw NTFSError.corrupt("MFT record \(a.record): attribute list is short") }
    return bytes
  }

  /// Reads record `n` through the $MFT stream; nil when it was never used.
  static func readRecord(_ n: UInt64, mft: NTFSStream, volume: any VolumeReader, boot: NTFSBootSector) throws
    -> NTFSRecord?
  {
    let size = boot.mftRecordSize
    var raw = [UInt8](repeating: 0, count: size)
    let got = try raw.withUnsafeMutableBytes {
      try readStream(mft, at: n * UInt64(size), into: $0, volume: volume, boot: boot)
    }
    guard got == size else { throw NTFSError.corrupt("MFT record \(n) lies past the end of $MFT") }
    return try NTFSRecord.parse(
      raw, number: n, clusterCount: boot.clusterCount, volumeOffset: try mftByteOffset(n, mft: mft, boot: boot))
  }

  /// Where record `n` starts in the volume (for messages).
  static func mftByteOffset(_ n: UInt64, mft: NTFSStream, boot: NTFSBootSector) throws -> UInt64 {
    volumeOffset(of: n * UInt64(boot.mftRecordSize), in: mft, boot: boot) ?? 0
  }

  /// Where byte `pos` of a non-resident stream sits in the volume; nil in a hole.
  static func volumeOffset(of pos: UInt64, in s: NTFSStream, boot: NTFSBootSector) -> UInt64? {
    let cs = UInt64(boot.clusterSize)
    guard let i = s.runIndex(pos / cs), let lcn = s.runs[i].lcn else { return nil }
    return (lcn + pos / cs - s.runs[i].vcn) * cs + pos % cs
  }

  /// Loads base record `n` and the extension records its attribute list names.
  static func loadFile(
    _ n: UInt64, mft: NTFSStream, volume: any VolumeReader, boot: NTFSBootSector, recordCount: UInt64,
    reader: ((UInt64) throws -> NTFSRecord?)? = nil
  ) throws -> NTFSFile {
    let readRecord = reader ?? { try Self.readRecord($0, mft: mft, volume: volume, boot: boot) }
    guard n < recordCount else { throw NTFSError.corrupt("MFT record \(n) is outside the \(recordCount) records") }
    guard let rec = try readRecord(n), rec.inUse else {
      throw NTFSError.corrupt("MFT record \(n) is not in use")
    }
    guard rec.baseReference == 0 else {
      throw NTFSError.corrupt("MFT record \(n) is an extension of record \(rec.baseReference & 0xFFFF_FFFF_FFFF)")
    }
    var attributes = rec.attributes
    if let list = rec.attributes.first(where: { $0.type == NTFSAttribute.attributeList }) {
      let bytes = try listBytes(list, volume: volume, boot: boot)
      var seen: Set<UInt64> = [n]
      for e in try parseList(bytes, base: n) {
        let r = e.reference & 0xFFFF_FFFF_FFFF
        guard seen.insert(r).inserted else { continue }
        guard seen.count <= maxExtensionRecords else {
          throw NTFSError.limit("MFT record \(n): attribute list names more than \(maxExtensionRecords) records")
        }
        guard r < recordCount, let ext = try readRecord(r), ext.inUse else {
          throw NTFSError.corrupt("MFT record \(n): extension record \(r) is not in use")
        }
        let seq = UInt16(truncatingIfNeeded: e.reference >> 48)
        guard ext.baseReference & 0xFFFF_FFFF_FFFF == n, seq == 0 || seq == ext.sequence else {
          throw NTFSError.corrupt("MFT record \(n): extension record \(r) belongs to another file")
        }
        attributes += ext.attributes.filter { $0.type != NTFSAttribute.attributeList }
      }
    }
    let f = try NTFSFile(number: n, sequence: rec.sequence, flags: rec.flags, attributes: attributes)
    if f.reparse == nil, let s = f.reparseStream {
      guard s.dataSize <= 16 << 10 else { throw NTFSError.limit("MFT record \(n): reparse data beyond 16 KiB") }
      var bytes = [UInt8](repeating: 0, count: Int(s.dataSize))
      _ = try bytes.withUnsafeMutableBytes { try readStream(s, at: 0, into: $0, volume: volume, boot: boot) }
      f.reparse = bytes
    }
    // Interix symbolic links: system files, not reparse points, holding a magic and the target.
    if f.reparse == nil, !f.isDirectory, let si = f.standardInformation, si.fileAttributes & 0x4 != 0,
      let s = f.data[[]], s.size > 8, s.size <= Self.maxInterixBytes, s.size % 2 == 0, !s.isEncrypted
    {
      var bytes = [UInt8](repeating: 0, count: Int(s.size))
      let got = try bytes.withUnsafeMutableBytes { try readStream(s, at: 0, into: $0, volume: volume, boot: boot) }
      if got == bytes.count, bytes.starts(with: Array("IntxLNK".utf8) + [1]) {
        f.interixTarget = ntfsUTF8(NTFSBytes(bytes).utf16(8, units: (bytes.count - 8) / 2))
      }
    }
    return f
  }

  /// An Interix symbolic link's data: the 8-byte magic and a target of at most PATH_MAX.
  static let maxInterixBytes: UInt64 = 8 + 2 * 4096

  /// Whether $LogFile (record 2) has nothing to replay; false when it cannot be read.
  static func logFileIsClean(volume: any VolumeReader, boot: NTFSBootSector, mft: NTFSStream, recordCount: UInt64)
    -> Bool
  {
    guard let log = try? loadFile(2, mft: mft, volume: volume, boot: boot, recordCount: recordCount),
      let s = log.data[[]], s.size > 0
    else { return false }
    var bytes = [UInt8](repeating: 0, count: Int(min(s.size, UInt64(NTFSLogFile.restartBytes))))
    guard let n = try? bytes.withUnsafeMutableBytes({ try readStream(s, at: 0, into: $0, volume: volume, boot: boot) })
    else { return false }
    bytes.removeLast(bytes.count - n)
    return NTFSLogFile.isClean(bytes)
  }

  /// $MFT's bitmap, read once; nil when the volume is not clean or the bitmap cannot be read
  /// (listings then check record headers).
  func recordsInUse() -> [UInt8]? {
    guard isClean else { return nil }
    if let cached = mftBitmap.withLock({ $0 }) { return cached }
    var bitmap: [UInt8]?
    // Only the bits of records $MFT holds are read (Windows grows the bitmap ahead of $MFT),
    // and at most `maxBitmapBytes` of them.
    let wanted = (recordCount + 7) / 8
    if wanted <= Self.maxBitmapBytes, let f = try? file(0), let s = f.bitmap, s.size > 0 {
      var bytes = [UInt8](repeating: 0, count: Int(min(s.size, wanted)))
      if let n = try? bytes.withUnsafeMutableBytes({ try read(s, at: 0, into: $0) }), n == bytes.count {
        bitmap = bytes
      }
    }
    mftBitmap.withLock { $0 = .some(bitmap) }
    return bitmap
  }

  /// A file by record number, through the cache.
  func file(_ n: FileID) throws -> NTFSFile {
    if let hit = files.withLock({ $0.files[n] }) { return hit }
    let f = try Self.loadFile(
      n, mft: mft, volume: volume, boot: boot, recordCount: recordCount, reader: { try self.readRecord($0) })
    files.withLock { c in
      if c.files[n] != nil { return }
      if c.ring.count < Self.cacheFiles {
        c.ring.append(n)
      } else {
        c.files[c.ring[c.next]] = nil
        c.ring[c.next] = n
        c.next = (c.next + 1) % Self.cacheFiles
      }
      c.files[n] = f
    }
    return f
  }

  /// The raw bytes of record `n` (fixups not applied) out of the chunk cache; nil when its
  /// chunk cannot be read whole (the caller then reads the record alone, with its own errors).
  func rawRecord(_ n: UInt64) -> [UInt8]? {
    guard let (bytes, at) = recordChunk(n) else { return nil }
    return Array(bytes[at..<(at + boot.mftRecordSize)])
  }

  /// The cached chunk that holds all of record `n`, and where the record starts in it.
  func recordChunk(_ n: UInt64) -> (bytes: [UInt8], at: Int)? {
    let size = boot.mftRecordSize
    let chunk = Self.mftChunkBytes
    guard size <= chunk, chunk % size == 0, n < recordCount else { return nil }
    let (pos, overflow) = n.multipliedReportingOverflow(by: UInt64(size))
    guard !overflow else { return nil }
    let k = pos / UInt64(chunk)
    let within = Int(pos % UInt64(chunk))
    var bytes = mftChunks.withLock { c in c.chunks.first(where: { $0.index == k })?.bytes }
    if bytes == nil {
      // Not zeroed first: the chunk keeps only the bytes the read gave.
      let buf =
        (try? [UInt8](unsafeUninitializedCapacity: chunk) { out, count in
          count = 0
          count = try Self.readStream(
            mft, at: k * UInt64(chunk), into: UnsafeMutableRawBufferPointer(out), volume: volume, boot: boot)
        }) ?? []
      mftChunks.withLock { c in
        if c.chunks.count < Self.mftChunkCount {
          c.chunks.append((k, buf))
        } else {
          c.chunks[c.next] = (k, buf)
          c.next = (c.next + 1) % Self.mftChunkCount
        }
      }
      bytes = buf
    }
    guard let bytes, within + size <= bytes.count else { return nil }
    return (bytes, within)
  }

  /// Record `n` through the chunk cache; nil when it was never used.
  func readRecord(_ n: UInt64) throws -> NTFSRecord? {
    guard let raw = rawRecord(n) else { return try Self.readRecord(n, mft: mft, volume: volume, boot: boot) }
    return try NTFSRecord.parse(
      raw, number: n, clusterCount: boot.clusterCount, volumeOffset: try Self.mftByteOffset(n, mft: mft, boot: boot))
  }

  /// What a directory listing needs of record `n` without parsing its attributes: its
  /// sequence number and directory flag. Nil unless it is a FILE record in use, a base
  /// record, with intact fixups (the caller then loads it whole).
  func recordHeader(_ n: UInt64) -> (sequence: UInt16, isDirectory: Bool)? {
    // Read in place in the cached chunk: no copy of the record.
    let size = boot.mftRecordSize
    guard size >= 512, let (raw, o) = recordChunk(n), raw[o] == 0x46, raw[o + 1] == 0x49, raw[o + 2] == 0x4C,
      raw[o + 3] == 0x45
    else { return nil }
    let b = NTFSBytes(raw)
    let usaOffset = Int(b.u16(o + 4))
    let usaCount = Int(b.u16(o + 6))
    guard usaOffset >= 8, usaOffset % 2 == 0, usaCount == 1 + size / NTFSFixup.stride,
      usaOffset + 2 * usaCount <= NTFSFixup.stride - 2
    else { return nil }
    let usn = b.u16(o + usaOffset)
    for i in 1..<usaCount where b.u16(o + i * NTFSFixup.stride - 2) != usn { return nil }
    let flags = b.u16(o + 22)
    guard flags & NTFSRecord.flagInUse != 0, b.u64(o + 32) == 0 else { return nil }
    return (b.u16(o + 16), flags & NTFSRecord.flagDirectory != 0)
  }

  /// Folder `n`'s $I30 index read in place from its record, without loading the file: only
  /// $INDEX_ROOT, $INDEX_ALLOCATION and $BITMAP named $I30 are parsed (a listing of a large
  /// tree loads thousands of folders and needs nothing else of them). Nil when the record is
  /// not a base folder record in use, holds an attribute list, cannot be read from the chunk
  /// cache, or fails any check: the caller then loads the whole file, with its errors.
  func folderIndexInPlace(_ n: UInt64) -> NTFSFolderIndex? {
    let size = boot.mftRecordSize
    guard let (chunk, at) = recordChunk(n) else { return nil }
    var bytes = Array(chunk[at..<(at + size)])
    guard let offset = try? Self.mftByteOffset(n, mft: mft, boot: boot),
      let h = try? NTFSRecord.header(&bytes, number: n, volumeOffset: offset),
      h.flags & NTFSRecord.flagInUse != 0, h.flags & NTFSRecord.flagDirectory != 0, h.baseReference == 0
    else { return nil }
    let b = NTFSBytes(bytes, volumeOffset: offset)
    var folder = NTFSFolderIndex(number: n)
    var allocation: [NTFSAttribute] = []
    var bitmap: [NTFSAttribute] = []
    var simple = true
    let clusters = boot.clusterCount
    do {
      try NTFSRecord.forEachAttribute(b, h, number: n) { type, p, length in
        switch type {
        case NTFSAttribute.attributeList:
          simple = false
        case NTFSAttribute.indexRoot, NTFSAttribute.indexAllocation, NTFSAttribute.bitmap:
          // The name: 4 UTF-16 units "$I30" at the offset the header gives.
          guard b.u8(p + 9) == 4 else { return }
          let o = p + Int(b.u16(p + 10))
          guard o >= p + 16, o + 8 <= p + length, b.u16(o) == 0x24, b.u16(o + 2) == 0x49, b.u16(o + 4) == 0x33,
            b.u16(o + 6) == 0x30
          else { return }
          let a = try NTFSRecord.attribute(b, at: p, length: length, record: n, clusterCount: clusters)
          switch type {
          case NTFSAttribute.indexRoot: folder.root = a.value
          case NTFSAttribute.indexAllocation: allocation.append(a)
          default: bitmap.append(a)
          }
        default:
          return
        }
      }
      guard simple, folder.root != nil else { return nil }
      if !allocation.isEmpty { folder.allocation = try NTFSStream.merge(allocation) }
      if !bitmap.isEmpty { folder.bitmap = try NTFSStream.merge(bitmap) }
    } catch {
      return nil
    }
    return folder
  }

  // MARK: Reading streams

  /// Reads up to `buffer.count` bytes of stream `s` from `offset`; returns the count.
  static func readStream(
    _ s: NTFSStream, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, volume: any VolumeReader,
    boot: NTFSBootSector, unitCache: Locked<(key: String, bytes: [UInt8])?>? = nil
  ) throws -> Int {
    let size = s.size
    guard offset < size, buffer.count > 0 else { return 0 }
    let total = Int(min(UInt64(buffer.count), size - offset))
    if let v = s.resident {
      for i in 0..<total { buffer[i] = v[Int(offset) + i] }
      return total
    }
    if s.isCompressed {
      return try readCompressed(s, at: offset, total: total, into: buffer, volume: volume, boot: boot, cache: unitCache)
    }
    let cs = UInt64(boot.clusterSize)
    var done = 0
    while done < total {
      let pos = offset + UInt64(done)
      let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<total])
      if pos >= s.initializedSize {
        rest.initializeMemory(as: UInt8.self, repeating: 0)
        break
      }
      let vcn = pos / cs
      guard let i = s.runIndex(vcn) else {
        throw NTFSError.corrupt(
          "MFT record \(s.record): no run maps VCN \(vcn) of attribute 0x\(String(s.type, radix: 16))")
      }
      let r = s.runs[i]
      let runEnd = (r.vcn + r.length).multipliedReportingOverflow(by: cs)
      let endByte = runEnd.overflow ? UInt64.max : runEnd.partialValue
      let n = Int(min(endByte - pos, UInt64(total - done), s.initializedSize - pos))
      let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)])
      if let lcn = r.lcn {
        try volume.read(at: (lcn + vcn - r.vcn) * cs + pos % cs, into: piece)
      } else {
        piece.initializeMemory(as: UInt8.self, repeating: 0)
      }
      done += n
    }
    return total
  }

  /// The clusters of one compression unit, decoded: all holes are zeros, all allocated are
  /// stored as they are, allocated clusters followed by holes are LZNT1.
  static func compressionUnit(
    _ s: NTFSStream, index k: UInt64, clusters: UInt64, volume: any VolumeReader, boot: NTFSBootSector
  ) throws -> [UInt8] {
    let cs = UInt64(boot.clusterSize)
    let unitBytes = Int(clusters * cs)
    var pieces: [(lcn: UInt64, count: UInt64)] = []
    var allocated: UInt64 = 0
    let (first, overflow) = k.multipliedReportingOverflow(by: clusters)
    guard !overflow else { throw NTFSError.corrupt("MFT record \(s.record): compression unit index overflows") }
    var v = first
    while v < first + clusters {
      guard let i = s.runIndex(v) else { break }  // past the runlist: holes
      let r = s.runs[i]
      let n = min(r.vcn + r.length, first + clusters) - v
      if let lcn = r.lcn {
        pieces.append((lcn + v - r.vcn, n))
        allocated += n
      }
      v += n
    }
    if allocated == 0 { return [UInt8](repeating: 0, count: unitBytes) }
    var stored = [UInt8](repeating: 0, count: Int(allocated * cs))
    var at = 0
    try stored.withUnsafeMutableBytes { out in
      for p in pieces {
        let len = Int(p.count * cs)
        try volume.read(at: p.lcn * cs, into: UnsafeMutableRawBufferPointer(rebasing: out[at..<(at + len)]))
        at += len
      }
    }
    if allocated == clusters { return stored }
    do {
      return try NTFSLZNT1.decompress(stored, outputSize: unitBytes)
    } catch let e as VMDKError {
      var e = e
      e.message += " (MFT record \(s.record), compression unit \(k))"
      throw e
    }
  }

  static func readCompressed(
    _ s: NTFSStream, at offset: UInt64, total: Int, into buffer: UnsafeMutableRawBufferPointer,
    volume: any VolumeReader, boot: NTFSBootSector, cache: Locked<(key: String, bytes: [UInt8])?>?
  ) throws -> Int {
    let shift = s.compressionUnit == 0 ? 4 : Int(s.compressionUnit)
    let cs = UInt64(boot.clusterSize)
    guard shift <= 16, (UInt64(1) << shift) * cs <= UInt64(maxCompressionUnitBytes) else {
      throw NTFSError.limit(
        "MFT record \(s.record): compression units of 2^\(shift) clusters are beyond the cap of \(maxCompressionUnitBytes) bytes"
      )
    }
    let clusters = UInt64(1) << shift
    let unitBytes = clusters * cs
    var done = 0
    while done < total {
      let pos = offset + UInt64(done)
      let k = pos / unitBytes
      let within = Int(pos % unitBytes)
      let n = min(Int(unitBytes) - within, total - done)
      if pos >= s.initializedSize {
        UnsafeMutableRawBufferPointer(rebasing: buffer[done..<total]).initializeMemory(as: UInt8.self, repeating: 0)
        break
      }
      let key = "\(s.record):\(s.name):\(k)"
      let unit: [UInt8]
      if let hit = cache?.withLock({ $0?.key == key ? $0?.bytes : nil }) {
        unit = hit
      } else {
        unit = try compressionUnit(s, index: k, clusters: clusters, volume: volume, boot: boot)
        cache?.withLock { $0 = (key, unit) }
      }
      let valid = Int(min(UInt64(n), s.initializedSize - pos))
      for i in 0..<valid { buffer[done + i] = unit[within + i] }
      for i in valid..<n { buffer[done + i] = 0 }
      done += n
    }
    return total
  }

  func read(_ s: NTFSStream, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    if s.isEncrypted {
      throw NTFSError.unsupported("MFT record \(s.record) is encrypted (EFS): its data is ciphertext")
    }
    return try Self.readStream(s, at: offset, into: buffer, volume: volume, boot: boot, unitCache: lastUnit)
  }

  // MARK: Directories

  /// Calls `body` with every keyed entry of directory `f`'s $I30 index, in collation order
  /// (sub-nodes first), read in place: one block buffer per level of the tree, reused for
  /// every block met at that level, and keys lent to `body` for the call only.
  func forEachIndexEntry(
    _ f: NTFSFolderIndex, _ body: (_ reference: UInt64, _ key: NTFSFileNameKey) throws -> Void
  ) throws {
    guard let rootValue = f.root else {
      throw NTFSError.corrupt("MFT record \(f.number) is a directory without $INDEX_ROOT:$I30")
    }
    let rb = NTFSBytes(rootValue)
    guard rb.count >= 32, rb.u32(0) == NTFSAttribute.fileName else {
      throw NTFSError.corrupt("MFT record \(f.number): $INDEX_ROOT does not index file names")
    }
    let blockSize = Int(rb.u32(8))
    var visited: Set<UInt64> = []
    let cs = boot.clusterSize
    // The bitmap of blocks in use: one bit per block of $INDEX_ALLOCATION, so its size is
    // bounded by that stream's (checked before it sizes anything).
    var bitmap: [UInt8]?
    if let bm = f.bitmap, let alloc = f.allocation {
      let most = alloc.size / 512 / 8 + 8
      guard bm.size <= most else {
        throw NTFSError.corrupt(
          "MFT record \(f.number): $BITMAP:$I30 of \(bm.size) bytes for \(alloc.size) bytes of index")
      }
      var bytes = [UInt8](repeating: 0, count: Int(bm.size))
      _ = try bytes.withUnsafeMutableBytes { try read(bm, at: 0, into: $0) }
      bitmap = bytes
    }
    // levels[d]: the buffer of the block being read at depth d + 1 (the depth cap bounds it).
    var levels: [[UInt8]] = []
    func visit(_ b: NTFSBytes, header: Int, limit: Int, depth: Int, what: @autoclosure () -> String) throws {
      try NTFSIndexNode.forEachEntry(b, header: header, limit: limit, what: what()) { reference, key, subnode in
        if let vcn = subnode { try block(vcn, depth: depth + 1) }
        if let key { try body(reference, key) }
      }
    }
    func block(_ vcn: UInt64, depth: Int) throws {
      guard depth <= Self.maxIndexDepth else {
        throw NTFSError.limit("MFT record \(f.number): index deeper than \(Self.maxIndexDepth)")
      }
      guard NTFSBootSector.recordSizes.contains(blockSize), blockSize & (blockSize - 1) == 0 else {
        throw NTFSError.corrupt("MFT record \(f.number): index block size \(blockSize)")
      }
      guard visited.insert(vcn).inserted else {
        throw NTFSError.corrupt("MFT record \(f.number): index block at VCN \(vcn) is visited twice (a loop)")
      }
      guard let alloc = f.allocation else {
        throw NTFSError.corrupt("MFT record \(f.number): a sub-node but no $INDEX_ALLOCATION")
      }
      let unit = UInt64(blockSize >= cs ? cs : 512)
      let (offset, overflow) = vcn.multipliedReportingOverflow(by: unit)
      guard !overflow, offset < alloc.size, UInt64(blockSize) <= alloc.size - offset else {
        throw NTFSError.corrupt("MFT record \(f.number): index block VCN \(vcn) lies outside $INDEX_ALLOCATION")
      }
      let index = offset / UInt64(blockSize)
      if let bitmap {
        let byte = Int(index / 8)
        guard byte < bitmap.count, bitmap[byte] & (1 << (index % 8)) != 0 else {
          throw NTFSError.corrupt(
            "MFT record \(f.number): a sub-node points at index block \(index), which $BITMAP:$I30 marks unused")
        }
      }
      // The level's buffer is taken out while this block is read, so that it stays unshared.
      while levels.count < depth { levels.append([UInt8](repeating: 0, count: blockSize)) }
      var bytes: [UInt8] = []
      swap(&bytes, &levels[depth - 1])
      defer { swap(&bytes, &levels[depth - 1]) }
      try bytes.withUnsafeMutableBytes { buffer in
        let got = try read(alloc, at: offset, into: buffer)
        if got < buffer.count {
          UnsafeMutableRawBufferPointer(rebasing: buffer[got...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
      }
      let at = Self.volumeOffset(of: offset, in: alloc, boot: boot) ?? 0
      guard bytes[0] == 0x49, bytes[1] == 0x4E, bytes[2] == 0x44, bytes[3] == 0x58 else {
        throw NTFSError.corrupt(
          "MFT record \(f.number): index block VCN \(vcn) has no INDX magic",
          offset: Self.volumeOffset(of: offset, in: alloc, boot: boot))
      }
      try NTFSFixup.apply(&bytes, magic: "INDX block \(vcn) of record \(f.number)", volumeOffset: at)
      let b = NTFSBytes(bytes, volumeOffset: at)
      guard b.u64(16) == vcn else {
        throw NTFSError.corrupt(
          "MFT record \(f.number): index block at VCN \(vcn) says it is VCN \(b.u64(16))", offset: b.at(16))
      }
      try visit(b, header: 24, limit: blockSize, depth: depth, what: "INDX \(vcn) of record \(f.number)")
    }
    try visit(rb, header: 16, limit: rb.count, depth: 0, what: "$INDEX_ROOT of record \(f.number)")
  }

  public func list(_ id: FileID) throws -> [DirectoryEntry] {
    var out: [DirectoryEntry] = []
    try forEachEntry(in: id) { name, record, type in
      out.append(DirectoryEntry(name: Array(name), id: record, type: type))
    }
    return out
  }

  public func forEachEntry(
    in id: FileID, _ body: (_ name: UnsafeBufferPointer<UInt8>, _ id: FileID, _ type: FileType) throws -> Void
  ) throws {
    try withFile {
      let folder: NTFSFolderIndex
      if let cached = files.withLock({ $0.files[id] }), cached.isDirectory {
        folder = cached.folderIndex
      } else if let inPlace = folderIndexInPlace(id) {
        folder = inPlace
      } else {
        let f = try file(id)
        guard f.isDirectory else {
          throw VMDKError(.invalidArgument, "ntfs: record \(id) is a \(f.type.rawValue), not a directory")
        }
        folder = f.folderIndex
      }
      let inUse = recordsInUse()
      // The current name in UTF-8, lent to `body`.
      let name = UnsafeMutablePointer<UInt8>.allocate(capacity: NTFSFileNameKey.maxUTF8)
      defer { name.deallocate() }
      func emit(_ key: NTFSFileNameKey, _ record: UInt64, _ type: FileType) throws {
        let n = key.writeName(to: name)
        try body(UnsafeBufferPointer(start: name, count: n), record, type)
      }
      try forEachIndexEntry(folder) { reference, key in
        guard key.namespace != NTFSFileName.dos else { return }
        let record = reference & 0xFFFF_FFFF_FFFF
        if record == id && key.isDot { return }  // the root's "."
        let seq = UInt16(truncatingIfNeeded: reference >> 48)
        let attributes = key.fileAttributes
        let dirKey = attributes & 0x1000_0000 != 0
        // A clean volume: the key is the truth for a name that is neither a reparse point nor
        // a system file; a record that $MFT's bitmap says is free is hidden.
        if let inUse, attributes & 0x404 == 0 {
          let byte = Int(truncatingIfNeeded: record / 8)
          guard record / 8 < UInt64(inUse.count), inUse[byte] & (1 << (record % 8)) != 0 else { return }
          try emit(key, record, dirKey ? .directory : .regular)
          return
        }
        // The fast way, for a name whose index key says it is neither a reparse point nor a
        // system file (an Interix link): the record's header confirms that it is in use, of
        // this sequence, and a folder exactly when the key says so; the record is not parsed.
        if attributes & 0x404 == 0, let h = recordHeader(record), seq == 0 || h.sequence == seq,
          h.isDirectory == dirKey
        {
          try emit(key, record, dirKey ? .directory : .regular)
          return
        }
        var type: FileType
        if let child = try? file(record) {
          // A stale entry (the record was freed and reused) is hidden.
          if seq != 0 && child.sequence != seq { return }
          type = child.type
        } else {
          // A record that was freed is hidden too; a damaged one is listed (its stat says why).
          var freed = false
          if record < recordCount {
            do {
              // nil: never used (no FILE magic).
              let rec = try readRecord(record)
              freed = rec.map { !$0.inUse || (seq != 0 && $0.sequence != seq) } ?? true
            } catch {
              freed = false
            }
          }
          if freed { return }
          let tag = key.reparseTag
          type =
            attributes & 0x400 != 0 && (tag == NTFSReparse.symlink || tag == NTFSReparse.mountPoint)
            ? .symlink : dirKey ? .directory : .regular
        }
        try emit(key, record, type)
      }
    }
  }

  /// The 65,536 upper-case mappings of $UpCase (record 10).
  func upcase() throws -> [UInt16] {
    if let t = upcaseTable.withLock({ $0 }) { return t }
    let f = try file(10)
    guard let s = f.data[[]], s.size == 131072 else { throw NTFSError.corrupt("$UpCase is not 128 KiB") }
    var bytes = [UInt8](repeating: 0, count: 131072)
    _ = try bytes.withUnsafeMutableBytes { try read(s, at: 0, into: $0) }
    let b = NTFSBytes(bytes)
    let t = (0..<65536).map { b.u16($0 * 2) }
    upcaseTable.withLock { $0 = t }
    return t
  }

  /// The entry of `directory` named `name`, compared without case through $UpCase (as
  /// Windows does); an exact match wins over a case-insensitive one (POSIX names may differ
  /// only in case).
  public func entry(named bytes: [UInt8], in directory: FileID) throws -> DirectoryEntry? {
    try withFile {
      let entries = try list(directory)
      if let exact = entries.first(where: { $0.name == bytes }) { return exact }
      let t = try upcase()
      let key = String(decoding: bytes, as: UTF8.self).utf16.map { t[Int($0)] }
      return entries.first { String(decoding: $0.name, as: UTF8.self).utf16.map { t[Int($0)] } == key }
    }
  }

  // MARK: FileSystem

  public func stat(_ id: FileID) throws -> FileAttributes {
    try withFile {
      let f = try file(id)
      let si = f.standardInformation
      let attrs = si?.fileAttributes ?? 0
      let readOnly = attrs & 1 != 0
      let type = f.type
      var size: UInt64 = 0
      switch type {
      case .regular: size = f.data[[]]?.size ?? 0
      case .symlink: size = UInt64((try? target(f))?.count ?? 0)
      default: size = 0
      }
      let mode: UInt32 =
        type == .directory ? (readOnly ? 0o555 : 0o755) : type == .symlink ? 0o777 : (readOnly ? 0o444 : 0o644)
      var seen: Set<[UInt16]> = []
      var links = 0
      for n in f.linkNames {
        let key = [UInt16(truncatingIfNeeded: n.parent), UInt16(truncatingIfNeeded: n.parent >> 16)] + n.name
        if seen.insert(key).inserted { links += 1 }
      }
      return FileAttributes(
        id: id, type: type, size: size, mode: mode, linkCount: UInt32(max(1, links)),
        accessTime: si.map { ntfsTime($0.accessed) }, modificationTime: si.map { ntfsTime($0.modified) },
        changeTime: si.map { ntfsTime($0.mftChanged) }, creationTime: si.map { ntfsTime($0.created) })
    }
  }

  public func read(_ id: FileID, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    try withFile {
      let f = try file(id)
      guard f.type == .regular else {
        throw VMDKError(.invalidArgument, "ntfs: record \(id) is a \(f.type.rawValue), not a regular file")
      }
      guard let s = f.data[[]] else { return 0 }
      return try read(s, at: offset, into: buffer)
    }
  }

  func target(_ f: NTFSFile) throws -> [UInt8] {
    if let t = f.interixTarget { return t }
    guard let r = f.reparse else {
      throw VMDKError(.invalidArgument, "ntfs: record \(f.number) is not a reparse point")
    }
    return try NTFSReparse.target(r, record: f.number)
  }

  public func readlink(_ id: FileID) throws -> [UInt8] {
    try withFile { try target(try file(id)) }
  }

  public func dataRanges(_ id: FileID) throws -> [Range<UInt64>] {
    try withFile {
      let f = try file(id)
      guard let s = f.data[[]], s.size > 0 else { return [] }
      if s.resident != nil || s.isCompressed { return [0..<s.size] }
      let cs = UInt64(boot.clusterSize)
      let limit = min(s.size, s.initializedSize)
      var out: [Range<UInt64>] = []
      for r in s.runs where r.lcn != nil {
        let lo = r.vcn * cs
        guard lo < limit else { break }
        let hi = min(limit, (r.vcn + r.length).multipliedReportingOverflow(by: cs).partialValue)
        if let last = out.last, last.upperBound == lo {
          out[out.count - 1] = last.lowerBound..<hi
        } else {
          out.append(lo..<hi)
        }
      }
      return out
    }
  }

  // MARK: NTFS only: streams and reparse points

  /// A named $DATA stream (an alternate data stream, `file:name`).
  public typealias Stream = NamedStream
  public var hasNamedStreams: Bool { true }

  /// The named streams of a file or folder, in on-disk order.
  public func streams(_ id: FileID) throws -> [Stream] {
    try withFile {
      let f = try file(id)
      return f.streamNames.compactMap { n in f.data[n].map { Stream(name: ntfsUTF8(n), size: $0.size) } }
    }
  }

  /// Reads the named stream `name` of a file, like `read`.
  public func readStream(
    _ id: FileID, named name: String, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer
  ) throws -> Int {
    try withFile {
      let f = try file(id)
      guard !name.isEmpty, let n = try streamName(f, name), let s = f.data[n] else {
        throw VMDKError(.fileNotFound, "ntfs: record \(id) has no stream \"\(name)\"")
      }
      return try read(s, at: offset, into: buffer)
    }
  }

  /// The named stream `name` of a file, compared without case through $UpCase as Windows
  /// does (`file:Stream` and `file:STREAM` are one stream); an exact match wins. Nil when
  /// there is none.
  public func stream(named name: String, of id: FileID) throws -> Stream? {
    try withFile {
      let f = try file(id)
      guard !name.isEmpty, let n = try streamName(f, name), let s = f.data[n] else { return nil }
      return Stream(name: ntfsUTF8(n), size: s.size)
    }
  }

  public func namedStream(_ name: [UInt8], of id: FileID) throws -> NamedStream? {
    try stream(named: String(decoding: name, as: UTF8.self), of: id)
  }

  /// The on-disk name of `f`'s stream called `name`, exactly or else without case.
  func streamName(_ f: NTFSFile, _ name: String) throws -> [UInt16]? {
    let exact = Array(name.utf16)
    if f.data[exact] != nil { return exact }
    let t = try upcase()
    let key = exact.map { t[Int($0)] }
    return f.streamNames.first { $0.count == key.count && $0.map { t[Int($0)] } == key }
  }

  /// The reparse tag of a file, or nil when it is not a reparse point.
  public func reparseTag(_ id: FileID) throws -> UInt32? {
    try withFile { try file(id).reparseTag }
  }

  /// The Windows file attributes ($STANDARD_INFORMATION: read-only 0x1, hidden 0x2, system
  /// 0x4, archive 0x20, sparse 0x200, reparse 0x400, compressed 0x800, encrypted 0x4000).
  public func fileAttributes(_ id: FileID) throws -> UInt32 {
    try withFile { try file(id).standardInformation?.fileAttributes ?? 0 }
  }

  public func windowsAttributes(_ id: FileID) throws -> UInt32? { try fileAttributes(id) }
}
