// libFuzzer target: the file-level restore layer (Sources/VMDKFiles), built by
// `Fuzz/run.sh files` into one module with the VMDKFiles sources, so the parsers' internal
// entry points are reachable. One input feeds everything:
// - the pure parsers, each over the input's bytes at the offsets it expects (and again at a
//   few others): partition entries and the boot-sector test (MBR), the ext superblock, group
//   descriptors, inodes (with their in-inode xattrs), extent nodes and directory blocks (both
//   dirent forms, 1 KiB and 64 KiB rec_len rules), the FAT boot sector, short entries and long
//   names; NTFS's boot sector, MFT records, attributes, runlists, index nodes, attribute lists,
//   reparse data, LZNT1 and $LogFile's restart pages;
// - the input as a whole volume (a file system at byte 0): probed by every reader, then walked
//   (capped), every name stat'ed, every file read at its start, its end and across a block,
//   its data ranges listed, every link read, a few paths looked up;
// - the input as a disk: its partition table (MBR with the EBR chain, GPT with both headers),
//   then each partition as a volume, as above.
//
// Besides traps, ASan reports, allocations over 64 MiB and inputs over 5 s, these are findings
// (the target traps on them): an error that is not a VMDKError; a read that returns more than
// asked or past the file's end; data ranges that are unsorted, overlap or pass the file's size.

import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

nonisolated(unsafe) var trace = false

/// Runs `body`; a thrown error must be a VMDKError.
@discardableResult
func typed<T>(_ what: String, _ body: () throws -> T) -> T? {
  do {
    return try body()
  } catch let e as VMDKError {
    if trace { print("\(what): \(e)") }
    return nil
  } catch {
    fatalError("\(what): an error that is not a VMDKError: \(error)")
  }
}

/// A consistent superblock, for the parsers that need one when the input's own does not parse:
/// 1 KiB blocks, 8192 blocks, one group of 64 inodes of 256 bytes, with `incompat` and `ro`.
func defaultSuperblock(incompat: UInt32, ro: UInt32, descriptorSize: UInt16 = 0) -> ExtSuperblock? {
  var b = [UInt8](repeating: 0, count: 1024)
  func put32(_ o: Int, _ v: UInt32) { for i in 0..<4 { b[o + i] = UInt8(v >> (8 * UInt32(i)) & 0xFF) } }
  func put16(_ o: Int, _ v: UInt16) {
    b[o] = UInt8(v & 0xFF)
    b[o + 1] = UInt8(v >> 8)
  }
  put32(0x00, 64)
  put32(0x04, 8192)
  put32(0x14, 1)
  put32(0x20, 8192)
  put32(0x24, 8192)
  put32(0x28, 64)
  put16(0x38, 0xEF53)
  put32(0x4C, 1)
  put32(0x54, 11)
  put16(0x58, 256)
  put32(0x60, incompat)
  put32(0x64, ro)
  put16(0xFE, descriptorSize)
  return try? ExtSuperblock(parsing: b, volumeSize: 8192 * 1024)
}

let plainSuperblock = defaultSuperblock(incompat: 0x2, ro: 0x1)
let modernSuperblock = defaultSuperblock(
  incompat: 0x2 | 0x40 | 0x80 | 0x200 | 0x8000, ro: 0x1 | 0x2 | 0x8 | 0x400, descriptorSize: 64)

/// `count` bytes of `input` from `offset`, zero-padded (never past the input).
func window(_ input: [UInt8], _ offset: Int, _ count: Int) -> [UInt8] {
  var out = [UInt8](repeating: 0, count: count)
  guard offset >= 0, offset < input.count else { return out }
  let n = min(count, input.count - offset)
  out.replaceSubrange(0..<n, with: input[offset..<(offset + n)])
  return out
}

/// The pure parsers over the input's bytes.
func parsers(_ input: [UInt8]) {
  let size = UInt64(input.count)
  // MBR / EBR entries and the boot-sector test.
  let s0 = window(input, 0, 512)
  _ = MBR.looksLikeBootSector(s0)
  for slot in 0..<4 { _ = MBREntry(s0, slot: slot).isExtended }

  // ext: the input's own superblock, else the defaults.
  var supers: [ExtSuperblock] = [plainSuperblock, modernSuperblock].compactMap { $0 }
  for volumeSize in [size, 1 << 40] {
    if let sb = typed("superblock", { try ExtSuperblock(parsing: window(input, 1024, 1024), volumeSize: volumeSize) }) {
      _ = sb.kind
      for g in [0, 1, 2, 3, 9, 25, 27, sb.groupCount &- 1] {
        _ = sb.groupHasSuperblock(g)
        _ = sb.descriptorLocation(group: g % max(sb.groupCount, 1))
      }
      supers.append(sb)
    }
  }
  // A superblock from byte 0 too: shorter inputs then reach the parsers below.
  if let sb = typed("superblock at 0", { try ExtSuperblock(parsing: window(input, 0, 1024), volumeSize: 1 << 40) }) {
    supers.append(sb)
  }
  let whole = ExtBytes(input)
  for sb in supers {
    for o in stride(from: 0, to: min(input.count, 4096), by: max(sb.descriptorSize, 32)) {
      _ = typed("descriptor") { try ExtGroupDescriptor(parsing: whole, at: o, group: UInt32(o / 32), superblock: sb) }
    }
    for o in stride(from: 0, to: min(input.count, 8192), by: sb.inodeSize) {
      let raw = window(input, o, sb.inodeSize)
      if let ino = typed(
        "inode",
        { try ExtInode(parsing: raw, number: UInt32(o / sb.inodeSize + 1), volumeOffset: UInt64(o), superblock: sb) })
      {
        _ = ino.type
        _ = ino.device
        _ = typed("inode extent root") {
          try ExtExtentNode.parse(ExtBytes(ino.blockArea), expectedDepth: nil, blocksCount: sb.blocksCount, inode: 1)
        }
      }
      _ = typed("xattrs") { try ExtInode.inlineDataValue(ExtBytes(raw), xattrStart: 128 + 32, number: 1) }
    }
  }
  // Extent nodes: a root in 60 bytes, blocks of 1 and 4 KiB at each depth.
  for (o, n) in [(0, 60), (0x28, 60), (0, 1024), (1024, 1024), (0, 4096)] {
    let b = ExtBytes(window(input, o, n))
    for depth: Int? in [nil, 0, 1, 4] {
      _ = typed("extent node") { try ExtExtentNode.parse(b, expectedDepth: depth, blocksCount: 1 << 32, inode: 1) }
    }
  }
  // Directory blocks: both dirent forms, small and 64 KiB blocks.
  for (o, n) in [(0, 1024), (1024, 1024), (0, 4096), (0, min(input.count, 65536))] where n > 0 {
    let b = ExtBytes(window(input, o, n))
    for (blockSize, fileType) in [(1024, true), (4096, false), (65536, true)] {
      var out: [DirectoryEntry] = []
      _ = typed("directory") {
        try ExtDirectory.parse(
          b, start: 0, end: n, blockSize: blockSize, hasFileType: fileType, inodesCount: 1 << 20, directory: 2,
          into: &out)
      }
      _ = typed("inline directory") {
        try ExtDirectory.parse(
          b, start: 4, end: min(n, 60), blockSize: blockSize, hasFileType: fileType, inodesCount: 1 << 20,
          directory: 2, into: &out)
      }
      for e in out.prefix(64) { _ = e.displayName }
    }
  }

  // FAT: the boot sector, then the input as directory entries and long names.
  for volumeSize in [size, 1 << 40] {
    if let g = typed("fat boot sector", { try FATBootSector.parse(s0, volumeSize: volumeSize, name: "fuzz") }) {
      if let g { _ = g.endOfChain &+ g.maxCluster }
    }
  }
  var long: [UInt16] = []
  for o in stride(from: 0, to: min(input.count, 8192) - 31, by: 32) {
    let e = Array(input[o..<(o + 32)])
    _ = FATNames.shortName(e)
    _ = FATNames.checksum(e)
    if e[11] & 0x3F == 0x0F { long = FATNames.units(e) + long }
    _ = FATNames.oem(Array(e[0..<11]))
  }
  _ = FATNames.utf8(fromUTF16: long)
  let units = stride(from: 0, to: min(input.count, 1024) - 1, by: 2).map {
    UInt16(input[$0]) | UInt16(input[$0 + 1]) << 8
  }
  _ = FATNames.utf8(fromUTF16: units)

  ntfsParsers(input)
}

/// NTFS: the boot sector, MFT records (fixups, attributes, runlists), $FILE_NAME and
/// $STANDARD_INFORMATION values, index nodes, attribute lists, reparse data and LZNT1, each over
/// the input's bytes at the offsets it expects and at a few others.
func ntfsParsers(_ input: [UInt8]) {
  let size = UInt64(input.count)
  for volumeSize in [size, 1 << 40] {
    if let boot = typed(
      "ntfs boot sector", { try NTFSBootSector(parsing: window(input, 0, 512), volumeSize: volumeSize) })
    {
      _ = boot.clusterCount &+ UInt64(boot.mftRecordSize &+ boot.indexBlockSize)
    }
  }
  for (o, n) in [(0, 1024), (1024, 1024), (0, 4096), (512, 1024)] {
    let raw = window(input, o, n)
    if let record = typed(
      "ntfs record", { try NTFSRecord.parse(raw, number: 5, clusterCount: 1 << 20, volumeOffset: UInt64(o)) }),
      let record
    {
      _ = typed("ntfs file") {
        try NTFSFile(number: 5, sequence: record.sequence, flags: record.flags, attributes: record.attributes)
      }
    }
    var fixed = raw
    _ = typed("ntfs fixup") { try NTFSFixup.apply(&fixed, magic: "INDX", volumeOffset: UInt64(o)) }
    let b = NTFSBytes(fixed)
    for h in [0x18, 0x10, 0] {
      _ = typed("ntfs index node") { try NTFSIndexNode.parse(b, header: h, limit: fixed.count, what: "fuzz") }
    }
  }
  // One attribute record, a runlist, names and times: the input's start as each.
  let head = window(input, 0, min(max(input.count, 24), 4096))
  _ = typed("ntfs attribute") { try NTFSRecord.parseAttribute(NTFSBytes(head), record: 0, clusterCount: 1 << 20) }
  for from in [0, 0x40, 0x48] {
    _ = typed("ntfs runlist") {
      try NTFSRunlist.decode(
        NTFSBytes(head), from: from, lowestVCN: 0, highestVCN: -1, clusterCount: 1 << 20, what: "fuzz")
    }
  }
  _ = typed("ntfs file name") { try NTFSFileName.parse(NTFSBytes(head), at: 0, limit: head.count) }
  _ = typed("ntfs standard information") { try NTFSStandardInformation.parse(head, record: 0) }
  _ = typed("ntfs attribute list") { try NTFSFileSystem.parseList(head, base: 0) }
  _ = typed("ntfs reparse") { try NTFSReparse.target(head, record: 0) }
  // $LogFile's restart pages: the input's start, up to both pages at the largest page size.
  _ = NTFSLogFile.isClean(Array(input.prefix(NTFSLogFile.restartBytes)))
  for outputSize in [4096, 65536] {
    _ = typed("lznt1") { try NTFSLZNT1.decompress(Array(input.prefix(65536)), outputSize: outputSize) }
  }
  _ = ntfsTime(GuestBytes(head).u64(0))
  _ = ntfsUTF8(GuestBytes(head).utf16(0, units: 128))
}

/// A file system's every name (capped), read as the tools read them.
func exercise(_ fs: any FileSystem) {
  _ = fs.kind
  _ = fs.label
  _ = fs.uuid
  _ = fs.warnings
  var budget = 400
  _ = typed("walk") {
    try fs.walk(from: fs.root, maxDepth: 24, onError: { _, e in _ = typed("walk entry") { throw e } }) { item in
      guard budget > 0 else { return false }
      budget -= 1
      _ = item.displayPath
      exercise(fs, item.entry)
      return true
    }
  }
  for path in ["/", "/a", "/lost+found", "/d/e/f", "/l/x", "/A.TXT", "/x/../a.txt"] {
    _ = typed("lookup \(path)") { try fs.lookup(path) }
  }
}

var scratch = [UInt8](repeating: 0, count: 65536 + 64)

func exercise(_ fs: any FileSystem, _ entry: DirectoryEntry) {
  guard let a = typed("stat", { try fs.stat(entry.id) }) else { return }
  switch a.type {
  case .symlink:
    _ = typed("readlink") { try fs.readlink(entry.id) }
  case .regular:
    for (offset, count) in [(UInt64(0), 65536), (a.size &- 100, 200), (4095, 4098), (a.size, 10), (1 << 40, 16)] {
      guard
        let n = typed(
          "read",
          {
            try scratch.withUnsafeMutableBytes {
              try fs.read(entry.id, at: offset, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<count]))
            }
          })
      else { continue }
      let expected = offset >= a.size ? 0 : min(UInt64(count), a.size - offset)
      guard n >= 0, UInt64(n) <= expected else {
        fatalError("read of \(count) at \(offset) of a \(a.size)-byte file returned \(n)")
      }
    }
    if let ranges = typed("dataRanges", { try fs.dataRanges(entry.id) }) {
      var end: UInt64 = 0
      for r in ranges {
        guard r.lowerBound >= end, r.upperBound <= a.size, !r.isEmpty else {
          fatalError("data ranges \(ranges.prefix(8)) of a \(a.size)-byte file")
        }
        end = r.upperBound
      }
    }
  default:
    break
  }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  guard let data else { return 0 }
  let input = Array(UnsafeBufferPointer(start: data, count: size))
  parsers(input)
  let volume = MemoryVolume(input, name: "fuzz")
  // The input as a volume holding a file system at byte 0.
  if let found = typed("open", { try FileSystems.open(volume) }), let fs = found { exercise(fs) }
  // The input as a disk: its partitions, each a volume.
  if let table = typed("partition table", { try PartitionTable.read(volume) }), table.scheme != .none {
    _ = table.warnings
    for p in table.partitions.prefix(8) {
      guard let slice = typed("slice", { try VolumeSlice(volume, startBytes: p.startBytes, size: p.sizeBytes) }) else {
        continue
      }
      if let found = typed("open partition", { try FileSystems.open(slice) }), let fs = found { exercise(fs) }
    }
  }
  return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(
  _ argc: UnsafeMutablePointer<Int32>?,
  _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?
) -> Int32 {
  if let p = getenv("FUZZ_TRACE") { trace = p.pointee != 0 }
  return 0
}
