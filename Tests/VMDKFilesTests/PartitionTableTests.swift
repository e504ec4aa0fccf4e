// MBR and GPT parsing over disks built in memory: valid tables, and hostile ones (EBR loops,
// self-links, long chains, bad CRCs with and without a good backup, huge entry arrays).
import Testing
import VMDKBlock

@testable import VMDKFiles

/// Byte offsets of 512-byte sectors.
func sectors(_ a: UInt64...) -> [UInt64] { a.map { $0 * 512 } }

/// A disk of `sectors` zeroed 512-byte sectors.
func blankDisk(_ sectors: Int) -> [UInt8] { [UInt8](repeating: 0, count: sectors * 512) }

/// Writes an MBR/EBR entry into the sector at `lba`.
func putEntry(_ d: inout [UInt8], lba: Int, slot: Int, type: UInt8, start: UInt32, sectors: UInt32, status: UInt8 = 0) {
  let o = lba * 512 + 446 + 16 * slot
  d[o] = status
  d[o + 4] = type
  d.put32(o + 8, start)
  d.put32(o + 12, sectors)
  d[lba * 512 + 510] = 0x55
  d[lba * 512 + 511] = 0xAA
}

/// Extended partition at 100 (size 900), logicals: EBR 100 -> data 102+20, link 50 -> EBR 150 ->
/// data 152+30, end.
func mbrWithLogicals() -> [UInt8] {
  var d = blankDisk(1024)
  putEntry(&d, lba: 0, slot: 0, type: 0x83, start: 10, sectors: 80, status: 0x80)
  putEntry(&d, lba: 0, slot: 1, type: 0x05, start: 100, sectors: 900)
  putEntry(&d, lba: 100, slot: 0, type: 0x0C, start: 2, sectors: 20)
  putEntry(&d, lba: 100, slot: 1, type: 0x05, start: 50, sectors: 60)
  putEntry(&d, lba: 150, slot: 0, type: 0x07, start: 2, sectors: 30)
  return d
}

@Suite struct MBRTests {
  @Test func primaryAndLogicalPartitions() throws {
    let t = try PartitionTable.read(MemoryVolume(mbrWithLogicals()))
    #expect(t.scheme == .mbr)
    #expect(t.partitions.map(\.index) == [1, 5, 6])
    #expect(t.partitions.map(\.startBytes) == sectors(10, 102, 152))
    #expect(t.partitions.map(\.sizeBytes) == sectors(80, 20, 30))
    #expect(t.partitions.map(\.type) == ["0x83", "0x0c", "0x07"])
    #expect(t.partitions.map(\.isLogical) == [false, true, true])
    #expect(t.partitions[0].isBootable)
  }

  @Test func chainLoopIsAnError() {
    var d = mbrWithLogicals()
    putEntry(&d, lba: 150, slot: 1, type: 0x05, start: 0 + 1, sectors: 10)  // -> EBR at 101
    putEntry(&d, lba: 101, slot: 0, type: 0x83, start: 1, sectors: 1)
    putEntry(&d, lba: 101, slot: 1, type: 0x05, start: 50, sectors: 10)  // -> back to 150
    let e = expectError(.invalidPartitionTable) { _ = try PartitionTable.read(MemoryVolume(d)) }
    #expect(e?.message.contains("loops") == true)
    #expect(e?.offset == 150 * 512)
  }

  @Test func selfLinkIsAnError() {
    var d = mbrWithLogicals()
    putEntry(&d, lba: 150, slot: 1, type: 0x05, start: 0, sectors: 10)
    // A link with relative start 0 points at the first EBR again: the self-loop sleuthkit skips.
    let e = expectError(.invalidPartitionTable) { _ = try PartitionTable.read(MemoryVolume(d)) }
    #expect(e?.message.contains("links to itself") == true)
  }

  @Test func longChainHitsTheCap() {
    var d = blankDisk(2048)
    putEntry(&d, lba: 0, slot: 0, type: 0x05, start: 10, sectors: 2000)
    for i in 0..<(PartitionLimits.maxLogicalPartitions + 5) {
      let lba = 10 + i * 4
      putEntry(&d, lba: lba, slot: 0, type: 0x83, start: 1, sectors: 1)
      putEntry(&d, lba: lba, slot: 1, type: 0x05, start: UInt32((i + 1) * 4), sectors: 4)
    }
    let e = expectError(.invalidPartitionTable) { _ = try PartitionTable.read(MemoryVolume(d)) }
    #expect(e?.message.contains("more than 128") == true)
  }

  @Test func logicalOutsideTheExtendedPartition() {
    var d = mbrWithLogicals()
    putEntry(&d, lba: 150, slot: 0, type: 0x07, start: 2, sectors: 5000)
    expectError(.invalidPartitionTable) { _ = try PartitionTable.read(MemoryVolume(d)) }
  }

  @Test func noTableAndBootSectors() throws {
    let zero = try PartitionTable.read(MemoryVolume(blankDisk(64)))
    #expect(zero.scheme == .none)
    #expect(zero.partitions.count == 1 && zero.partitions[0].sizeBytes == 64 * 512)
    // A FAT boot sector ends in 55 AA too, but is not a table.
    var fat = blankDisk(64)
    fat[0] = 0xEB
    fat[1] = 0x3C
    fat[2] = 0x90
    fat.put16(11, 512)
    fat[13] = 1
    fat.put16(14, 1)
    fat[16] = 2
    fat[510] = 0x55
    fat[511] = 0xAA
    #expect(try PartitionTable.read(MemoryVolume(fat)).scheme == .none)
  }

  @Test func partitionPastTheDiskIsCutAndReported() throws {
    var d = blankDisk(100)
    putEntry(&d, lba: 0, slot: 0, type: 0x83, start: 10, sectors: 1000)
    let t = try PartitionTable.read(MemoryVolume(d))
    #expect(t.partitions.first?.sizeBytes == 90 * 512)
    #expect(t.warnings.count == 1)
  }
}

/// A GPT disk of `sectors` sectors with `parts` (first, last LBA, name) as Linux partitions.
func gptDisk(sectors: Int = 400, entryCount: Int = 128, entrySize: Int = 128, parts: [(UInt64, UInt64, String)])
  -> [UInt8]
{
  var d = blankDisk(sectors)
  putEntry(&d, lba: 0, slot: 0, type: 0xEE, start: 1, sectors: UInt32(sectors - 1))
  var array = [UInt8](repeating: 0, count: entryCount * entrySize)
  let linux: [UInt8] = [0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4]
  for (i, p) in parts.enumerated() {
    let o = i * entrySize
    array.replaceSubrange(o..<(o + 16), with: linux)
    for j in 0..<16 { array[o + 16 + j] = UInt8(i + 1) &* 17 &+ UInt8(j) }
    array.put64(o + 32, p.0)
    array.put64(o + 40, p.1)
    for (k, u) in p.2.utf16.prefix(36).enumerated() { array.put16(o + 56 + 2 * k, u) }
  }
  let arraySectors = (array.count + 511) / 512
  let last = UInt64(sectors - 1)
  func header(my: UInt64, alt: UInt64, entryLBA: UInt64) -> [UInt8] {
    var h = [UInt8](repeating: 0, count: 512)
    h.replaceSubrange(0..<8, with: Array("EFI PART".utf8))
    h.put32(8, 0x0001_0000)
    h.put32(12, 92)
    h.put64(24, my)
    h.put64(32, alt)
    h.put64(40, UInt64(2 + arraySectors))
    h.put64(48, last - 1 - UInt64(arraySectors))
    for j in 0..<16 { h[56 + j] = UInt8(0xA0 + j) }
    h.put64(72, entryLBA)
    h.put32(80, UInt32(entryCount))
    h.put32(84, UInt32(entrySize))
    h.put32(88, CRC32.checksum(array))
    h.put32(16, CRC32.checksum(h[0..<92]))
    return h
  }
  let backupArray = Int(last) - arraySectors
  d.replaceSubrange(512..<1024, with: header(my: 1, alt: last, entryLBA: 2))
  d.replaceSubrange(1024..<(1024 + array.count), with: array)
  d.replaceSubrange((backupArray * 512)..<(backupArray * 512 + array.count), with: array)
  d.replaceSubrange(
    (Int(last) * 512)..<(Int(last) * 512 + 512), with: header(my: last, alt: 1, entryLBA: UInt64(backupArray)))
  return d
}

@Suite struct GPTTests {
  let parts: [(UInt64, UInt64, String)] = [(40, 99, "root"), (100, 199, "data ü")]

  @Test func crc32MatchesZlib() {
    #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
  }

  @Test func validTable() throws {
    let t = try PartitionTable.read(MemoryVolume(gptDisk(parts: parts)))
    #expect(t.scheme == .gpt)
    #expect(t.warnings.isEmpty, "\(t.warnings)")
    #expect(t.partitions.map(\.index) == [1, 2])
    #expect(t.partitions.map(\.startBytes) == sectors(40, 100))
    #expect(t.partitions.map(\.sizeBytes) == sectors(60, 100))
    #expect(t.partitions.map(\.name) == ["root", "data ü"])
    #expect(t.partitions[0].type == "0FC63DAF-8483-4772-8E79-3D69D8477DE4")
    #expect(t.partitions[0].typeName == "Linux filesystem")
    #expect(t.diskID == "A3A2A1A0-A5A4-A7A6-A8A9-AAABACADAEAF")
  }

  @Test func badPrimaryHeaderCRCUsesTheBackup() throws {
    var d = gptDisk(parts: parts)
    d[512 + 40] ^= 0xFF  // FirstUsableLBA: the header CRC no longer matches
    let t = try PartitionTable.read(MemoryVolume(d))
    #expect(t.partitions.count == 2)
    #expect(t.warnings.contains { $0.contains("primary GPT is damaged") && $0.contains("backup") }, "\(t.warnings)")
  }

  @Test func badPrimaryArrayCRCUsesTheBackup() throws {
    var d = gptDisk(parts: parts)
    d[1024 + 32] ^= 1  // the first entry's start: the array CRC no longer matches
    let t = try PartitionTable.read(MemoryVolume(d))
    #expect(t.partitions.first?.startBytes == 40 * 512)
    #expect(t.warnings.contains { $0.contains("entry array") }, "\(t.warnings)")
  }

  @Test func bothCopiesDamaged() {
    var d = gptDisk(parts: parts)
    d[512 + 40] ^= 0xFF
    d[399 * 512 + 40] ^= 0xFF
    let e = expectError(.invalidPartitionTable) { _ = try PartitionTable.read(MemoryVolume(d)) }
    #expect(e?.message.contains("backup") == true)
  }

  @Test func damagedBackupIsReported() throws {
    var d = gptDisk(parts: parts)
    d[399 * 512 + 40] ^= 0xFF
    let t = try PartitionTable.read(MemoryVolume(d))
    #expect(t.partitions.count == 2)
    #expect(t.warnings.contains { $0.contains("backup GPT is damaged") })
  }

  /// Rewrites the primary header's field and its CRC, and destroys the backup.
  func patched(_ d: [UInt8], _ field: Int, _ value: UInt32) -> [UInt8] {
    var d = d
    d.put32(512 + field, value)
    d.put32(512 + 16, 0)
    let size = min(512, max(92, Int(d.le32(512 + 12))))
    d.put32(512 + 16, CRC32.checksum(d[512..<(512 + size)]))
    for i in 0..<512 { d[399 * 512 + i] = 0 }
    return d
  }

  @Test func hugeEntryCountIsACap() {
    let d = patched(gptDisk(parts: parts), 80, 1_000_000)
    let e = expectError(.fileSystemLimit) { _ = try PartitionTable.read(MemoryVolume(d)) }
    #expect(e?.offset == 512 + 80)
  }

  @Test func hugeArrayIsACap() {
    let d = patched(patched(gptDisk(parts: parts), 84, 4096), 80, 60_000)
    expectError(.fileSystemLimit) { _ = try PartitionTable.read(MemoryVolume(d)) }
  }

  @Test(arguments: [(84, UInt32(100)), (84, 0), (84, 8192), (12, 0), (12, 91), (12, 600)])
  func badHeaderFields(field: Int, value: UInt32) {
    let d = patched(gptDisk(parts: parts), field, value)
    expectError(.invalidPartitionTable) { _ = try PartitionTable.read(MemoryVolume(d)) }
  }

  @Test func largerEntriesAreSteppedBySize() throws {
    let t = try PartitionTable.read(MemoryVolume(gptDisk(entryCount: 32, entrySize: 256, parts: parts)))
    #expect(t.partitions.map(\.startBytes) == sectors(40, 100))
  }

  @Test func truncatedImageAtEveryLength() {
    // Cut the disk anywhere: an error or a table, never a trap.
    let d = gptDisk(parts: parts)
    for n in stride(from: 0, through: d.count, by: 509) {
      _ = try? PartitionTable.read(MemoryVolume(Array(d[0..<n])))
    }
  }
}
