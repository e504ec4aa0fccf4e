// Unit tests of the NTFS parsers over hand-made bytes: boot-sector geometry, update-sequence
// fixups, MFT records and attributes, runlists, index nodes, LZNT1 and FILETIME.
import Testing
import VMDKBlock

@testable import VMDKFiles

enum NTFSBuild {
  /// A boot sector: 512-byte sectors, `spc`, $MFT at cluster 4, record and index bytes.
  static func boot(spc: UInt8 = 8, record: UInt8 = 0xF6, index: UInt8 = 1, sectors: UInt64 = 131071) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 512)
    b[0] = 0xEB
    b[1] = 0x52
    b[2] = 0x90
    for (i, c) in "NTFS    ".utf8.enumerated() { b[3 + i] = c }
    b.put16(11, 512)
    b[13] = spc
    b[21] = 0xF8
    b.put64(40, sectors)
    b.put64(48, 4)
    b.put64(56, 2)
    b[64] = record
    b[68] = index
    b.put64(72, 0x1234_5678_9ABC_DEF0)
    b[510] = 0x55
    b[511] = 0xAA
    return b
  }

  /// A FILE record of `size` bytes holding `attributes` (each already 8-aligned), with the
  /// update sequence applied (sector ends replaced by the USN 0x0007).
  static func record(size: Int = 1024, number: UInt32 = 64, flags: UInt16 = 1, attributes: [[UInt8]]) -> [UInt8] {
    var r = [UInt8](repeating: 0, count: size)
    for (i, c) in "FILE".utf8.enumerated() { r[i] = c }
    let usaCount = 1 + size / 512
    r.put16(4, 48)
    r.put16(6, UInt16(usaCount))
    r.put16(16, 3)  // sequence
    r.put16(18, 1)  // links
    let attrsOffset = (48 + 2 * usaCount + 7) & ~7
    r.put16(20, UInt16(attrsOffset))
    r.put16(22, flags)
    r.put32(28, UInt32(size))
    r.put32(44, number)
    var p = attrsOffset
    for a in attributes {
      for (i, x) in a.enumerated() { r[p + i] = x }
      p += a.count
    }
    r.put32(p, 0xFFFF_FFFF)
    p += 8
    r.put32(24, UInt32(p))
    return protect(r, usaOffset: 48)
  }

  /// Moves each sector's last u16 into the USA and writes the USN there.
  static func protect(_ bytes: [UInt8], usaOffset: Int) -> [UInt8] {
    var r = bytes
    let usn: UInt16 = 7
    r.put16(usaOffset, usn)
    for i in 1...(r.count / 512) {
      let end = i * 512 - 2
      r[usaOffset + 2 * i] = r[end]
      r[usaOffset + 2 * i + 1] = r[end + 1]
      r.put16(end, usn)
    }
    return r
  }

  /// A resident attribute with `value`.
  static func resident(_ type: UInt32, _ value: [UInt8], name: [UInt16] = []) -> [UInt8] {
    let nameOffset = 24
    let valueOffset = (nameOffset + 2 * name.count + 7) & ~7
    let length = (valueOffset + value.count + 7) & ~7
    var a = [UInt8](repeating: 0, count: length)
    a.put32(0, type)
    a.put32(4, UInt32(length))
    a[9] = UInt8(name.count)
    a.put16(10, UInt16(nameOffset))
    a.put32(16, UInt32(value.count))
    a.put16(20, UInt16(valueOffset))
    for (i, u) in name.enumerated() { a.put16(nameOffset + 2 * i, u) }
    for (i, x) in value.enumerated() { a[valueOffset + i] = x }
    return a
  }

  /// A non-resident attribute with mapping pairs `pairs`.
  static func nonResident(
    _ type: UInt32, pairs: [UInt8], lowest: Int64 = 0, highest: Int64, size: UInt64, initialized: UInt64? = nil,
    flags: UInt16 = 0
  ) -> [UInt8] {
    let length = (64 + pairs.count + 1 + 7) & ~7
    var a = [UInt8](repeating: 0, count: length)
    a.put32(0, type)
    a.put32(4, UInt32(length))
    a[8] = 1
    a.put16(12, flags)
    a.put64(16, UInt64(bitPattern: lowest))
    a.put64(24, UInt64(bitPattern: highest))
    a.put16(32, 64)
    a.put64(40, UInt64(highest + 1) * 4096)
    a.put64(48, size)
    a.put64(56, initialized ?? size)
    for (i, x) in pairs.enumerated() { a[64 + i] = x }
    return a
  }

  /// A $FILE_NAME value.
  static func fileName(_ name: String, parent: UInt64 = 5, namespace: UInt8 = 1, attributes: UInt32 = 0x20)
    -> [UInt8]
  {
    let units = Array(name.utf16)
    var v = [UInt8](repeating: 0, count: 66 + 2 * units.count)
    v.put64(0, parent)
    v.put32(56, attributes)
    v[64] = UInt8(units.count)
    v[65] = namespace
    for (i, u) in units.enumerated() { v.put16(66 + 2 * i, u) }
    return v
  }
}

@Suite struct NTFSParserTests {
  // MARK: Boot sector

  @Test func bootSectorGeometry() throws {
    let b = try NTFSBootSector(parsing: NTFSBuild.boot(), volumeSize: 64 << 20)
    #expect(b.clusterSize == 4096)
    #expect(b.mftRecordSize == 1024)
    #expect(b.indexBlockSize == 4096)
    #expect(b.clusterCount == 131071 / 8)
    #expect(b.mftLCN == 4)
    // 0xF8 is a shift: 2^(256 - 248) = 256 sectors = 128 KiB; index blocks given in bytes.
    let big = try NTFSBootSector(parsing: NTFSBuild.boot(spc: 0xF8, index: 0xF4, sectors: 1 << 24), volumeSize: 8 << 30)
    #expect(big.clusterSize == 128 << 10)
    #expect(big.indexBlockSize == 4096)
    // 4 KiB records given as one 4 KiB cluster, and as 2^12 bytes.
    #expect(try NTFSBootSector(parsing: NTFSBuild.boot(record: 1), volumeSize: 64 << 20).mftRecordSize == 4096)
    #expect(try NTFSBootSector(parsing: NTFSBuild.boot(record: 0xF4), volumeSize: 64 << 20).mftRecordSize == 4096)
    #expect(NTFSBootSector.isNTFS(NTFSBuild.boot()))
  }

  @Test func bootSectorRejectsBadGeometry() {
    var b = NTFSBuild.boot()
    b.put16(11, 500)
    expectError(.corruptFileSystem) { _ = try NTFSBootSector(parsing: b, volumeSize: 64 << 20) }
    expectError(.corruptFileSystem) { _ = try NTFSBootSector(parsing: NTFSBuild.boot(spc: 3), volumeSize: 64 << 20) }
    expectError(.corruptFileSystem) { _ = try NTFSBootSector(parsing: NTFSBuild.boot(spc: 0), volumeSize: 64 << 20) }
    // 2^(256-0xE0) = 2^32 sectors per cluster.
    expectError(.fileSystemLimit) { _ = try NTFSBootSector(parsing: NTFSBuild.boot(spc: 0xE0), volumeSize: 64 << 20) }
    expectError(.corruptFileSystem) { _ = try NTFSBootSector(parsing: NTFSBuild.boot(record: 0), volumeSize: 64 << 20) }
    // 2^20-byte records are beyond the 64 KiB cap; 2^8 is below the fixup stride.
    expectError(.fileSystemLimit) {
      _ = try NTFSBootSector(parsing: NTFSBuild.boot(record: 0xEC), volumeSize: 64 << 20)
    }
    expectError(.fileSystemLimit) {
      _ = try NTFSBootSector(parsing: NTFSBuild.boot(record: 0xF8), volumeSize: 64 << 20)
    }
    var m = NTFSBuild.boot()
    m.put64(48, 0)
    expectError(.corruptFileSystem) { _ = try NTFSBootSector(parsing: m, volumeSize: 64 << 20) }
    m.put64(48, 1 << 40)
    expectError(.corruptFileSystem) { _ = try NTFSBootSector(parsing: m, volumeSize: 64 << 20) }
  }

  // MARK: Fixups and records

  @Test func fixupsRestoreSectorEndsAndDetectTornWrites() throws {
    let data = NTFSBuild.resident(0x80, Array(repeating: 0xAB, count: 600))
    let raw = NTFSBuild.record(attributes: [data])
    #expect(raw[510] == 7 && raw[1022] == 7)
    var fixed = raw
    try NTFSFixup.apply(&fixed, magic: "FILE", volumeOffset: 0)
    #expect(fixed[1022] == 0 && fixed[510] == 0xAB)
    let r = try #require(try NTFSRecord.parse(raw, number: 64, clusterCount: 1000, volumeOffset: 0))
    #expect(r.attributes.count == 1)
    #expect(r.attributes[0].value == Array(repeating: 0xAB, count: 600))
    // A sector that does not end with the USN is a torn write.
    var torn = raw
    torn[1022] = 8
    let e = expectError(.corruptFileSystem) {
      _ = try NTFSRecord.parse(torn, number: 64, clusterCount: 1000, volumeOffset: 4096)
    }
    #expect(e?.offset == 4096 + 1022)
    // A wrong USA count, and a USA that leaves the first sector.
    var count = raw
    count.put16(6, 2)
    expectError(.corruptFileSystem) { try NTFSFixup.apply(&count, magic: "FILE", volumeOffset: 0) }
    var far = raw
    far.put16(4, 508)
    expectError(.corruptFileSystem) { try NTFSFixup.apply(&far, magic: "FILE", volumeOffset: 0) }
    // 4 KiB records: 9 entries.
    let big = NTFSBuild.record(size: 4096, attributes: [data])
    #expect(try NTFSRecord.parse(big, number: 64, clusterCount: 1000, volumeOffset: 0)?.attributes.count == 1)
  }

  @Test func recordChecks() throws {
    let si = NTFSBuild.resident(0x10, [UInt8](repeating: 0, count: 48))
    let fn = NTFSBuild.resident(0x30, NTFSBuild.fileName("a"))
    // Never used: no magic.
    #expect(
      try NTFSRecord.parse([UInt8](repeating: 0, count: 1024), number: 9, clusterCount: 10, volumeOffset: 0) == nil)
    // The record number at 44 must match.
    expectError(.corruptFileSystem) {
      _ = try NTFSRecord.parse(NTFSBuild.record(attributes: [si]), number: 65, clusterCount: 10, volumeOffset: 0)
    }
    // Types must not decrease.
    expectError(.corruptFileSystem) {
      _ = try NTFSRecord.parse(NTFSBuild.record(attributes: [fn, si]), number: 64, clusterCount: 10, volumeOffset: 0)
    }
    // An attribute longer than the bytes in use.
    var long = si
    long.put32(4, 4000)
    expectError(.corruptFileSystem) {
      _ = try NTFSRecord.parse(NTFSBuild.record(attributes: [long]), number: 64, clusterCount: 10, volumeOffset: 0)
    }
    // A resident value past its attribute.
    var value = si
    value.put32(16, 1000)
    expectError(.corruptFileSystem) {
      _ = try NTFSRecord.parse(NTFSBuild.record(attributes: [value]), number: 64, clusterCount: 10, volumeOffset: 0)
    }
    // BAAD.
    var baad = NTFSBuild.record(attributes: [si])
    for (i, c) in "BAAD".utf8.enumerated() { baad[i] = c }
    expectError(.corruptFileSystem) { _ = try NTFSRecord.parse(baad, number: 64, clusterCount: 10, volumeOffset: 0) }
    // A named stream and a file name parse.
    let ads = NTFSBuild.resident(0x80, [1, 2, 3], name: Array("s".utf16))
    let r = try #require(
      try NTFSRecord.parse(NTFSBuild.record(attributes: [si, fn, ads]), number: 64, clusterCount: 10, volumeOffset: 0))
    let f = try NTFSFile(number: 64, sequence: r.sequence, flags: r.flags, attributes: r.attributes)
    #expect(f.names.first?.name == Array("a".utf16))
    #expect(f.streamNames == [Array("s".utf16)])
    #expect(f.data[Array("s".utf16)]?.resident == [1, 2, 3])
  }

  // MARK: Runlists

  func decode(_ pairs: [UInt8], highest: Int64, clusters: UInt64 = 1 << 20) throws -> [NTFSRun] {
    let a = NTFSBuild.nonResident(0x80, pairs: pairs, highest: highest, size: UInt64(highest + 1) * 4096)
    return try NTFSRecord.parseAttribute(NTFSBytes(a), record: 64, clusterCount: clusters).runs
  }

  @Test func runlistsWithHolesAndSignedDeltas() throws {
    // 3 clusters at 0x2200; a hole of 13; 3 at +3 (0x2203); 2 at -2 (0x2201); 1 at +0x869.
    let runs = try decode(
      [0x21, 0x03, 0x00, 0x22, 0x01, 0x0D, 0x11, 0x03, 0x03, 0x11, 0x02, 0xFE, 0x21, 0x01, 0x69, 0x08], highest: 21)
    #expect(
      runs == [
        NTFSRun(vcn: 0, length: 3, lcn: 0x2200), NTFSRun(vcn: 3, length: 13, lcn: nil),
        NTFSRun(vcn: 16, length: 3, lcn: 0x2203), NTFSRun(vcn: 19, length: 2, lcn: 0x2201),
        NTFSRun(vcn: 21, length: 1, lcn: 0x2201 + 0x869),
      ])
    // A hole of 2560 clusters written as two length bytes.
    #expect(try decode([0x02, 0x00, 0x0A], highest: 2559) == [NTFSRun(vcn: 0, length: 2560, lcn: nil)])
  }

  @Test func runlistRejectsHostileRuns() {
    // Length field of 9 bytes, and of 0 bytes.
    expectError(.corruptFileSystem) { _ = try decode([0x09, 1, 1, 1, 1, 1, 1, 1, 1, 1], highest: 0) }
    expectError(.corruptFileSystem) { _ = try decode([0x10, 0x05], highest: 0) }
    // A zero-length run (CVE-2022-40284).
    expectError(.corruptFileSystem) { _ = try decode([0x11, 0x00, 0x05], highest: 0) }
    // A delta that takes the LCN below 0.
    expectError(.corruptFileSystem) { _ = try decode([0x11, 0x01, 0x05, 0x11, 0x01, 0xF0], highest: 1) }
    // A run past the volume's clusters.
    expectError(.corruptFileSystem) { _ = try decode([0x21, 0x10, 0xF8, 0x00], highest: 15, clusters: 0x100) }
    // highest_vcn that disagrees with the runs.
    expectError(.corruptFileSystem) { _ = try decode([0x11, 0x02, 0x05], highest: 5) }
    // A run whose bytes leave the attribute: pairs right at the end, claiming 8 offset bytes.
    var a = NTFSBuild.nonResident(0x80, pairs: [], highest: 0, size: 4096)
    a[a.count - 1] = 0x81
    expectError(.corruptFileSystem) {
      _ = try NTFSRecord.parseAttribute(NTFSBytes(a), record: 64, clusterCount: 1 << 20)
    }
    // VCNs that overflow.
    expectError(.corruptFileSystem) {
      _ = try decode([0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], highest: 0)
    }
  }

  @Test func extentsMergeByVCNAndRejectOverlaps() throws {
    var first = NTFSBuild.nonResident(0x80, pairs: [0x11, 0x04, 0x10], highest: 3, size: 8 * 4096)
    first.put64(40, 8 * 4096)  // allocated: both extents
    let second = NTFSBuild.nonResident(0x80, pairs: [0x11, 0x04, 0x40], lowest: 4, highest: 7, size: 0)
    let a = try NTFSRecord.parseAttribute(NTFSBytes(first), record: 64, clusterCount: 1000)
    let b = try NTFSRecord.parseAttribute(NTFSBytes(second), record: 70, clusterCount: 1000)
    let s = try NTFSStream.merge([b, a])
    #expect(s.runs == [NTFSRun(vcn: 0, length: 4, lcn: 0x10), NTFSRun(vcn: 4, length: 4, lcn: 0x40)])
    #expect(s.dataSize == 8 * 4096)
    #expect(s.runIndex(5) == 1 && s.runIndex(8) == nil)
    let overlap = NTFSBuild.nonResident(0x80, pairs: [0x11, 0x04, 0x40], lowest: 2, highest: 5, size: 0)
    let c = try NTFSRecord.parseAttribute(NTFSBytes(overlap), record: 71, clusterCount: 1000)
    expectError(.corruptFileSystem) { _ = try NTFSStream.merge([a, c]) }
    expectError(.corruptFileSystem) { _ = try NTFSStream.merge([b]) }
  }

  // MARK: Index nodes

  @Test func indexNodesAndTheirBounds() throws {
    func entry(_ name: String, ref: UInt64, subnode: UInt64? = nil, last: Bool = false) -> [UInt8] {
      let key = last ? [] : NTFSBuild.fileName(name)
      var length = (16 + key.count + 7) & ~7
      if subnode != nil { length += 8 }
      var e = [UInt8](repeating: 0, count: length)
      e.put64(0, ref)
      e.put16(8, UInt16(length))
      e.put16(10, UInt16(key.count))
      e.put16(12, (subnode != nil ? 1 : 0) | (last ? 2 : 0))
      for (i, x) in key.enumerated() { e[16 + i] = x }
      if let s = subnode { e.put64(length - 8, s) }
      return e
    }
    let entries = entry("a", ref: 64) + entry("b", ref: 65, subnode: 3) + entry("", ref: 0, subnode: 7, last: true)
    var node = [UInt8](repeating: 0, count: 16) + entries
    node.put32(0, 16)
    node.put32(4, UInt32(node.count))
    node.put32(8, UInt32(node.count))
    node[12] = 1
    let n = try NTFSIndexNode.parse(NTFSBytes(node), header: 0, limit: node.count, what: "t")
    #expect(n.entries.map { $0.reference } == [64, 65, 0])
    #expect(n.entries.map { $0.subnode } == [nil, 3, 7])
    #expect(n.entries[1].fileName?.name == Array("b".utf16))
    // index_length past the node; an entry whose length runs past it; no last entry.
    var bad = node
    bad.put32(4, UInt32(node.count + 8))
    expectError(.corruptFileSystem) {
      _ = try NTFSIndexNode.parse(NTFSBytes(bad), header: 0, limit: node.count, what: "t")
    }
    var e2 = node
    e2.put16(16 + 8, 4000)
    expectError(.corruptFileSystem) {
      _ = try NTFSIndexNode.parse(NTFSBytes(e2), header: 0, limit: node.count, what: "t")
    }
    var noLast = node
    noLast.put16(node.count - 24 + 12, 1)
    expectError(.corruptFileSystem) {
      _ = try NTFSIndexNode.parse(NTFSBytes(noLast), header: 0, limit: node.count, what: "t")
    }
    // A name longer than its key.
    var name = node
    name[16 + 16 + 64] = 200
    expectError(.corruptFileSystem) {
      _ = try NTFSIndexNode.parse(NTFSBytes(name), header: 0, limit: node.count, what: "t")
    }
  }

  /// The listing decodes names in place (GuestBytes.writeUTF8); it must give exactly what
  /// ntfsUTF8 gives: ASCII, two- and three-byte scalars, surrogate pairs, and each unpaired
  /// surrogate (high at the end, high before a non-low, a lone low) as U+FFFD.
  @Test func namesDecodedInPlaceAsNtfsUTF8() {
    let cases: [[UInt16]] = [
      Array("plain.txt".utf16), Array("Größe ünïcödé".utf16), Array("日本語のファイル".utf16),
      Array("emoji 😀 and 𝄞".utf16), [0x61, 0xD83D], [0xD83D, 0x62, 0x63], [0xDE00, 0x61], [0xDBFF, 0xDFFF],
      [0xD800, 0xD800, 0xDC00], [0x7F, 0x80, 0x7FF, 0x800, 0xFFFF],
    ]
    for units in cases {
      var raw: [UInt8] = [0xAA, 0xBB]  // the name starts at an offset, as in a key
      for u in units { raw += [UInt8(u & 0xFF), UInt8(u >> 8)] }
      // Written after a byte already there (not over it), into room for 3 bytes a unit.
      var out = [UInt8](repeating: 0, count: 1 + 3 * units.count)
      out[0] = 0x2F
      let n = out.withUnsafeMutableBufferPointer {
        NTFSBytes(raw).writeUTF8(fromUTF16At: 2, units: units.count, to: $0.baseAddress! + 1)
      }
      #expect(Array(out[0..<(1 + n)]) == [0x2F] + ntfsUTF8(units), "\(units)")
    }
  }

  // MARK: LZNT1

  /// A compressed chunk from its data bytes.
  func chunk(_ data: [UInt8]) -> [UInt8] {
    let h = UInt16(0xB000) | UInt16(data.count - 1)
    return [UInt8(h & 0xFF), UInt8(h >> 8)] + data
  }

  @Test func lznt1KnownVectors() throws {
    // "abc" then a reference of displacement 3, length 9 (4/12 split at position 3).
    let token: UInt16 = (2 << 12) | (9 - 3)
    let c1 = chunk([0x08, 0x61, 0x62, 0x63, UInt8(token & 0xFF), UInt8(token >> 8)])
    let out = try NTFSLZNT1.decompress(c1, outputSize: 16)
    #expect(out == Array("abcabcabcabc".utf8) + [0, 0, 0, 0])
    // At position 20 the split is 5/11: displacement 20, length 5.
    let lit = Array("0123456789ABCDEFGHIJ".utf8)
    let t2: UInt16 = (19 << 11) | (5 - 3)
    var data: [UInt8] = [0x00]
    data += lit[0..<8]
    data.append(0x00)
    data += lit[8..<16]
    data.append(0x10)
    data += lit[16..<20]
    data += [UInt8(t2 & 0xFF), UInt8(t2 >> 8)]
    let out2 = try NTFSLZNT1.decompress(chunk(data), outputSize: 25)
    #expect(out2 == lit + Array("01234".utf8))
    // A stored chunk, then a compressed one: the second chunk's output starts at 4096.
    let stored = [UInt8(0xFF), 0x3F] + [UInt8](repeating: 0x5A, count: 4096)
    let two = try NTFSLZNT1.decompress(stored + c1, outputSize: 8192)
    #expect(two[0..<4096].allSatisfy { $0 == 0x5A })
    #expect(Array(two[4096..<4108]) == Array("abcabcabcabc".utf8))
    #expect(two[4108...].allSatisfy { $0 == 0 })
    // A header of 0 ends the stream: the rest is zeros.
    #expect(try NTFSLZNT1.decompress([0, 0] + c1, outputSize: 64) == [UInt8](repeating: 0, count: 64))
  }

  @Test func lznt1RejectsHostileChunks() {
    // A reference at position 0.
    expectError(.corruptFileSystem) { _ = try NTFSLZNT1.decompress(chunk([0x01, 0x00, 0x10]), outputSize: 4096) }
    // Displacement 4 at position 3.
    let far: UInt16 = (3 << 12) | 0
    expectError(.corruptFileSystem) {
      _ = try NTFSLZNT1.decompress(chunk([0x08, 1, 2, 3, UInt8(far & 0xFF), UInt8(far >> 8)]), outputSize: 4096)
    }
    // A chunk longer than the input.
    expectError(.corruptFileSystem) { _ = try NTFSLZNT1.decompress([0x10, 0xB0, 0x00, 0x41], outputSize: 4096) }
    // A reference past the chunk's 4096 bytes: at position 3 a length of 4098.
    let long: UInt16 = (2 << 12) | 0xFFF
    expectError(.corruptFileSystem) {
      _ = try NTFSLZNT1.decompress(chunk([0x08, 1, 2, 3, UInt8(long & 0xFF), UInt8(long >> 8)]), outputSize: 8192)
    }
    // A reference cut off at the end of the chunk.
    expectError(.corruptFileSystem) { _ = try NTFSLZNT1.decompress(chunk([0x02, 0x41, 0x01]), outputSize: 4096) }
  }

  /// Random and mutated inputs: every parser answers or throws a VMDKError, never traps.
  @Test func hostileBytesNeverTrap() {
    var x: UInt64 = 0x9E37_79B9_7F4A_7C15
    func next() -> UInt64 {
      x ^= x << 13
      x ^= x >> 7
      x ^= x << 17
      return x
    }
    var decoded = 0
    for round in 0..<3000 {
      let count = Int(next() % 600) + 2
      var input = (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) }
      input[1] |= 0x80  // mostly compressed chunks
      if let out = try? NTFSLZNT1.decompress(input, outputSize: 4096 * (round % 4 + 1)) {
        #expect(out.count == 4096 * (round % 4 + 1))
        decoded += 1
      }
    }
    let si = NTFSBuild.resident(0x10, [UInt8](repeating: 0, count: 48))
    let fn = NTFSBuild.resident(0x30, NTFSBuild.fileName("mutant"))
    let data = NTFSBuild.nonResident(0x80, pairs: [0x21, 0x03, 0x00, 0x22, 0x01, 0x0D], highest: 15, size: 16 * 4096)
    let record = NTFSBuild.record(attributes: [si, fn, data])
    var parsed = 0
    for _ in 0..<3000 {
      var r = record
      for _ in 0..<Int(next() % 4 + 1) {
        let o = Int(next() % UInt64(r.count))
        r[o] = UInt8(truncatingIfNeeded: next())
      }
      do {
        if let rec = try NTFSRecord.parse(r, number: 64, clusterCount: 1 << 16, volumeOffset: 0) {
          _ = try NTFSFile(number: 64, sequence: rec.sequence, flags: rec.flags, attributes: rec.attributes)
          parsed += 1
        }
      } catch {
        #expect(error is VMDKError)
      }
    }
    #expect(parsed > 0)
    print("hostile bytes: \(decoded) of 3000 random LZNT1 inputs decoded, \(parsed) of 3000 mutated records parsed")
  }

  // MARK: Times and reparse data

  @Test func filetimeConvertsExactly() {
    #expect(ntfsTime(116_444_736_000_000_000) == FileTime(seconds: 0, nanoseconds: 0))
    #expect(ntfsTime(116_444_736_000_000_001) == FileTime(seconds: 0, nanoseconds: 100))
    #expect(ntfsTime(133_000_000_123_456_789) == FileTime(seconds: 1_655_526_412, nanoseconds: 345_678_900))
    #expect(ntfsTime(0) == FileTime(seconds: -11_644_473_600, nanoseconds: 0))
    // Negative as a signed value (ntfs-3g's type): floor, no trap.
    #expect(ntfsTime(UInt64.max) == FileTime(seconds: -11_644_473_601, nanoseconds: 999_999_900))
  }

  @Test func symlinkAndJunctionTargets() throws {
    func reparse(tag: UInt32, buffer: Int, print: String, substitute: String, flags: UInt32 = 0) -> [UInt8] {
      let s = Array(substitute.utf16)
      let p = Array(print.utf16)
      var v = [UInt8](repeating: 0, count: buffer + 2 * (s.count + p.count))
      v.put32(0, tag)
      v.put16(4, UInt16(v.count - 8))
      v.put16(8, 0)
      v.put16(10, UInt16(2 * s.count))
      v.put16(12, UInt16(2 * s.count))
      v.put16(14, UInt16(2 * p.count))
      if buffer == 20 { v.put32(16, flags) }
      for (i, u) in (s + p).enumerated() { v.put16(buffer + 2 * i, u) }
      return v
    }
    let rel = reparse(tag: NTFSReparse.symlink, buffer: 20, print: "..\\a\\b", substitute: "..\\a\\b", flags: 1)
    #expect(try NTFSReparse.target(rel, record: 1) == Array("../a/b".utf8))
    let junction = reparse(tag: NTFSReparse.mountPoint, buffer: 16, print: "", substitute: "\\??\\C:\\Users")
    #expect(try NTFSReparse.target(junction, record: 1) == Array("C:/Users".utf8))
    var bad = rel
    bad.put16(14, 400)
    expectError(.corruptFileSystem) { _ = try NTFSReparse.target(bad, record: 1) }
    var dedup = rel
    dedup.put32(0, NTFSReparse.dedup)
    expectError(.notSupported) { _ = try NTFSReparse.target(dedup, record: 1) }
    #expect(NTFSReparse.describe(0x9000_601A) == "cloud placeholder")
  }
  /// $LogFile's restart pages: clean when emptied (0xFF), or when the newest restart area
  /// has no client in use or the clean flag; anything else is not clean.
  @Test func logFileRestartAreaSaysClean() {
    func restart(inUse: UInt16, flags: UInt16, magic: String = "RSTR", page: UInt32 = 4096) -> [UInt8] {
      var r = [UInt8](repeating: 0, count: 8192)
      for copy in [0, Int(page)] where copy + 0x50 <= r.count {
        for (i, c) in magic.utf8.enumerated() { r[copy + i] = c }
        r.put32(copy + 16, page)
        r.put16(copy + 24, 0x40)
        r.put16(copy + 0x40 + 12, inUse)
        r.put16(copy + 0x40 + 14, flags)
      }
      return r
    }
    #expect(NTFSLogFile.isClean([UInt8](repeating: 0xFF, count: 8192)))
    #expect(NTFSLogFile.isClean(restart(inUse: 0xFFFF, flags: 0)))
    #expect(NTFSLogFile.isClean(restart(inUse: 0, flags: 2)))
    #expect(!NTFSLogFile.isClean(restart(inUse: 0, flags: 0)))
    #expect(!NTFSLogFile.isClean(restart(inUse: 0xFFFF, flags: 0, magic: "CHKD")))
    #expect(!NTFSLogFile.isClean(restart(inUse: 0xFFFF, flags: 0, page: 1000)))
    #expect(!NTFSLogFile.isClean(restart(inUse: 0xFFFF, flags: 0, page: 1 << 20)))
    // One page clean, the other not: not clean.
    var mixed = restart(inUse: 0xFFFF, flags: 0)
    mixed.put16(4096 + 0x40 + 12, 0)
    #expect(!NTFSLogFile.isClean(mixed))
    // A restart area offset past the bytes, no restart page at all, nothing read.
    var far = restart(inUse: 0xFFFF, flags: 0)
    far.put16(24, 0xFFF0)
    #expect(!NTFSLogFile.isClean(far))
    #expect(!NTFSLogFile.isClean([UInt8](repeating: 0, count: 8192)))
    #expect(!NTFSLogFile.isClean([]))
  }
}
