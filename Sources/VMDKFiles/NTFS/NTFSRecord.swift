// MFT records (FILE) and index blocks (INDX): the update-sequence fixups, the record header,
// attribute records (resident and non-resident) and runlists. Pure parsers over bytes.
import VMDKBlock

/// One run of a non-resident attribute: `length` clusters from `vcn`, at `lcn` or a hole.
public struct NTFSRun: Sendable, Equatable {
  public var vcn: UInt64
  public var length: UInt64
  /// nil for a hole (sparse or the tail of a compression unit).
  public var lcn: UInt64?
  public init(vcn: UInt64, length: UInt64, lcn: UInt64?) {
    self.vcn = vcn
    self.length = length
    self.lcn = lcn
  }
}

enum NTFSFixup {
  /// The fixup stride: every 512 bytes, whatever the sector size.
  static let stride = 512

  /// Checks and applies the update sequence array of a FILE or INDX structure in place.
  /// A sector whose last u16 differs from the update sequence number is a torn write.
  static func apply(_ bytes: inout [UInt8], magic: @autoclosure () -> String, volumeOffset: UInt64) throws {
    let size = bytes.count
    guard size >= stride, size % stride == 0 else {
      throw NTFSError.corrupt("\(magic()) structure of \(size) bytes is not a multiple of 512", offset: volumeOffset)
    }
    func u16(_ o: Int) -> UInt16 { UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
    let usaOffset = Int(u16(4))
    let usaCount = Int(u16(6))
    guard usaOffset % 2 == 0, usaOffset >= 8 else {
      throw NTFSError.corrupt(
        "\(magic()): update sequence offset \(usaOffset) is invalid", offset: volumeOffset &+ 4)
    }
    guard usaCount == 1 + size / stride else {
      throw NTFSError.corrupt(
        "\(magic()): \(usaCount) update sequence entries for \(size) bytes (expected \(1 + size / stride))",
        offset: volumeOffset &+ 6)
    }
    guard usaOffset + 2 * usaCount <= stride - 2 else {
      throw NTFSError.corrupt(
        "\(magic()): the update sequence array leaves the first sector", offset: volumeOffset &+ 4)
    }
    // Offsets are in range: size >= 512 * (usaCount - 1) and the array lies in the first sector.
    let usn = u16(usaOffset)
    for i in 1..<usaCount {
      let end = i * stride - 2
      guard u16(end) == usn else {
        throw NTFSError.corrupt(
          "\(magic()): sector \(i - 1) does not end with the update sequence number 0x\(String(usn, radix: 16)) (a torn write)",
          offset: volumeOffset &+ UInt64(end))
      }
      bytes[end] = bytes[usaOffset + 2 * i]
      bytes[end + 1] = bytes[usaOffset + 2 * i + 1]
    }
  }
}

/// One attribute record of an MFT record.
public struct NTFSAttribute: Sendable {
  public static let standardInformation: UInt32 = 0x10
  public static let attributeList: UInt32 = 0x20
  public static let fileName: UInt32 = 0x30
  public static let volumeName: UInt32 = 0x60
  public static let volumeInformation: UInt32 = 0x70
  public static let data: UInt32 = 0x80
  public static let indexRoot: UInt32 = 0x90
  public static let indexAllocation: UInt32 = 0xA0
  public static let bitmap: UInt32 = 0xB0
  public static let reparsePoint: UInt32 = 0xC0
  public static let end: UInt32 = 0xFFFF_FFFF

  public static let flagCompressed: UInt16 = 0x0001
  public static let flagEncrypted: UInt16 = 0x4000
  public static let flagSparse: UInt16 = 0x8000

  public var type: UInt32
  public var name: [UInt16]
  public var flags: UInt16
  public var instance: UInt16
  /// The value of a resident attribute.
  public var value: [UInt8]?
  // Non-resident fields (zero for resident attributes).
  public var lowestVCN: UInt64 = 0
  public var highestVCN: Int64 = 0
  public var compressionUnit: UInt8 = 0
  public var allocatedSize: UInt64 = 0
  public var dataSize: UInt64 = 0
  public var initializedSize: UInt64 = 0
  public var runs: [NTFSRun] = []
  /// The record that holds it, and its offset in the volume (for errors).
  public var record: UInt64 = 0
  public var volumeOffset: UInt64 = 0

  public var isResident: Bool { value != nil }
}

/// An MFT record with its fixups applied and its attributes parsed.
public struct NTFSRecord: Sendable {
  public static let flagInUse: UInt16 = 0x1
  public static let flagDirectory: UInt16 = 0x2

  public var number: UInt64
  public var sequence: UInt16
  public var linkCount: UInt16
  public var flags: UInt16
  /// 0 in a base record, else the reference of the base.
  public var baseReference: UInt64
  public var attributes: [NTFSAttribute]

  public var inUse: Bool { flags & Self.flagInUse != 0 }

  /// A record's header, checked: where its attributes start and how many bytes are in use.
  struct Header {
    var sequence: UInt16
    var linkCount: UInt16
    var flags: UInt16
    var baseReference: UInt64
    var attributesOffset: Int
    var bytesInUse: Int
  }

  /// Applies the fixups of `bytes` (one whole record) in place and checks its header as
  /// record `number`. Nil for a record that was never used (all zeros or no magic).
  static func header(_ bytes: inout [UInt8], number: UInt64, volumeOffset: UInt64) throws -> Header? {
    guard bytes.count >= 512 else { throw NTFSError.corrupt("MFT record \(number) is too short", offset: volumeOffset) }
    if bytes[0] == 0x42, bytes[1] == 0x41, bytes[2] == 0x41, bytes[3] == 0x44 {  // "BAAD"
      throw NTFSError.corrupt("MFT record \(number) is marked BAAD (a torn write)", offset: volumeOffset)
    }
    guard bytes[0] == 0x46, bytes[1] == 0x49, bytes[2] == 0x4C, bytes[3] == 0x45 else { return nil }  // "FILE"
    try NTFSFixup.apply(&bytes, magic: "MFT record \(number)", volumeOffset: volumeOffset)
    let b = NTFSBytes(bytes, volumeOffset: volumeOffset)
    let size = bytes.count
    let attrsOffset = Int(b.u16(20))
    let inUse = Int(b.u32(24))
    let allocated = Int(b.u32(28))
    guard allocated == size else {
      throw NTFSError.corrupt(
        "MFT record \(number): allocated \(allocated) bytes, record size \(size)", offset: b.at(28))
    }
    guard inUse <= size, inUse % 8 == 0 else {
      throw NTFSError.corrupt("MFT record \(number): \(inUse) bytes in use of \(size)", offset: b.at(24))
    }
    guard attrsOffset % 8 == 0, attrsOffset >= 42, attrsOffset < inUse else {
      throw NTFSError.corrupt("MFT record \(number): attributes at \(attrsOffset), \(inUse) in use", offset: b.at(20))
    }
    // NTFS 3.1 stores the record number at 44 (when the header is that long).
    if attrsOffset >= 48, b.u16(4) >= 48 {
      let stored = UInt64(b.u32(44))
      guard stored == number & 0xFFFF_FFFF else {
        throw NTFSError.corrupt("MFT record \(number) says it is record \(stored)", offset: b.at(44))
      }
    }
    return Header(
      sequence: b.u16(16), linkCount: b.u16(18), flags: b.u16(22), baseReference: b.u64(32),
      attributesOffset: attrsOffset, bytesInUse: inUse)
  }

  /// Calls `body` with the type, offset and length of each attribute record of a record whose
  /// header `h` was checked, in order, up to the end marker. Each record lies within the bytes
  /// in use and the types ascend.
  static func forEachAttribute(
    _ b: NTFSBytes, _ h: Header, number: UInt64, _ body: (_ type: UInt32, _ offset: Int, _ length: Int) throws -> Void
  ) throws {
    var p = h.attributesOffset
    var lastType: UInt32 = 0
    let inUse = h.bytesInUse
    while true {
      guard b.has(p, 4), p + 4 <= inUse else {
        throw NTFSError.corrupt("MFT record \(number): attributes run past the bytes in use", offset: b.at(p))
      }
      let type = b.u32(p)
      if type == NTFSAttribute.end { return }
      guard type >= lastType else {
        throw NTFSError.corrupt("MFT record \(number): attribute types are not in order", offset: b.at(p))
      }
      lastType = type
      let length = Int(b.u32(p + 4))
      guard length >= 24, length % 8 == 0, length <= inUse - p else {
        throw NTFSError.corrupt(
          "MFT record \(number): attribute 0x\(String(type, radix: 16)) of \(length) bytes does not fit",
          offset: b.at(p + 4))
      }
      try body(type, p, length)
      p += length
    }
  }

  /// Parses the attribute record at `offset` of `length` bytes (from forEachAttribute).
  static func attribute(_ b: NTFSBytes, at offset: Int, length: Int, record: UInt64, clusterCount: UInt64) throws
    -> NTFSAttribute
  {
    var a = try parseAttribute(
      NTFSBytes(b.slice(offset, length), volumeOffset: b.at(offset)), record: record, clusterCount: clusterCount)
    a.record = record
    return a
  }

  /// Parses `raw` (one whole record, fixups not yet applied) as record `number`.
  /// Returns nil for a record that was never used (all zeros or no magic).
  public static func parse(
    _ raw: [UInt8], number: UInt64, clusterCount: UInt64, volumeOffset: UInt64
  ) throws -> NTFSRecord? {
    var bytes = raw
    guard let h = try header(&bytes, number: number, volumeOffset: volumeOffset) else { return nil }
    let b = NTFSBytes(bytes, volumeOffset: volumeOffset)
    var record = NTFSRecord(
      number: number, sequence: h.sequence, linkCount: h.linkCount, flags: h.flags, baseReference: h.baseReference,
      attributes: [])
    try forEachAttribute(b, h, number: number) { _, p, length in
      record.attributes.append(try attribute(b, at: p, length: length, record: number, clusterCount: clusterCount))
    }
    return record
  }

  /// One attribute record, `b` holding exactly its `length` bytes.
  static func parseAttribute(_ b: NTFSBytes, record: UInt64, clusterCount: UInt64) throws -> NTFSAttribute {
    let length = b.count
    let type = b.u32(0)
    // Built only for an error: a listing parses thousands of attributes.
    func what() -> String { "MFT record \(record): attribute 0x\(String(type, radix: 16))" }
    let nonResident = b.u8(8)
    let nameLength = Int(b.u8(9))
    let nameOffset = Int(b.u16(10))
    guard nameLength == 0 || (nameOffset >= 16 && b.has(nameOffset, 2 * nameLength)) else {
      throw NTFSError.corrupt("\(what()): its name lies outside it", offset: b.at(10))
    }
    var a = NTFSAttribute(
      type: type, name: b.utf16(nameOffset, units: nameLength), flags: b.u16(12), instance: b.u16(14), value: nil)
    a.volumeOffset = b.volumeOffset
    switch nonResident {
    case 0:
      let valueLength = Int(b.u32(16))
      let valueOffset = Int(b.u16(20))
      guard valueOffset >= 24, b.has(valueOffset, valueLength) else {
        throw NTFSError.corrupt(
          "\(what()): a resident value of \(valueLength) bytes at \(valueOffset) does not fit", offset: b.at(16))
      }
      a.value = b.slice(valueOffset, valueLength)
    case 1:
      guard length >= 64 else { throw NTFSError.corrupt("\(what()): non-resident header too short", offset: b.at(4)) }
      let lowest = b.i64(16)
      let highest = b.i64(24)
      guard lowest >= 0, highest >= lowest - 1 else {
        throw NTFSError.corrupt("\(what()): VCNs \(lowest)...\(highest) are invalid", offset: b.at(16))
      }
      a.lowestVCN = UInt64(lowest)
      a.highestVCN = highest
      let pairs = Int(b.u16(32))
      guard pairs >= 64, pairs <= length else {
        throw NTFSError.corrupt("\(what()): mapping pairs at \(pairs) lie outside it", offset: b.at(32))
      }
      a.compressionUnit = b.u8(34)
      a.allocatedSize = b.u64(40)
      a.dataSize = b.u64(48)
      a.initializedSize = b.u64(56)
      if lowest == 0 {
        guard a.dataSize <= a.allocatedSize || a.flags & (NTFSAttribute.flagCompressed | NTFSAttribute.flagSparse) != 0
        else {
          throw NTFSError.corrupt(
            "\(what()): data size \(a.dataSize) exceeds the allocated \(a.allocatedSize)", offset: b.at(48))
        }
        guard a.initializedSize <= a.dataSize else {
          throw NTFSError.corrupt(
            "\(what()): initialized size \(a.initializedSize) exceeds the data size \(a.dataSize)", offset: b.at(56))
        }
      }
      a.runs = try NTFSRunlist.decode(
        b, from: pairs, lowestVCN: a.lowestVCN, highestVCN: highest, clusterCount: clusterCount, what: what())
    default:
      throw NTFSError.corrupt("\(what()): non-resident byte is \(nonResident)", offset: b.at(8))
    }
    return a
  }
}

enum NTFSRunlist {
  /// Decodes the mapping pairs of an attribute (`b` is the attribute record) from `from`.
  /// Every run is checked: lengths 1...8 bytes and non-zero, offsets 0...8 bytes, LCNs inside
  /// the volume, VCNs without overflow and ending at `highestVCN`.
  static func decode(
    _ b: NTFSBytes, from: Int, lowestVCN: UInt64, highestVCN: Int64, clusterCount: UInt64,
    what: @autoclosure () -> String
  ) throws -> [NTFSRun] {
    var runs: [NTFSRun] = []
    var p = from
    var vcn = lowestVCN
    var lcn: Int64 = 0
    while p < b.count {
      let header = b.u8(p)
      if header == 0 { break }
      let lengthBytes = Int(header & 0xF)
      let offsetBytes = Int(header >> 4)
      guard (1...8).contains(lengthBytes), offsetBytes <= 8 else {
        throw NTFSError.corrupt("\(what()): runlist header 0x\(String(header, radix: 16)) is invalid", offset: b.at(p))
      }
      guard b.has(p + 1, lengthBytes + offsetBytes) else {
        throw NTFSError.corrupt("\(what()): a run leaves the attribute", offset: b.at(p))
      }
      var length: UInt64 = 0
      for i in 0..<lengthBytes { length |= UInt64(b.u8(p + 1 + i)) << (8 * UInt64(i)) }
      guard length > 0, length <= UInt64(Int64.max) else {
        throw NTFSError.corrupt("\(what()): a run of \(length) clusters", offset: b.at(p))
      }
      let end = vcn.addingReportingOverflow(length)
      guard !end.overflow, end.partialValue <= UInt64(Int64.max) else {
        throw NTFSError.corrupt("\(what()): run VCNs overflow", offset: b.at(p))
      }
      var runLCN: UInt64?
      if offsetBytes > 0 {
        var delta: UInt64 = 0
        for i in 0..<offsetBytes { delta |= UInt64(b.u8(p + 1 + lengthBytes + i)) << (8 * UInt64(i)) }
        // Sign-extend the top byte.
        if offsetBytes < 8, b.u8(p + lengthBytes + offsetBytes) & 0x80 != 0 {
          delta |= ~UInt64(0) << (8 * UInt64(offsetBytes))
        }
        let next = lcn.addingReportingOverflow(Int64(bitPattern: delta))
        guard !next.overflow, next.partialValue >= 0 else {
          throw NTFSError.corrupt("\(what()): a run starts at a negative or overflowing cluster", offset: b.at(p))
        }
        lcn = next.partialValue
        let l = UInt64(lcn)
        guard l < clusterCount, length <= clusterCount - l else {
          throw NTFSError.corrupt(
            "\(what()): run of \(length) clusters at \(l) lies outside the \(clusterCount) clusters", offset: b.at(p))
        }
        runLCN = l
      }
      runs.append(NTFSRun(vcn: vcn, length: length, lcn: runLCN))
      vcn = end.partialValue
      p += 1 + lengthBytes + offsetBytes
    }
    if highestVCN >= 0 || !runs.isEmpty {
      guard Int64(vcn) - 1 == highestVCN else {
        throw NTFSError.corrupt(
          "\(what()): the runlist ends at VCN \(Int64(vcn) - 1), the header says \(highestVCN)", offset: b.at(24))
      }
    }
    return runs
  }
}
