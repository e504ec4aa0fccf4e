// ext2/3/4, read-only, behind the FileSystem protocol. All I/O goes through the volume; the
// structures are parsed by the pure parsers next to this file. Metadata blocks are cached
// (bounded); file data is read straight into the caller's buffer.
//
// Checksums: with metadata_csum the superblock, group descriptor and inode checksums are
// verified (a mismatch is corruption); extent-block and directory-block tails are ignored.
// gdt_csum's crc16 is not verified. A journal is never replayed: with needs_recovery the
// volume is read as it is on disk and a warning says so.
import VMDKBlock

public final class ExtFileSystem: FileSystem, FileSystemProbe, Sendable {
  /// Caps, with their reasons.
  /// A directory larger than this is refused: 256 MiB of entries is millions of names, far
  /// beyond real directories, and the listing is held in memory.
  public static let maxDirectoryBytes: UInt64 = 256 << 20
  /// A symlink target longer than PATH_MAX − 1 (and than one block) cannot have been written
  /// by Linux.
  public static let maxSymlinkBytes = 4095
  /// The metadata cache holds this many bytes of blocks.
  static let cacheBytes = 8 << 20

  public let volume: any VolumeReader
  let superblock: ExtSuperblock
  let cache: ExtBlockCache
  /// Parsed inodes and group descriptors, direct-mapped by number: stat, dataRanges and read
  /// of one file (and a folder's listing after its stat) parse its inode once.
  let inodes = Locked([ExtInode?](repeating: nil, count: ExtFileSystem.inodeSlots))
  let descriptors = Locked([ExtGroupDescriptor?](repeating: nil, count: ExtFileSystem.descriptorSlots))
  static let inodeSlots = 1024
  static let descriptorSlots = 1024
  let blockSize: Int
  public let warnings: [String]

  public var kind: String { superblock.kind }
  public var root: FileID { 2 }

  public var label: String? {
    let name = superblock.volumeName.prefix { $0 != 0 }
    return name.isEmpty ? nil : String(decoding: name, as: UTF8.self)
  }

  public var uuid: String? {
    let u = superblock.uuid
    guard u.count == 16, u.contains(where: { $0 != 0 }) else { return nil }
    let hex = u.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }
    return [0..<4, 4..<6, 6..<8, 8..<10, 10..<16].map { hex[$0].joined() }.joined(separator: "-")
  }

  /// "Not mine" (nil) when the ext magic is absent; otherwise the file system, or the error
  /// that makes it unreadable.
  public static func probe(_ volume: any VolumeReader) throws -> (any FileSystem)? {
    guard volume.size >= ExtSuperblock.offset + UInt64(ExtSuperblock.size) else { return nil }
    let raw = try volume.read(at: ExtSuperblock.offset, count: ExtSuperblock.size)
    guard ExtSuperblock.isExt(raw) else { return nil }
    return try ExtFileSystem(volume: volume, superblock: raw)
  }

  /// Opens the ext file system in `volume`.
  public convenience init(volume: any VolumeReader) throws {
    guard volume.size >= ExtSuperblock.offset + UInt64(ExtSuperblock.size) else {
      throw VMDKError(
        .corruptFileSystem, "ext: volume of \(volume.size) bytes has no room for a superblock", file: volume.name)
    }
    try self.init(volume: volume, superblock: try volume.read(at: ExtSuperblock.offset, count: ExtSuperblock.size))
  }

  init(volume: any VolumeReader, superblock raw: [UInt8]) throws {
    self.volume = volume
    do {
      let sb = try ExtSuperblock(parsing: raw, volumeSize: volume.size)
      guard sb.checksumMatches else {
        throw ExtError.corrupt(
          "superblock checksum does not match (metadata_csum)", offset: ExtSuperblock.offset + 0x3FC)
      }
      superblock = sb
    } catch let e as VMDKError {
      throw e.at(file: volume.name)
    }
    blockSize = superblock.blockSize
    cache = ExtBlockCache(capacity: Self.cacheBytes / superblock.blockSize)
    var notes: [String] = []
    if superblock.has(incompat: ExtSuperblock.incompatRecover) {
      notes.append(
        "the journal needs recovery (needs_recovery): it was not replayed; files are read as last written in place, and the newest changes may be missing"
      )
    }
    if superblock.state & 2 != 0 {
      notes.append("the file system is marked as having errors (s_state); run e2fsck on a copy")
    }
    let fsBytes = superblock.blocksCount.multipliedReportingOverflow(by: UInt64(blockSize))
    if fsBytes.overflow || fsBytes.partialValue > volume.size {
      notes.append(
        "the volume (\(volume.size) bytes) is smaller than the file system (\(superblock.blocksCount) blocks of \(blockSize)); blocks past its end cannot be read"
      )
    }
    warnings = notes
    // The root must be a directory; reading it checks the descriptor of group 0 as well.
    let rootInode = try withFile { try inode(2) }
    guard rootInode.type == .directory else {
      throw VMDKError(.corruptFileSystem, "ext: the root inode 2 is not a directory", file: volume.name)
    }
  }

  /// Runs `body`, naming the volume in any error it throws.
  func withFile<T>(_ body: () throws -> T) throws -> T {
    do {
      return try body()
    } catch let e as VMDKError {
      throw e.at(file: volume.name)
    }
  }

  // MARK: Blocks, descriptors, inodes

  /// The byte offset of block `block`, checked against the file system and the volume.
  func blockOffset(_ block: UInt64, count: UInt64 = 1) throws -> UInt64 {
    guard block < superblock.blocksCount, count <= superblock.blocksCount - block else {
      throw ExtError.corrupt("block \(block) (+\(count)) is outside the \(superblock.blocksCount) blocks", offset: nil)
    }
    let offset = block * UInt64(blockSize)
    guard offset + count * UInt64(blockSize) <= volume.size else {
      throw ExtError.corrupt(
        "block \(block) (+\(count)) lies past the end of the \(volume.size)-byte volume", offset: offset)
    }
    return offset
  }

  /// A metadata block, through the cache.
  func metadataBlock(_ block: UInt64) throws -> ExtBytes {
    let offset = try blockOffset(block)
    if let hit = cache.get(block) { return ExtBytes(hit, volumeOffset: offset) }
    let bytes = try volume.read(at: offset, count: blockSize)
    cache.put(block, bytes)
    return ExtBytes(bytes, volumeOffset: offset)
  }

  func descriptor(_ group: UInt32) throws -> ExtGroupDescriptor {
    let slot = Int(group % UInt32(Self.descriptorSlots))
    if let hit = descriptors.withLock({ $0[slot] }), hit.group == group { return hit }
    let d = try parseDescriptor(group)
    descriptors.withLock { $0[slot] = d }
    return d
  }

  func parseDescriptor(_ group: UInt32) throws -> ExtGroupDescriptor {
    let location = superblock.descriptorLocation(group: group)
    let block = try metadataBlock(location.block)
    let d = try ExtGroupDescriptor(parsing: block, at: location.offsetInBlock, group: group, superblock: superblock)
    guard d.checksumMatches else {
      throw ExtError.corrupt(
        "group descriptor \(group)'s checksum does not match", offset: block.at(location.offsetInBlock + 0x1E))
    }
    return d
  }

  func inode(_ id: FileID) throws -> ExtInode {
    guard id >= 1, id <= UInt64(superblock.inodesCount) else {
      throw ExtError.corrupt("inode \(id) is outside 1...\(superblock.inodesCount)", offset: nil)
    }
    let n = UInt32(id)
    let slot = Int(n % UInt32(Self.inodeSlots))
    if let hit = inodes.withLock({ $0[slot] }), hit.number == n { return hit }
    let ino = try parseInode(n)
    inodes.withLock { $0[slot] = ino }
    return ino
  }

  /// Inode `n` (already checked against the count) from its table, checksum verified.
  func parseInode(_ n: UInt32) throws -> ExtInode {
    let group = (n - 1) / superblock.inodesPerGroup
    let index = (n - 1) % superblock.inodesPerGroup
    let d = try descriptor(group)
    if superblock.has(roCompat: ExtSuperblock.roGdtCsum) || superblock.has(roCompat: ExtSuperblock.roMetadataCsum) {
      let used = superblock.inodesPerGroup - min(d.inodeTableUnused, superblock.inodesPerGroup)
      guard d.flags & ExtGroupDescriptor.flagInodeUninit == 0, index < used else {
        throw ExtError.corrupt("inode \(n) lies in the uninitialised part of group \(group)'s inode table", offset: nil)
      }
    }
    let byte = UInt64(index) * UInt64(superblock.inodeSize)
    let block = try metadataBlock(d.inodeTable + byte / UInt64(blockSize))
    let within = Int(byte % UInt64(blockSize))
    let ino = try ExtInode(
      parsing: block.slice(within, superblock.inodeSize), number: n, volumeOffset: block.at(within),
      superblock: superblock)
    guard ino.checksumMatches else {
      throw ExtError.corrupt("inode \(n)'s checksum does not match", offset: block.at(within + 0x7C))
    }
    return ino
  }

  // MARK: Mapping logical blocks

  /// Logical blocks a file can address with extents (32-bit logical block numbers).
  static let extentLogicalLimit: UInt64 = 1 << 32
  /// A hole with no end in sight: long enough to cover any read.
  static let endlessHole = ExtBlockRun(physical: nil, count: 1 << 40, zero: false)

  /// The run of blocks that starts at logical block `logical` of `ino`.
  func run(_ ino: ExtInode, at logical: UInt64) throws -> ExtBlockRun {
    ino.hasExtents ? try extentRun(ino, logical) : try blockMapRun(ino, logical)
  }

  /// The root node of an inode's extent tree.
  func extentRoot(_ ino: ExtInode) throws -> ExtExtentNode {
    try ExtExtentNode.parse(
      ExtBytes(ino.blockArea, volumeOffset: ino.volumeOffset + 0x28), expectedDepth: nil,
      blocksCount: superblock.blocksCount, inode: ino.number)
  }

  func extentRun(_ ino: ExtInode, _ logical: UInt64) throws -> ExtBlockRun {
    guard logical < Self.extentLogicalLimit else { return Self.endlessHole }
    var node = try extentRoot(ino)
    // The end of the logical range the current subtree may cover.
    var bound = Self.extentLogicalLimit
    var path: Set<UInt64> = []
    // The volume offset of the node being read, for errors.
    var nodeOffset = ino.volumeOffset + 0x28
    while true {
      switch node {
      case .index(let depth, let entries):
        guard let i = entries.lastIndex(where: { UInt64($0.logical) <= logical }) else {
          let end = min(bound, entries.first.map { UInt64($0.logical) } ?? bound)
          return ExtBlockRun(physical: nil, count: max(1, end - logical), zero: false)
        }
        if i + 1 < entries.count { bound = min(bound, UInt64(entries[i + 1].logical)) }
        let child = entries[i].child
        guard path.insert(child).inserted else {
          throw ExtError.corrupt(
            "inode \(ino.number): extent tree visits block \(child) twice", offset: nodeOffset + UInt64(16 + 12 * i))
        }
        nodeOffset = try blockOffset(child)
        let bytes = try metadataBlock(child)
        node = try ExtExtentNode.parse(
          bytes, expectedDepth: depth - 1, blocksCount: superblock.blocksCount, inode: ino.number)
      case .leaf(let extents):
        // The first extent that ends past `logical`.
        var lo = 0
        var hi = extents.count
        while lo < hi {
          let mid = (lo + hi) / 2
          if UInt64(extents[mid].logical) + UInt64(extents[mid].length) <= logical { lo = mid + 1 } else { hi = mid }
        }
        guard lo < extents.count else {
          return ExtBlockRun(physical: nil, count: max(1, bound - min(bound, logical)), zero: false)
        }
        let e = extents[lo]
        if UInt64(e.logical) > logical {
          return ExtBlockRun(physical: nil, count: min(bound, UInt64(e.logical)) - logical, zero: false)
        }
        let skip = logical - UInt64(e.logical)
        return ExtBlockRun(
          physical: e.physical + skip, count: UInt64(e.length) - skip, zero: e.uninitialised)
      }
    }
  }

  /// Pointers per indirect block.
  var pointersPerBlock: UInt64 { UInt64(blockSize / 4) }

  func blockMapRun(_ ino: ExtInode, _ logical: UInt64) throws -> ExtBlockRun {
    let p = pointersPerBlock
    if logical < 12 {
      let b = UInt64(ino.blockWord(Int(logical)))
      return try dataBlock(b, ino)
    }
    var l = logical - 12
    var levels = 1
    var span = p
    if l >= p {
      l -= p
      levels = 2
      span = p * p
      if l >= span {
        l -= span
        levels = 3
        span = p * p * p
        if l >= span { return Self.endlessHole }
      }
    }
    var block = UInt64(ino.blockWord(11 + levels))
    // Where `block` was read from, for errors; and the indirect blocks above it: a pointer
    // back to one of them is a loop (each block of a valid volume has one use).
    var pointerOffset = ino.volumeOffset + 0x28 + UInt64(4 * (11 + levels))
    var path: [UInt64] = []
    for _ in 0..<levels {
      if block == 0 { return ExtBlockRun(physical: nil, count: span - l, zero: false) }
      guard !path.contains(block) else {
        throw ExtError.corrupt(
          "inode \(ino.number): indirect block \(block) points back to itself or an indirect block above it (a loop)",
          offset: pointerOffset)
      }
      path.append(block)
      let bytes = try metadataBlock(block)
      span /= p
      let index = Int(l / span)
      l %= span
      pointerOffset = bytes.at(index * 4)
      block = UInt64(bytes.u32(index * 4))
    }
    guard !path.contains(block) else {
      throw ExtError.corrupt(
        "inode \(ino.number): data block \(block) is also one of the file's indirect blocks (a loop)",
        offset: pointerOffset)
    }
    return try dataBlock(block, ino)
  }

  /// One block of a block map: a hole when 0, else checked against the volume.
  func dataBlock(_ b: UInt64, _ ino: ExtInode) throws -> ExtBlockRun {
    if b == 0 { return ExtBlockRun(physical: nil, count: 1, zero: false) }
    guard b < superblock.blocksCount else {
      throw ExtError.corrupt("inode \(ino.number): block map points at block \(b), outside the volume", offset: nil)
    }
    return ExtBlockRun(physical: b, count: 1, zero: false)
  }

  // MARK: Reading

  /// The bytes of an inline-data inode: i_block, then the system.data value, up to i_size.
  func inlineBytes(_ ino: ExtInode) throws -> [UInt8] {
    let all = ino.blockArea + (ino.inlineDataTail ?? [])
    guard ino.size <= UInt64(all.count) else {
      throw ExtError.corrupt(
        "inode \(ino.number): inline data of \(ino.size) bytes, but only \(all.count) are stored", offset: nil)
    }
    return Array(all.prefix(Int(ino.size)))
  }

  /// Reads file bytes of any inode type from `offset`.
  func readData(_ ino: ExtInode, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    guard offset < ino.size, buffer.count > 0 else { return 0 }
    let total = Int(min(UInt64(buffer.count), ino.size - offset))
    if ino.hasInlineData {
      let bytes = try inlineBytes(ino)
      for i in 0..<total { buffer[i] = bytes[Int(offset) + i] }
      return total
    }
    try forEachRun(ino, at: offset, total: total) { done, n, byte in
      let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)])
      if let byte {
        try volume.read(at: byte, into: slice)
      } else {
        slice.initializeMemory(as: UInt8.self, repeating: 0)
      }
      return true
    }
    return total
  }

  /// Walks `total` bytes of a file's blocks from `offset` (inside the file, not inline data)
  /// in runs: `body(done, count, volumeByte)` for each, `volumeByte` nil in a hole; `body`
  /// returns false to stop.
  func forEachRun(
    _ ino: ExtInode, at offset: UInt64, total: Int, _ body: (Int, Int, UInt64?) throws -> Bool
  ) throws {
    let bs = UInt64(blockSize)
    var done = 0
    while done < total {
      let position = offset + UInt64(done)
      let logical = position / bs
      let within = position % bs
      var r = try run(ino, at: logical)
      // Block maps answer one block at a time: join physically contiguous neighbours.
      if !ino.hasExtents, let start = r.physical {
        let wanted = (UInt64(total - done) + within + bs - 1) / bs
        while r.count < min(wanted, 256) {
          let next = try run(ino, at: logical + r.count)
          guard next.physical == start + r.count else { break }
          r.count += 1
        }
      }
      let runBytes = min(r.count, 1 << 32) * bs - within
      let n = Int(min(runBytes, UInt64(total - done)))
      var byte: UInt64?
      if let physical = r.physical, !r.zero {
        let blocks = (within + UInt64(n) + bs - 1) / bs
        byte = try blockOffset(physical, count: blocks) + within
      }
      guard try body(done, n, byte) else { return }
      done += n
    }
  }

  // MARK: FileSystem

  public func stat(_ id: FileID) throws -> FileAttributes {
    try withFile {
      let ino = try inode(id)
      return FileAttributes(
        id: id, type: ino.type, size: ino.size, mode: UInt32(ino.mode & 0o7777), uid: ino.uid, gid: ino.gid,
        linkCount: UInt32(ino.linkCount), accessTime: ino.accessTime, modificationTime: ino.modificationTime,
        changeTime: ino.changeTime, creationTime: ino.creationTime, device: ino.device)
    }
  }

  public func read(_ id: FileID, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    try withFile {
      let ino = try inode(id)
      guard ino.type == .regular else {
        throw VMDKError(.invalidArgument, "ext: inode \(id) is a \(ino.type.rawValue), not a regular file")
      }
      return try readData(ino, at: offset, into: buffer)
    }
  }

  public func readlink(_ id: FileID) throws -> [UInt8] {
    try withFile {
      let ino = try inode(id)
      guard ino.type == .symlink else {
        throw VMDKError(.invalidArgument, "ext: inode \(id) is a \(ino.type.rawValue), not a symbolic link")
      }
      let cap = min(blockSize, Self.maxSymlinkBytes)
      guard ino.size <= UInt64(cap) else {
        throw ExtError.limit(
          "inode \(id): symlink target of \(ino.size) bytes is beyond the cap of \(cap) (PATH_MAX and one block)",
          offset: ino.volumeOffset + 0x04)
      }
      if ino.hasInlineData { return try inlineBytes(ino) }
      let fast: Bool
      if superblock.has(incompat: ExtSuperblock.incompatEAInode) {
        fast = ino.size < UInt64(ExtInode.blockArea)
      } else {
        let eaBlocks = ino.fileACL != 0 ? UInt64(superblock.clusterSize / 512) : 0
        fast = ino.blocks <= eaBlocks
      }
      if fast {
        guard ino.size <= UInt64(ExtInode.blockArea) else {
          throw ExtError.corrupt("inode \(id): fast symlink of \(ino.size) bytes does not fit i_block", offset: nil)
        }
        return Array(ino.blockArea.prefix(Int(ino.size)))
      }
      var target = [UInt8](repeating: 0, count: Int(ino.size))
      let n = try target.withUnsafeMutableBytes { try readData(ino, at: 0, into: $0) }
      return Array(target.prefix(n))
    }
  }

  public func list(_ id: FileID) throws -> [DirectoryEntry] {
    try withFile {
      let ino = try inode(id)
      guard ino.type == .directory else {
        throw VMDKError(.invalidArgument, "ext: inode \(id) is a \(ino.type.rawValue), not a directory")
      }
      let hasFileType = superblock.has(incompat: ExtSuperblock.incompatFiletype)
      var out: [DirectoryEntry] = []
      if ino.hasInlineData {
        // i_block: the parent's inode number (4 bytes), then entries to byte 60; a second
        // entry area in system.data. No "." or "..".
        try ExtDirectory.parse(
          ExtBytes(ino.blockArea), start: 4, end: ExtInode.blockArea, blockSize: blockSize, hasFileType: hasFileType,
          inodesCount: superblock.inodesCount, directory: ino.number, into: &out)
        if let tail = ino.inlineDataTail, !tail.isEmpty {
          try ExtDirectory.parse(
            ExtBytes(tail), start: 0, end: tail.count, blockSize: blockSize, hasFileType: hasFileType,
            inodesCount: superblock.inodesCount, directory: ino.number, into: &out)
        }
      } else {
        guard ino.size <= Self.maxDirectoryBytes else {
          throw ExtError.limit(
            "directory \(id) of \(ino.size) bytes is beyond the cap of \(Self.maxDirectoryBytes)",
            offset: ino.volumeOffset + 0x04)
        }
        let bs = UInt64(blockSize)
        let blocks = (ino.size + bs - 1) / bs
        var logical: UInt64 = 0
        while logical < blocks {
          let r = try run(ino, at: logical)
          let count = min(r.count, blocks - logical)
          if let physical = r.physical, !r.zero {
            for k in 0..<count {
              let block = try metadataBlock(physical + k)
              try ExtDirectory.parse(
                block, start: 0, end: blockSize, blockSize: blockSize, hasFileType: hasFileType,
                inodesCount: superblock.inodesCount, directory: ino.number, into: &out)
            }
          }
          logical += count
        }
      }
      if !hasFileType {
        for i in out.indices { out[i].type = try inode(out[i].id).type }
      }
      return out
    }
  }

  public func dataRanges(_ id: FileID) throws -> [Range<UInt64>] {
    try withFile {
      let ino = try inode(id)
      guard ino.size > 0 else { return [] }
      if ino.hasInlineData { return [0..<ino.size] }
      let bs = UInt64(blockSize)
      let fileBlocks = (ino.size + bs - 1) / bs
      var blockRanges: [Range<UInt64>] = []
      func add(_ start: UInt64, _ count: UInt64) {
        guard start < fileBlocks else { return }
        let end = min(fileBlocks, start + count)
        if let last = blockRanges.last, last.upperBound == start {
          blockRanges[blockRanges.count - 1] = last.lowerBound..<end
        } else {
          blockRanges.append(start..<end)
        }
      }
      if ino.hasExtents {
        try walkExtents(ino) { e in
          if !e.uninitialised { add(UInt64(e.logical), UInt64(e.length)) }
        }
      } else {
        try walkBlockMap(ino, fileBlocks: fileBlocks, add)
      }
      return blockRanges.map { r in (r.lowerBound * bs)..<min(ino.size, r.upperBound * bs) }
    }
  }

  /// Every leaf extent of `ino` in logical order. Depth is checked per node (so the walk ends),
  /// and each node block is visited once.
  func walkExtents(_ ino: ExtInode, _ body: (ExtExtent) -> Void) throws {
    var visited: Set<UInt64> = []
    // Each node with the next entry to visit and its volume offset (for errors).
    var stack: [(ExtExtentNode, Int, UInt64)] = [(try extentRoot(ino), 0, ino.volumeOffset + 0x28)]
    var lastEnd: UInt64 = 0
    while let (node, next, nodeOffset) = stack.popLast() {
      switch node {
      case .leaf(let extents):
        for e in extents {
          guard UInt64(e.logical) >= lastEnd else {
            throw ExtError.corrupt("inode \(ino.number): extents of two leaves overlap", offset: nil)
          }
          lastEnd = UInt64(e.logical) + UInt64(e.length)
          body(e)
        }
      case .index(let depth, let entries):
        guard next < entries.count else { continue }
        stack.append((node, next + 1, nodeOffset))
        let child = entries[next].child
        guard visited.insert(child).inserted else {
          throw ExtError.corrupt(
            "inode \(ino.number): extent block \(child) is used twice", offset: nodeOffset + UInt64(16 + 12 * next))
        }
        let bytes = try metadataBlock(child)
        stack.append(
          (
            try ExtExtentNode.parse(
              bytes, expectedDepth: depth - 1, blocksCount: superblock.blocksCount, inode: ino.number), 0,
            bytes.at(0)
          ))
      }
    }
  }

  /// The data blocks of a block-mapped file, below `fileBlocks`, as (start, count) runs. An
  /// indirect block met twice is a loop (or a cross-link) and is corruption.
  func walkBlockMap(_ ino: ExtInode, fileBlocks: UInt64, _ add: (UInt64, UInt64) -> Void) throws {
    let p = pointersPerBlock
    for i in 0..<12 where UInt64(i) < fileBlocks && ino.blockWord(i) != 0 {
      _ = try dataBlock(UInt64(ino.blockWord(i)), ino)
      add(UInt64(i), 1)
    }
    var visited: Set<UInt64> = []
    // `from`: the volume offset of the pointer to `block`, for errors.
    func walk(_ block: UInt64, level: Int, first: UInt64, span: UInt64, from: UInt64) throws {
      guard block != 0, first < fileBlocks else { return }
      guard block < superblock.blocksCount else {
        throw ExtError.corrupt("inode \(ino.number): indirect block \(block) is outside the volume", offset: from)
      }
      guard visited.insert(block).inserted else {
        throw ExtError.corrupt("inode \(ino.number): indirect block \(block) is met twice (a loop)", offset: from)
      }
      let bytes = try metadataBlock(block)
      let child = span / p
      for i in 0..<Int(p) {
        let start = first + UInt64(i) * child
        guard start < fileBlocks else { break }
        let b = UInt64(bytes.u32(i * 4))
        if b == 0 { continue }
        if level == 1 {
          _ = try dataBlock(b, ino)
          guard !visited.contains(b) else {
            throw ExtError.corrupt(
              "inode \(ino.number): data block \(b) is also one of the file's indirect blocks (a loop)",
              offset: bytes.at(i * 4))
          }
          add(start, 1)
        } else {
          try walk(b, level: level - 1, first: start, span: child, from: bytes.at(i * 4))
        }
      }
    }
    let area = ino.volumeOffset + 0x28
    try walk(UInt64(ino.blockWord(12)), level: 1, first: 12, span: p, from: area + 48)
    try walk(UInt64(ino.blockWord(13)), level: 2, first: 12 + p, span: p * p, from: area + 52)
    try walk(UInt64(ino.blockWord(14)), level: 3, first: 12 + p + p * p, span: p * p * p, from: area + 56)
  }
}
