// The GUID partition table: the primary header at LBA 1, the backup at the last LBA. Both
// the header CRC and the entry-array CRC are checked; when the primary is damaged the backup
// is used and a warning says so. Entry count, entry size and array bytes are capped before
// anything is allocated.
import VMDKBlock

/// A validated GPT header (offsets in the header sector).
struct GPTHeader {
  /// 24: the LBA this header was read from.
  var myLBA: UInt64
  /// 32: the other copy's LBA.
  var alternateLBA: UInt64
  /// 40, 48: the usable range, both inclusive.
  var firstUsableLBA: UInt64
  var lastUsableLBA: UInt64
  /// 56: disk GUID.
  var diskGUID: String
  /// 72: first LBA of the entry array.
  var entryLBA: UInt64
  /// 80: number of entry slots.
  var entryCount: Int
  /// 84: bytes per entry.
  var entrySize: Int
  /// 88: CRC-32 of entryCount × entrySize bytes.
  var arrayCRC: UInt32
}

enum GPT {
  static let signature = Array("EFI PART".utf8)

  static let typeNames: [String: String] = [
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
    "AA31E02A-400F-11DB-9590-000C2911D1B8": "VMware VMFS",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
  ]

  /// The GUID at `o` in its text form (the first three groups are little-endian).
  static func guid(_ b: [UInt8], _ o: Int) -> String {
    func h(_ x: UInt8) -> String {
      let s = String(x, radix: 16, uppercase: true)
      return s.count < 2 ? "0" + s : s
    }
    let order = [3, 2, 1, 0, -1, 5, 4, -1, 7, 6, -1, 8, 9, -1, 10, 11, 12, 13, 14, 15]
    return order.map { $0 < 0 ? "-" : h(b[o + $0]) }.joined()
  }

  /// Reads and validates the header at `lba`; the error says what is wrong.
  static func header(at lba: UInt64, sectorSize: Int, volume: any VolumeReader) throws -> GPTHeader {
    let where_ = lba * UInt64(sectorSize)
    func bad(_ what: String, _ field: Int) -> VMDKError {
      VMDKError(
        .invalidPartitionTable, "GPT header at LBA \(lba): \(what)", file: volume.name, offset: where_ + UInt64(field))
    }
    guard where_ <= volume.size, UInt64(sectorSize) <= volume.size - where_ else {
      throw bad("past the end of the disk (\(volume.size) bytes)", 0)
    }
    let s = try volume.read(at: where_, count: sectorSize)
    guard Array(s[0..<8]) == signature else { throw bad("no \"EFI PART\" signature", 0) }
    let headerSize = Int(s.le32(12))
    guard headerSize >= 92, headerSize <= sectorSize else {
      throw bad("header size \(headerSize) is outside 92...\(sectorSize)", 12)
    }
    var zeroed = Array(s[0..<headerSize])
    zeroed.replaceSubrange(16..<20, with: [0, 0, 0, 0])
    let stored = s.le32(16)
    let computed = CRC32.checksum(zeroed)
    guard stored == computed else {
      throw bad("header CRC32 is \(hex(stored)), the header's bytes give \(hex(computed))", 16)
    }
    let my = s.le64(24)
    guard my == lba else { throw bad("MyLBA is \(my), expected \(lba)", 24) }
    let count = s.le32(80)
    let size = s.le32(84)
    guard size >= 128, size <= UInt32(PartitionLimits.maxGPTEntrySize), size & (size - 1) == 0 else {
      throw bad("entry size \(size) is not 128 × 2^n up to \(PartitionLimits.maxGPTEntrySize)", 84)
    }
    guard count <= UInt32(PartitionLimits.maxGPTEntries) else {
      throw VMDKError(
        .fileSystemLimit,
        "GPT header at LBA \(lba): \(count) entries is more than the cap of \(PartitionLimits.maxGPTEntries)",
        file: volume.name, offset: where_ + 80)
    }
    let arrayBytes = UInt64(count) * UInt64(size)
    guard arrayBytes <= UInt64(PartitionLimits.maxGPTArrayBytes) else {
      throw VMDKError(
        .fileSystemLimit,
        "GPT header at LBA \(lba): an entry array of \(arrayBytes) bytes is more than the cap of \(PartitionLimits.maxGPTArrayBytes)",
        file: volume.name, offset: where_ + 80)
    }
    let first = s.le64(40)
    let last = s.le64(48)
    let lastLBA = volume.size / UInt64(sectorSize) - 1
    guard first <= last, last <= lastLBA else {
      throw bad("usable range \(first)...\(last) is not inside the disk (last LBA \(lastLBA))", 40)
    }
    let entryLBA = s.le64(72)
    let (arrayEnd, o) = entryLBA.multipliedReportingOverflow(by: UInt64(sectorSize))
    guard !o, arrayEnd <= volume.size, arrayBytes <= volume.size - arrayEnd else {
      throw bad("entry array at LBA \(entryLBA) (\(arrayBytes) bytes) runs past the end of the disk", 72)
    }
    return GPTHeader(
      myLBA: my, alternateLBA: s.le64(32), firstUsableLBA: first, lastUsableLBA: last, diskGUID: guid(s, 56),
      entryLBA: entryLBA, entryCount: Int(count), entrySize: Int(size), arrayCRC: s.le32(88))
  }

  /// The entry array of `h`, its CRC checked.
  static func entries(_ h: GPTHeader, sectorSize: Int, volume: any VolumeReader) throws -> [UInt8] {
    let offset = h.entryLBA * UInt64(sectorSize)
    let bytes = try volume.read(at: offset, count: h.entryCount * h.entrySize)
    let computed = CRC32.checksum(bytes)
    guard computed == h.arrayCRC else {
      throw VMDKError(
        .invalidPartitionTable,
        "GPT entry array at LBA \(h.entryLBA) (header at LBA \(h.myLBA)): CRC32 is \(hex(computed)), the header says \(hex(h.arrayCRC))",
        file: volume.name, offset: offset)
    }
    return bytes
  }

  /// Reads the GPT of a disk whose sector 0 held a protective (or hybrid) MBR, or none.
  static func parse(sectorSize: Int, volume: any VolumeReader, warnings initial: [String]) throws -> PartitionTable {
    var warnings = initial
    let lastLBA = volume.size / UInt64(sectorSize) - 1
    var used: GPTHeader
    var array: [UInt8]
    do {
      used = try header(at: 1, sectorSize: sectorSize, volume: volume)
      array = try entries(used, sectorSize: sectorSize, volume: volume)
      // The backup is only checked, to warn.
      let alt = used.alternateLBA
      if alt != lastLBA {
        warnings.append("the backup GPT header should be at the last LBA \(lastLBA), the primary says \(alt)")
      }
      do {
        let b = try header(at: alt <= lastLBA ? alt : lastLBA, sectorSize: sectorSize, volume: volume)
        _ = try entries(b, sectorSize: sectorSize, volume: volume)
      } catch let e as VMDKError {
        warnings.append("the backup GPT is damaged or missing: \(e.message)")
      }
    } catch let primary as VMDKError {
      do {
        used = try header(at: lastLBA, sectorSize: sectorSize, volume: volume)
        array = try entries(used, sectorSize: sectorSize, volume: volume)
      } catch let backup as VMDKError {
        var e = primary
        e.message = "\(primary.message); the backup header is no better: \(backup.message)"
        throw e
      }
      warnings.append("the primary GPT is damaged (\(primary.message)); using the backup header at LBA \(lastLBA)")
    }

    var partitions: [Partition] = []
    for slot in 0..<used.entryCount {
      let o = slot * used.entrySize
      let e = Array(array[o..<(o + 128)])
      if e[0..<16].allSatisfy({ $0 == 0 }) { continue }
      let type = guid(e, 0)
      let first = e.le64(32)
      let last = e.le64(40)
      guard first <= last, last <= lastLBA else {
        warnings.append("GPT entry \(slot + 1) (LBA \(first)...\(last)) is not inside the disk: ignored")
        continue
      }
      if first < used.firstUsableLBA || last > used.lastUsableLBA {
        warnings.append("GPT entry \(slot + 1) (LBA \(first)...\(last)) is outside the usable range")
      }
      var units: [UInt16] = []
      for i in 0..<36 {
        let u = e.le16(56 + 2 * i)
        if u == 0 { break }
        units.append(u)
      }
      let name = String(decoding: units, as: UTF16.self)
      let attributes = e.le64(48)
      partitions.append(
        Partition(
          index: slot + 1, startBytes: first * UInt64(sectorSize), sizeBytes: (last - first + 1) * UInt64(sectorSize),
          type: type, typeName: typeNames[type], name: name.isEmpty ? nil : name, guid: guid(e, 16),
          isBootable: attributes & 4 != 0, attributes: attributes))
    }
    let sorted = partitions.sorted { $0.startBytes < $1.startBytes }
    for (a, b) in zip(sorted, sorted.dropFirst()) where a.startBytes + a.sizeBytes > b.startBytes {
      warnings.append("GPT partitions \(a.index) and \(b.index) overlap")
    }
    return PartitionTable(
      scheme: .gpt, sectorSize: sectorSize, diskID: used.diskGUID, partitions: partitions, warnings: warnings)
  }

  static func hex(_ v: UInt32) -> String { "0x" + MBR.hex32(v) }
}

extension PartitionTable {
  /// Reads the partition table of a disk (or any volume): GPT when sector 0 has a 0xEE entry
  /// or a GPT header sits at LBA 1; MBR with its logical partitions; otherwise no table, and
  /// the whole volume is partition 1.
  public static func read(_ volume: any VolumeReader) throws -> PartitionTable {
    let whole = Partition(index: 1, startBytes: 0, sizeBytes: volume.size, type: "none")
    guard volume.size >= 1024 else {
      return PartitionTable(scheme: .none, sectorSize: 512, partitions: volume.size == 0 ? [] : [whole])
    }
    let s0 = try volume.read(at: 0, count: 512)
    let hasSignature = s0[510] == 0x55 && s0[511] == 0xAA
    let lba1 = try volume.read(at: 512, count: 8)
    let lba8 = volume.size >= 8192 ? try volume.read(at: 4096, count: 8) : []
    let entries = (0..<4).map { MBREntry(s0, slot: $0) }
    let protective = hasSignature && entries.contains { $0.type == 0xEE }
    let gptSectorSize = lba1 == GPT.signature ? 512 : lba8 == GPT.signature ? 4096 : 0
    if protective || (gptSectorSize != 0 && !MBR.looksLikeBootSector(s0)) {
      var warnings: [String] = []
      if !protective { warnings.append("the GPT has no protective MBR") }
      if protective && entries.contains(where: { !$0.isEmpty && $0.type != 0xEE }) {
        warnings.append("hybrid MBR: sector 0 lists other partitions besides the GPT's; the GPT is used")
      }
      return try GPT.parse(sectorSize: gptSectorSize == 0 ? 512 : gptSectorSize, volume: volume, warnings: warnings)
    }
    guard hasSignature, !MBR.looksLikeBootSector(s0),
      entries.allSatisfy({ $0.status == 0 || $0.status == 0x80 })
    else {
      return PartitionTable(scheme: .none, sectorSize: 512, partitions: [whole])
    }
    let table = try MBR.parse(sector0: s0, volume: volume)
    if table.partitions.isEmpty && entries.allSatisfy(\.isEmpty) {
      // 55 AA and nothing else: no table.
      return PartitionTable(scheme: .none, sectorSize: 512, partitions: [whole], warnings: table.warnings)
    }
    return table
  }
}
