// The FAT boot sector and BPB: what decides "FAT or not" (probe) and the volume's geometry.
// The type comes from the cluster count (fatgen103), never from the FilSysType string.
import VMDKBlock

/// The geometry of a FAT volume, every field checked against the volume's size.
struct FATGeometry: Sendable {
  enum Width: Int, Sendable {
    case fat12 = 12
    case fat16 = 16
    case fat32 = 32
  }
  var width: Width
  /// 11: 512, 1024, 2048 or 4096.
  var bytesPerSector: Int
  /// 13 × 11.
  var clusterSize: Int
  /// Byte offset of the FAT in use.
  var fatOffset: UInt64
  /// Bytes of one FAT (FATSz × BytsPerSec).
  var fatBytes: UInt64
  /// FAT12/16: byte range of the fixed root directory.
  var rootOffset: UInt64
  var rootBytes: Int
  /// FAT32: the root directory's first cluster (44).
  var rootCluster: UInt32
  /// Byte offset of cluster 2.
  var dataOffset: UInt64
  /// Data clusters: valid cluster numbers are 2 ... count + 1.
  var clusterCount: UInt32
  /// 43 / 71: the boot sector's label (nil when "NO NAME" or blank).
  var bootLabel: String?
  /// 39 / 67: the volume serial as "XXXX-XXXX" when BootSig is 0x29.
  var serial: String?
  var warnings: [String]

  var maxCluster: UInt32 { clusterCount + 1 }

  /// Byte offset of cluster `n` (2 ... maxCluster).
  func offset(ofCluster n: UInt32) -> UInt64 { dataOffset + UInt64(n - 2) * UInt64(clusterSize) }

  /// The end-of-chain threshold for this width.
  var endOfChain: UInt32 {
    switch width {
    case .fat12: 0xFF8
    case .fat16: 0xFFF8
    case .fat32: 0x0FFF_FFF8
    }
  }
}

enum FATBootSector {
  /// Decodes `s` (the first 512 bytes of the volume). nil: not a FAT boot sector. Throws
  /// `.corruptFileSystem` when it is one but its geometry does not hold together.
  static func parse(_ s: [UInt8], volumeSize: UInt64, name: String) throws -> FATGeometry? {
    guard s.count >= 512, s[510] == 0x55, s[511] == 0xAA, s[0] == 0xEB || s[0] == 0xE9 else { return nil }
    let oem = Array(s[3..<11])
    if oem == Array("NTFS    ".utf8) || oem == Array("EXFAT   ".utf8) { return nil }
    let bps = Int(s.le16(11))
    let spc = Int(s[13])
    let reserved = UInt64(s.le16(14))
    let fats = UInt64(s[16])
    let rootEntries = Int(s.le16(17))
    let media = s[21]
    guard [512, 1024, 2048, 4096].contains(bps), spc != 0, spc & (spc - 1) == 0, reserved != 0, (1...8).contains(fats),
      media == 0xF0 || media >= 0xF8
    else { return nil }

    func bad(_ what: String, _ field: Int) -> VMDKError {
      VMDKError(.corruptFileSystem, "FAT boot sector: \(what)", file: name, offset: UInt64(field))
    }
    let tot16 = UInt64(s.le16(19))
    let totalSectors = tot16 != 0 ? tot16 : UInt64(s.le32(32))
    let fatSz16 = UInt64(s.le16(22))
    let fatSz32 = UInt64(s.le32(36))
    let fatSectors = fatSz16 != 0 ? fatSz16 : fatSz32
    guard fatSectors != 0 else { throw bad("sectors per FAT is 0", 22) }
    let rootSectors = (UInt64(rootEntries) * 32 + UInt64(bps) - 1) / UInt64(bps)
    let firstData = reserved + fats * fatSectors + rootSectors
    guard firstData < totalSectors else {
      throw bad("the data area would start at sector \(firstData), past the volume's \(totalSectors) sectors", 19)
    }
    let count64 = (totalSectors - firstData) / UInt64(spc)
    guard count64 >= 1, count64 <= 0x0FFF_FFF5 else { throw bad("\(count64) data clusters", 13) }
    let count = UInt32(count64)
    let width: FATGeometry.Width = count < 4085 ? .fat12 : count < 65525 ? .fat16 : .fat32
    var warnings: [String] = []
    if (fatSz16 == 0) != (width == .fat32) {
      warnings.append(
        "the BPB's layout (\(fatSz16 == 0 ? "FAT32" : "FAT12/16")) disagrees with the cluster count \(count) (\(width)); the count decides"
      )
    }
    if width == .fat32 && rootEntries != 0 { throw bad("FAT32 with \(rootEntries) fixed root entries", 17) }
    if width != .fat32 && rootEntries == 0 { throw bad("\(width) without root entries", 17) }
    let sector = UInt64(bps)
    let byteSize = totalSectors * sector
    if byteSize > volumeSize {
      warnings.append("the file system claims \(byteSize) bytes, the volume has \(volumeSize)")
    }
    // The active FAT: FAT32's ExtFlags bit 7 says only one is current.
    var active: UInt64 = 0
    if width == .fat32 {
      let flags = s.le16(40)
      if flags & 0x80 != 0 {
        active = UInt64(flags & 0x0F)
        guard active < fats else { throw bad("active FAT \(active) of \(fats)", 40) }
      }
    }
    let fatOffset = (reserved + active * fatSectors) * sector
    let fatBytes = fatSectors * sector
    let needed: UInt64
    switch width {
    case .fat12: needed = (UInt64(count) + 2) * 3 / 2 + 1
    case .fat16: needed = (UInt64(count) + 2) * 2
    case .fat32: needed = (UInt64(count) + 2) * 4
    }
    guard needed <= fatBytes + (width == .fat12 ? 1 : 0) else {
      throw bad("a FAT of \(fatBytes) bytes cannot hold \(count) clusters", 22)
    }
    guard fatOffset + fatBytes <= volumeSize else { throw bad("the FAT runs past the end of the volume", 14) }
    let rootOffset = (reserved + fats * fatSectors) * sector
    let dataOffset = firstData * sector
    var rootCluster: UInt32 = 0
    if width == .fat32 {
      rootCluster = s.le32(44) & 0x0FFF_FFFF
      guard rootCluster >= 2, rootCluster <= count + 1 else {
        throw bad("root cluster \(rootCluster) is outside 2...\(count + 1)", 44)
      }
    } else {
      guard dataOffset <= volumeSize else { throw bad("the root directory runs past the end of the volume", 17) }
    }
    let e = width == .fat32 ? 66 : 38  // BootSig
    var label: String?
    var serial: String?
    if s[e] == 0x29 {
      let id = s.le32(e + 1)
      let hex = String(id, radix: 16, uppercase: true)
      let h = String(repeating: "0", count: 8 - hex.count) + hex
      serial = String(h.prefix(4)) + "-" + String(h.suffix(4))
      let l = FATNames.oem(Array(s[(e + 5)..<(e + 16)])).trimmingTrailingSpaces()
      if !l.isEmpty && l != "NO NAME" { label = l }
    }
    return FATGeometry(
      width: width, bytesPerSector: bps, clusterSize: bps * spc, fatOffset: fatOffset, fatBytes: fatBytes,
      rootOffset: rootOffset, rootBytes: Int(rootSectors * sector), rootCluster: rootCluster, dataOffset: dataOffset,
      clusterCount: count, bootLabel: label, serial: serial, warnings: warnings)
  }
}

extension String {
  func trimmingTrailingSpaces() -> String {
    var s = Substring(self)
    while s.last == " " { s = s.dropLast() }
    return String(s)
  }
}
