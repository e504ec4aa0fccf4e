// The grain directory and table entries, grain marker headers and createType values, as the
// format layer decodes them (bytes in, values or typed errors out).

import Testing
import VMDKFormat

@Suite struct GrainEntriesTests {
  let size: UInt64 = 1 << 20

  @Test func littleEndianEntriesOfBothWidths() {
    let bytes: [UInt8] = [1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0, 0, 0, 0, 0x30]
    #expect(GrainEntries.decode(bytes, width: 4, count: 4) == [1, 0xFFFF_FFFF, 2, 0x3000_0000])
    #expect(GrainEntries.decode(bytes, width: 8, count: 2) == [0xFFFF_FFFF_0000_0001, 0x3000_0000_0000_0002])
    // Short input: only whole entries, never a read past the bytes.
    #expect(GrainEntries.decode(Array(bytes.prefix(7)), width: 4, count: 512) == [1])
    #expect(GrainEntries.decode(bytes, width: 0, count: 4).isEmpty)
  }

  @Test func sparseEntries() throws {
    let plain = SparseEntryDecoder(zeroedGrainEntries: false, compressed: false)
    let zeroed = SparseEntryDecoder(zeroedGrainEntries: true, compressed: false)
    let stream = SparseEntryDecoder(zeroedGrainEntries: false, compressed: true)
    #expect(try plain.grain(gte: 0, at: 0, fileSize: size) == .unallocated)
    #expect(try plain.grain(gte: 1, at: 0, fileSize: size) == .data(512))
    #expect(try zeroed.grain(gte: 1, at: 0, fileSize: size) == .zero)
    #expect(try stream.grain(gte: 128, at: 0, fileSize: size) == .compressed(65536))
    expectFormatError(.offsetPastEnd, offset: 4100, mentioning: "sector 2048") {
      _ = try plain.grain(gte: 2048, at: 4100, fileSize: size)
    }
    #expect(try plain.tableOffset(gde: 0, at: 0, fileSize: size) == nil)
    #expect(try plain.tableOffset(gde: 2044, at: 0, fileSize: size) == 2044 * 512)
    // The table's 2 KiB must fit: one that starts 1 KiB before the end does not.
    expectFormatError(.offsetPastEnd, offset: 8) { _ = try plain.tableOffset(gde: 2046, at: 8, fileSize: size) }
    // Sectors whose byte offset overflows are refused, not wrapped.
    expectFormatError(.offsetPastEnd) { _ = try plain.tableOffset(gde: UInt64.max / 256, at: 0, fileSize: .max) }
    expectFormatError(.offsetPastEnd) { _ = try plain.grain(gte: UInt64.max / 256, at: 0, fileSize: .max) }
  }

  @Test func sparseDecoderFollowsTheHeader() throws {
    var h = SparseExtentHeader(capacitySectors: 2048, grainSectors: 128)
    h.flags.insert(.zeroedGrainEntries)
    #expect(try SparseEntryDecoder(header: h).grain(gte: 1, at: 0, fileSize: size) == .zero)
    h.flags.remove(.zeroedGrainEntries)
    #expect(try SparseEntryDecoder(header: h).grain(gte: 1, at: 0, fileSize: size) == .data(512))
  }

  @Test func cowdEntries() throws {
    let d = COWDEntryDecoder()
    #expect(try d.grain(gte: 0, at: 0, fileSize: size) == .unallocated)
    #expect(try d.grain(gte: 1, at: 0, fileSize: size) == .data(512))
    expectFormatError(.offsetPastEnd, offset: 12, mentioning: "COWD") {
      _ = try d.grain(gte: 2048, at: 12, fileSize: size)
    }
    // A COWD table is 4096 entries (16 KiB).
    #expect(try d.tableOffset(gde: 2016, at: 0, fileSize: size) == 2016 * 512)
    expectFormatError(.offsetPastEnd) { _ = try d.tableOffset(gde: 2017, at: 0, fileSize: size) }
  }

  @Test func seSparseEntries() throws {
    let d = SESparseEntryDecoder(
      grainSectors: 8, grainTablesOffsetSectors: 100, grainTableSizeSectors: 64, grainsOffsetSectors: 1000)
    #expect(try d.grain(gte: 0, at: 0, fileSize: size) == .unallocated)
    #expect(try d.grain(gte: 0x1000_0000_0000_0000, at: 0, fileSize: size) == .zero)
    #expect(try d.grain(gte: 0x2000_0000_0000_0005, at: 0, fileSize: size) == .zero)
    // Type 3: the low 48 bits are the index's bits 12 and up, bits 48-59 its low 12 bits.
    #expect(try d.grain(gte: 0x3001_0000_0000_0000, at: 0, fileSize: size) == .data((1000 + 1 * 8) * 512))
    #expect(try d.grain(gte: 0x3000_0000_0000_0001, at: 0, fileSize: 32 << 20) == .data((1000 + 4096 * 8) * 512))
    expectFormatError(.offsetPastEnd, offset: 16) {
      _ = try d.grain(gte: 0x3000_0000_0000_0001, at: 16, fileSize: size)
    }
    expectFormatError(.offsetPastEnd) { _ = try d.grain(gte: 0x3FFF_FFFF_FFFF_FFFF, at: 0, fileSize: .max) }
    expectFormatError(.invalidTable, offset: 24, mentioning: "is invalid") {
      _ = try d.grain(gte: 0x0000_0000_0000_0001, at: 24, fileSize: size)
    }
    expectFormatError(.invalidTable, mentioning: "unknown type") {
      _ = try d.grain(gte: 0x9000_0000_0000_0000, at: 0, fileSize: size)
    }
    #expect(try d.tableOffset(gde: 0, at: 0, fileSize: size) == nil)
    #expect(try d.tableOffset(gde: 0x1000_0000_0000_0002, at: 0, fileSize: size) == (100 + 2 * 64) * 512)
    expectFormatError(.invalidTable) { _ = try d.tableOffset(gde: 0x2000_0000_0000_0002, at: 0, fileSize: size) }
    expectFormatError(.offsetPastEnd) { _ = try d.tableOffset(gde: 0x1000_0000_0000_0100, at: 0, fileSize: size) }
    let huge = SESparseEntryDecoder(
      grainSectors: .max, grainTablesOffsetSectors: .max, grainTableSizeSectors: .max, grainsOffsetSectors: .max)
    expectFormatError(.offsetPastEnd) { _ = try huge.tableOffset(gde: 0x1000_0000_0000_0001, at: 0, fileSize: .max) }
    expectFormatError(.offsetPastEnd) { _ = try huge.grain(gte: 0x3000_0000_0000_0001, at: 0, fileSize: .max) }
  }

  @Test func grainMarkerHeaders() throws {
    func header(lba: UInt64, size: UInt32) -> [UInt8] { StreamMarker(value: lba, size: size).serialized() }
    let g = try GrainMarkerHeader(parsing: header(lba: 128, size: 300), at: 1024, grainBytes: 65536, fileSize: size)
    #expect(g.lba == 128 && g.compressedBytes == 300 && g.dataOffset == 1036)
    expectFormatError(.invalidMarker, offset: 1024, mentioning: "metadata marker") {
      _ = try GrainMarkerHeader(parsing: header(lba: 1, size: 0), at: 1024, grainBytes: 65536, fileSize: size)
    }
    expectFormatError(.compressedGrainTooLarge, mentioning: "two grains") {
      _ = try GrainMarkerHeader(parsing: header(lba: 0, size: 131073), at: 0, grainBytes: 65536, fileSize: .max)
    }
    expectFormatError(.compressedGrainTooLarge, mentioning: "file ends") {
      _ = try GrainMarkerHeader(parsing: header(lba: 0, size: 600), at: size - 512, grainBytes: 65536, fileSize: size)
    }
    expectFormatError(.compressedGrainTooLarge) {
      _ = try GrainMarkerHeader(parsing: header(lba: 0, size: 1), at: .max - 4, grainBytes: 65536, fileSize: .max)
    }
    expectFormatError(.truncated) {
      _ = try GrainMarkerHeader(parsing: [1, 2, 3], at: 0, grainBytes: 65536, fileSize: size)
    }
  }

  @Test func createTypes() throws {
    #expect(CreateType("monolithicSparse") == .monolithicSparse)
    #expect(CreateType("STREAMOPTIMIZED") == .streamOptimized)
    #expect(CreateType("2GbMaxExtentSparse") == .twoGbMaxExtentSparse && CreateType("twoGbMaxExtentFlat").isSplit)
    #expect(CreateType("vmfsThin") == .vmfs("vmfsThin"))
    #expect(CreateType("vmfsSparse").isRedoLog && CreateType("seSparse").isRedoLog)
    #expect(CreateType("vmfsSeSparse") == .seSparse)
    for device in ["fullDevice", "partitionedDevice", "vmfsRDM", "vmfsRawDeviceMap", "vmfsRDMP", "vmfsraw"] {
      #expect(CreateType(device).isRawDevice, "\(device)")
    }
    #expect(CreateType("custom") == .custom)
    #expect(CreateType("monolithicSparse ") == .unknown("monolithicSparse "))
    #expect(!CreateType("monolithicFlat").isRawDevice && !CreateType("monolithicFlat").isSplit)
    let d = try Descriptor(parsing: Array("# Disk DescriptorFile\nversion=1\ncreateType=\"vmfsSparse\"\n".utf8))
    #expect(d.createTypeKind == .vmfsSparse)
  }
}
