// Builders for hosted sparse images (KDMV), written from scratch with the format layer's
// header type so that hostile tests can start from a valid file and change one thing:
// `SparseImage` is monolithicSparse in qemu's layout (notes §1.7), `StreamImage` is
// streamOptimized in VMware's layout (notes §2.3 A: grain markers, GT/GD markers, footer, EOS).

import VMDKFormat

/// A small monolithicSparse image: header, embedded descriptor, RGD + RGTs, GD + GTs, grains.
struct SparseImage {
  var capacitySectors: UInt64 = 4096
  var grainSectors: UInt64 = 128
  /// Grain index -> content (one grain; the pattern by default).
  var grains: [UInt64: [UInt8]] = [:]
  /// Grains stored as the zeroed-grain entry 1 (makes the header version 2 with flag bit 2).
  var zeroedGrains: Set<UInt64> = []
  var descriptor: String? = descriptorText(createType: "monolithicSparse", extents: [#"RW 4096 SPARSE "disk.vmdk""#])

  /// Grain `index` filled with the pattern at its virtual offset.
  mutating func fill(_ indices: [UInt64]) {
    for i in indices { grains[i] = Pattern.bytes(startingAt: i * grainSectors * 512, count: Int(grainSectors * 512)) }
  }

  struct Built: HeaderedImage {
    var bytes: [UInt8]
    let header: SparseExtentHeader
    /// Byte offsets of the grain directory, the redundant one, and each grain table.
    let gdOffset: Int
    let rgdOffset: Int
    let gtOffsets: [Int]
    let grainOffsets: [UInt64: Int]
    let expected: ExpectedDisk

    /// Byte offset of the grain table entry of grain `index`.
    func gteOffset(_ index: UInt64) -> Int { gtOffsets[Int(index / 512)] + Int(index % 512) * 4 }
    /// Byte offset of directory entry `table`.
    func gdeOffset(_ table: Int) -> Int { gdOffset + table * 4 }

    /// Rewrites the header after `change`.
    mutating func header(_ change: (inout SparseExtentHeader) -> Void) {
      var h = header
      change(&h)
      bytes.replaceSubrange(0..<512, with: h.serialized())
    }
  }

  func build() -> Built {
    let layout = SparseLayout(capacitySectors: capacitySectors, grainSectors: grainSectors)
    let tables = Int(layout.grainTableCount)
    let gdSectors = Int(layout.grainDirectorySectors)
    let descriptorSectors = descriptor == nil ? 0 : 20
    let rgd = 1 + descriptorSectors
    let gd = rgd + gdSectors + 4 * tables
    let metadataEnd = UInt64(gd + gdSectors + 4 * tables)
    let overhead = (metadataEnd + grainSectors - 1) / grainSectors * grainSectors

    var h = SparseExtentHeader(
      capacitySectors: capacitySectors, grainSectors: grainSectors,
      descriptorOffsetSectors: descriptor == nil ? 0 : 1, descriptorSizeSectors: UInt64(descriptorSectors),
      rgdOffsetSectors: UInt64(rgd), gdOffsetSectors: UInt64(gd), overheadSectors: overhead)
    if !zeroedGrains.isEmpty {
      h.version = 2
      h.flags.insert(.zeroedGrainEntries)
    }
    var bytes = h.serialized()
    if let descriptor { bytes += Array(descriptor.utf8) }
    bytes += [UInt8](repeating: 0, count: Int(overhead) * 512 - bytes.count)

    var expected = ExpectedDisk(sectors: capacitySectors)
    var grainOffsets: [UInt64: Int] = [:]
    var gtes: [UInt64: UInt32] = [:]
    for index in zeroedGrains { gtes[index] = 1 }
    for (index, data) in grains.sorted(by: { $0.key < $1.key }) {
      grainOffsets[index] = bytes.count
      gtes[index] = UInt32(bytes.count / 512)
      bytes += data
      bytes.pad(to: 512)
      expected.place(data, at: index * grainSectors * 512)
    }
    // Both copies of the directory and tables, identical as qemu and VBox keep them.
    for directory in [rgd, gd] {
      for t in 0..<tables {
        let table = directory + gdSectors + 4 * t
        bytes.put32(UInt32(table), at: directory * 512 + t * 4)
        for e in 0..<512 {
          if let gte = gtes[UInt64(t * 512 + e)] { bytes.put32(gte, at: table * 512 + e * 4) }
        }
      }
    }
    return Built(
      bytes: bytes, header: h, gdOffset: gd * 512, rgdOffset: rgd * 512,
      gtOffsets: (0..<tables).map { (gd + gdSectors + 4 * $0) * 512 }, grainOffsets: grainOffsets,
      expected: expected)
  }
}

/// A small streamOptimized image in the VMware/ovftool layout.
struct StreamImage {
  var capacitySectors: UInt64 = 2048
  var grainSectors: UInt64 = 128
  /// Sectors before the first grain marker (header and descriptor); VMware writes 128.
  var overheadSectors: UInt64 = 128
  var grains: [UInt64: [UInt8]] = [:]
  /// Grains whose stream holds only this many bytes of the grain (a short inflation).
  var truncatedGrains: [UInt64: Int] = [:]
  var descriptor = descriptorText(createType: "streamOptimized", extents: [#"RDONLY 2048 SPARSE "stream.vmdk""#])

  mutating func fill(_ indices: [UInt64]) {
    for i in indices { grains[i] = Pattern.bytes(startingAt: i * grainSectors * 512, count: Int(grainSectors * 512)) }
  }

  struct Built: BuiltImage {
    var bytes: [UInt8]
    /// The sector-0 header (gdOffset = GD_AT_END) and the footer.
    let header: SparseExtentHeader
    let footer: SparseExtentHeader
    /// Byte offset of each grain's marker, and of the footer marker (the last 3 sectors).
    let markerOffsets: [UInt64: Int]
    let gtOffsets: [Int: Int]
    let footerMarkerOffset: Int
    let expected: ExpectedDisk

    func gteOffset(_ index: UInt64) -> Int { gtOffsets[Int(index / 512)]! + Int(index % 512) * 4 }
  }

  static func compress(_ data: [UInt8]) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: GrainCompression.bound(data.count))
    let n = data.withUnsafeBytes { src in
      out.withUnsafeMutableBytes { GrainCompression.deflate(src, into: $0, level: 1) }
    }
    return Array(out.prefix(n!))
  }

  func build() -> Built {
    let layout = SparseLayout(capacitySectors: capacitySectors, grainSectors: grainSectors)
    let descriptorBytes = Array(descriptor.utf8)
    let descriptorSectors = UInt64((descriptorBytes.count + 511) / 512)
    let h = SparseExtentHeader(
      version: 3, flags: [.validNewlineDetector, .compressed, .markers], capacitySectors: capacitySectors,
      grainSectors: grainSectors, descriptorOffsetSectors: 1, descriptorSizeSectors: descriptorSectors,
      gdOffsetSectors: SparseExtentHeader.gdAtEnd, overheadSectors: overheadSectors, compressAlgorithm: 1)
    var bytes = h.serialized() + descriptorBytes
    bytes += [UInt8](repeating: 0, count: max(0, Int(overheadSectors) * 512 - bytes.count))

    var expected = ExpectedDisk(sectors: capacitySectors)
    var markerOffsets: [UInt64: Int] = [:]
    var gtOffsets: [Int: Int] = [:]
    var gd = [UInt32](repeating: 0, count: Int(layout.grainTableCount))
    let byTable = Dictionary(grouping: grains.keys, by: { Int($0 / 512) })
    for table in byTable.keys.sorted() {
      var gt = [UInt32](repeating: 0, count: 512)
      for index in byTable[table]!.sorted() {
        let data = grains[index]!
        let stored = Array(data.prefix(truncatedGrains[index] ?? data.count))
        expected.place(stored, at: index * grainSectors * 512)
        let z = Self.compress(stored)
        markerOffsets[index] = bytes.count
        gt[Int(index % 512)] = UInt32(bytes.count / 512)
        bytes += StreamMarker(value: index * grainSectors, size: UInt32(z.count)).serialized() + z
        bytes.pad(to: 512)
      }
      bytes += StreamMarker(value: 4, size: 0, type: StreamMarker.MetadataType.grainTable.rawValue).serialized()
      gd[table] = UInt32(bytes.count / 512)
      gtOffsets[table] = bytes.count
      bytes += gt.flatMap(le32)
    }
    bytes += StreamMarker(
      value: layout.grainDirectorySectors, size: 0, type: StreamMarker.MetadataType.grainDirectory.rawValue
    ).serialized()
    let gdSector = UInt64(bytes.count / 512)
    bytes += gd.flatMap(le32)
    bytes.pad(to: 512)
    let footerMarkerOffset = bytes.count
    bytes += StreamMarker(value: 1, size: 0, type: StreamMarker.MetadataType.footer.rawValue).serialized()
    var footer = h
    footer.gdOffsetSectors = gdSector
    bytes += footer.serialized()
    bytes += StreamMarker(value: 0, size: 0, type: StreamMarker.MetadataType.endOfStream.rawValue).serialized()
    return Built(
      bytes: bytes, header: h, footer: footer, markerOffsets: markerOffsets, gtOffsets: gtOffsets,
      footerMarkerOffset: footerMarkerOffset, expected: expected)
  }
}
