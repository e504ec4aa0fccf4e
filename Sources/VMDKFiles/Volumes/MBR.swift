// The MBR and its extended boot records (EBR). Entry 1 of an EBR is a logical partition whose
// start is relative to the EBR's own sector; entry 2 links to the next EBR, relative to the
// start of the primary extended partition. The chain is followed with a visited set and a cap.
import VMDKBlock

/// One 16-byte MBR/EBR entry.
struct MBREntry {
  /// Byte 0: 0x00, or 0x80 for bootable.
  var status: UInt8
  /// Byte 4.
  var type: UInt8
  /// Bytes 8-11: first sector (relative: see the file comment).
  var startLBA: UInt32
  /// Bytes 12-15: sectors.
  var sectors: UInt32

  init(_ sector: [UInt8], slot: Int) {
    let o = 446 + 16 * slot
    status = sector[o]
    type = sector[o + 4]
    startLBA = sector.le32(o + 8)
    sectors = sector.le32(o + 12)
  }

  var isEmpty: Bool { type == 0 || sectors == 0 }
  var isExtended: Bool { type == 0x05 || type == 0x0F || type == 0x85 }
}

enum MBR {
  static let typeNames: [UInt8: String] = [
    0x01: "FAT12", 0x04: "FAT16 <32M", 0x06: "FAT16", 0x07: "NTFS/exFAT/HPFS", 0x0B: "FAT32 (CHS)",
    0x0C: "FAT32 (LBA)", 0x0E: "FAT16 (LBA)", 0x11: "Hidden FAT12", 0x14: "Hidden FAT16 <32M",
    0x16: "Hidden FAT16", 0x17: "Hidden NTFS", 0x1B: "Hidden FAT32", 0x1C: "Hidden FAT32 (LBA)",
    0x1E: "Hidden FAT16 (LBA)", 0x42: "Windows dynamic (LDM)", 0x82: "Linux swap", 0x83: "Linux",
    0x8E: "Linux LVM", 0xA5: "FreeBSD", 0xEE: "GPT protective", 0xEF: "EFI System", 0xFB: "VMware VMFS",
    0xFD: "Linux RAID",
  ]

  /// True when sector 0 looks like a file system's boot sector rather than an MBR: a jump
  /// instruction and a plausible BPB (FAT) or NTFS's OEM name. Such sectors end in 55 AA too.
  static func looksLikeBootSector(_ s: [UInt8]) -> Bool {
    guard s.count >= 512, s[0] == 0xEB || s[0] == 0xE9 else { return false }
    if Array(s[3..<11]) == Array("NTFS    ".utf8) || Array(s[3..<11]) == Array("EXFAT   ".utf8) { return true }
    let bytesPerSector = Int(s.le16(11))
    let spc = Int(s[13])
    let fats = s[16]
    return [512, 1024, 2048, 4096].contains(bytesPerSector) && spc != 0 && spc & (spc - 1) == 0 && fats >= 1
      && s.le16(14) != 0
  }

  /// Parses the MBR in `sector0` and follows its extended chain through `volume`.
  static func parse(sector0: [UInt8], volume: any VolumeReader) throws -> PartitionTable {
    let diskSectors = volume.size / 512
    var warnings: [String] = []
    var partitions: [Partition] = []
    let entries = (0..<4).map { MBREntry(sector0, slot: $0) }
    var extended: (slot: Int, start: UInt64, sectors: UInt64)?

    func clamp(_ start: UInt64, _ sectors: UInt64, _ what: String) -> UInt64? {
      guard start < diskSectors else {
        warnings.append("\(what) starts at sector \(start), past the end of the disk (\(diskSectors) sectors): ignored")
        return nil
      }
      if sectors > diskSectors - start {
        warnings.append(
          "\(what) (sectors \(start)+\(sectors)) runs past the end of the disk (\(diskSectors) sectors): cut to the disk"
        )
        return diskSectors - start
      }
      return sectors
    }

    for (slot, e) in entries.enumerated() where !e.isEmpty {
      let start = UInt64(e.startLBA)
      let sectors = UInt64(e.sectors)
      if e.isExtended {
        if extended != nil {
          warnings.append("a second extended partition in slot \(slot + 1) is ignored")
          continue
        }
        guard start != 0, let n = clamp(start, sectors, "extended partition \(slot + 1)") else { continue }
        extended = (slot, start, n)
        continue
      }
      guard let n = clamp(start, sectors, "partition \(slot + 1)") else { continue }
      partitions.append(
        Partition(
          index: slot + 1, startBytes: start * 512, sizeBytes: n * 512,
          type: hex(e.type), typeName: typeNames[e.type], isBootable: e.status == 0x80))
    }

    if let ext = extended {
      partitions += try logicals(ext.start, ext.sectors, volume: volume, warnings: &warnings)
    }
    let signature = sector0.le32(440)
    return PartitionTable(
      scheme: .mbr, sectorSize: 512, diskID: signature == 0 ? nil : hex32(signature), partitions: partitions,
      warnings: warnings)
  }

  /// Follows the EBR chain of the extended partition at `extStart` (sectors).
  static func logicals(
    _ extStart: UInt64, _ extSectors: UInt64, volume: any VolumeReader, warnings: inout [String]
  ) throws -> [Partition] {
    var result: [Partition] = []
    var visited: Set<UInt64> = []
    var ebr = extStart
    let extEnd = extStart + extSectors
    var index = 5
    while true {
      guard visited.insert(ebr).inserted else {
        throw VMDKError(
          .invalidPartitionTable, "the extended partition's chain loops back to the EBR at sector \(ebr)",
          file: volume.name, offset: ebr * 512)
      }
      guard visited.count <= PartitionLimits.maxLogicalPartitions else {
        throw VMDKError(
          .invalidPartitionTable,
          "the extended partition's chain has more than \(PartitionLimits.maxLogicalPartitions) EBRs",
          file: volume.name, offset: ebr * 512)
      }
      let sector = try volume.read(at: ebr * 512, count: 512)
      guard sector[510] == 0x55, sector[511] == 0xAA else {
        throw VMDKError(
          .invalidPartitionTable,
          "the EBR at sector \(ebr) has no 55 AA signature (found \(hex(sector[510])) \(hex(sector[511])))",
          file: volume.name, offset: ebr * 512 + 510)
      }
      var next: UInt64?
      var tookData = false
      for slot in 0..<4 {
        let e = MBREntry(sector, slot: slot)
        if e.isEmpty { continue }
        if e.isExtended {
          guard next == nil else { continue }
          guard e.startLBA != 0 else {
            throw VMDKError(
              .invalidPartitionTable, "the EBR at sector \(ebr) links to itself (relative start 0)",
              file: volume.name, offset: ebr * 512 + UInt64(446 + 16 * slot + 8))
          }
          let target = extStart + UInt64(e.startLBA)
          guard target < extEnd else {
            throw VMDKError(
              .invalidPartitionTable,
              "the EBR at sector \(ebr) links to sector \(target), outside the extended partition (sectors \(extStart)..<\(extEnd))",
              file: volume.name, offset: ebr * 512 + UInt64(446 + 16 * slot + 8))
          }
          next = target
        } else if !tookData {
          tookData = true
          let start = ebr + UInt64(e.startLBA)
          let sectors = UInt64(e.sectors)
          guard e.startLBA != 0, start < extEnd, sectors <= extEnd - start else {
            throw VMDKError(
              .invalidPartitionTable,
              "logical partition \(index) (sectors \(start)+\(sectors)) is not inside the extended partition (sectors \(extStart)..<\(extEnd))",
              file: volume.name, offset: ebr * 512 + UInt64(446 + 16 * slot + 8))
          }
          result.append(
            Partition(
              index: index, startBytes: start * 512, sizeBytes: sectors * 512, type: hex(e.type),
              typeName: typeNames[e.type], isLogical: true, isBootable: e.status == 0x80))
          index += 1
        }
      }
      guard let n = next else { break }
      ebr = n
    }
    return result
  }

  static func hex(_ b: UInt8) -> String {
    let h = String(b, radix: 16)
    return "0x" + (h.count < 2 ? "0" + h : h)
  }
  static func hex32(_ v: UInt32) -> String {
    let h = String(v, radix: 16)
    return String(repeating: "0", count: 8 - h.count) + h
  }
}
