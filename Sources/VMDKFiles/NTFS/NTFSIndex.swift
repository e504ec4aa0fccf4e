// $FILE_NAME and $STANDARD_INFORMATION values, and directory indexes ($I30): the index
// header and entries of $INDEX_ROOT and of INDX blocks. Pure parsers over bytes.
import VMDKBlock

/// A $FILE_NAME value (in an MFT record, or as the key of a directory index entry).
public struct NTFSFileName: Sendable, Equatable {
  public static let posix: UInt8 = 0
  public static let win32: UInt8 = 1
  public static let dos: UInt8 = 2
  public static let win32AndDOS: UInt8 = 3

  public var parent: UInt64
  public var fileAttributes: UInt32
  /// The reparse tag when the reparse-point attribute bit is set.
  public var reparseTag: UInt32
  public var namespace: UInt8
  public var name: [UInt16]

  /// Parses a $FILE_NAME value: 66 bytes and the name.
  static func parse(_ b: NTFSBytes, at o: Int, limit: Int) throws -> NTFSFileName {
    let units = try checkedUnits(b, at: o, limit: limit)
    return NTFSFileName(
      parent: b.u64(o), fileAttributes: b.u32(o + 56), reparseTag: b.u32(o + 60), namespace: b.u8(o + 65),
      name: b.utf16(o + 66, units: units))
  }

  /// Checks that a $FILE_NAME value at `o` and its name fit before `limit` and in the bytes;
  /// returns the name's length in UTF-16 units (at least 1). What a reader in place checks
  /// before it reads the fields at their offsets.
  static func checkedUnits(_ b: NTFSBytes, at o: Int, limit: Int) throws -> Int {
    guard b.has(o, 66), o + 66 <= limit else { throw NTFSError.corrupt("a file name is truncated", offset: b.at(o)) }
    let units = Int(b.u8(o + 64))
    guard units > 0, o + 66 + 2 * units <= limit, b.has(o + 66, 2 * units) else {
      throw NTFSError.corrupt("a file name of \(units) characters does not fit", offset: b.at(o + 64))
    }
    return units
  }
}

/// A $FILE_NAME key read in place in an index node's bytes (checked by `checkedUnits`).
struct NTFSFileNameKey {
  let bytes: NTFSBytes
  /// Where the $FILE_NAME value starts in `bytes`.
  let at: Int
  /// The name's length in UTF-16 units.
  let units: Int

  var fileAttributes: UInt32 { bytes.u32(at + 56) }
  var reparseTag: UInt32 { bytes.u32(at + 60) }
  var namespace: UInt8 { bytes.u8(at + 65) }
  /// The name is exactly "." (the root lists itself under that name).
  var isDot: Bool { units == 1 && bytes.u16(at + 66) == 0x2E }
  /// Writes the name as UTF-8 (as `ntfsUTF8` converts it) to `dst`, which has room for `NTFSFileNameKey.maxUTF8` bytes;
  /// returns the count written.
  func writeName(to dst: UnsafeMutablePointer<UInt8>) -> Int {
    bytes.writeUTF8(fromUTF16At: at + 66, units: units, to: dst)
  }
  /// The longest name in UTF-8: 255 units (the length is one byte), at most 3 bytes each.
  static let maxUTF8 = 3 * 255
}

/// The $STANDARD_INFORMATION fields the reader uses.
public struct NTFSStandardInformation: Sendable, Equatable {
  public var created: UInt64
  public var modified: UInt64
  public var mftChanged: UInt64
  public var accessed: UInt64
  public var fileAttributes: UInt32

  static func parse(_ value: [UInt8], record: UInt64) throws -> NTFSStandardInformation {
    let b = NTFSBytes(value)
    guard b.count >= 48 else {
      throw NTFSError.corrupt("MFT record \(record): $STANDARD_INFORMATION of \(b.count) bytes (at least 48)")
    }
    return NTFSStandardInformation(
      created: b.u64(0), modified: b.u64(8), mftChanged: b.u64(16), accessed: b.u64(24), fileAttributes: b.u32(32))
  }
}

/// One entry of a directory index.
struct NTFSIndexEntry: Sendable {
  var reference: UInt64
  var fileName: NTFSFileName?
  /// The VCN of the child block holding the smaller keys.
  var subnode: UInt64?
}

/// An index node: its entries, in order (the last one has no key).
struct NTFSIndexNode: Sendable {
  var entries: [NTFSIndexEntry]
  var hasChildren: Bool

  /// Parses an INDEX_HEADER at `h` and its entries; `limit` is where the node's bytes end.
  static func parse(
    _ b: NTFSBytes, header h: Int, limit: Int, what: @autoclosure () -> String
  ) throws -> NTFSIndexNode {
    var entries: [NTFSIndexEntry] = []
    let hasChildren = try forEachEntry(b, header: h, limit: limit, what: what()) { reference, key, subnode in
      let fileName = try key.map { try NTFSFileName.parse(b, at: $0.at, limit: $0.at + 66 + 2 * $0.units) }
      entries.append(NTFSIndexEntry(reference: reference, fileName: fileName, subnode: subnode))
    }
    return NTFSIndexNode(entries: entries, hasChildren: hasChildren)
  }

  /// Checks the INDEX_HEADER at `h` and calls `body` with each entry in order, read in place:
  /// its file reference, its key (nil for the last entry) and its sub-node's VCN. Returns
  /// whether the node has children. `limit` is where the node's bytes end.
  @discardableResult
  static func forEachEntry(
    _ b: NTFSBytes, header h: Int, limit: Int, what: @autoclosure () -> String,
    _ body: (_ reference: UInt64, _ key: NTFSFileNameKey?, _ subnode: UInt64?) throws -> Void
  ) throws -> Bool {
    guard b.has(h, 16), h + 16 <= limit else {
      throw NTFSError.corrupt("\(what()): index header truncated", offset: b.at(h))
    }
    let entriesOffset = Int(b.u32(h))
    let indexLength = Int(b.u32(h + 4))
    guard entriesOffset >= 16, entriesOffset <= indexLength, indexLength <= limit - h else {
      throw NTFSError.corrupt(
        "\(what()): entries at \(entriesOffset), \(indexLength) bytes used, \(limit - h) available", offset: b.at(h))
    }
    let hasChildren = b.u8(h + 12) & 1 != 0
    var p = h + entriesOffset
    let end = h + indexLength
    while true {
      guard p + 16 <= end else {
        throw NTFSError.corrupt("\(what()): the index entries have no last entry", offset: b.at(p))
      }
      let length = Int(b.u16(p + 8))
      let keyLength = Int(b.u16(p + 10))
      let flags = b.u16(p + 12)
      guard length >= 16, length % 8 == 0, length <= end - p, 16 + keyLength <= length else {
        throw NTFSError.corrupt(
          "\(what()): an index entry of \(length) bytes (key \(keyLength)) does not fit", offset: b.at(p))
      }
      var subnode: UInt64?
      if flags & 1 != 0 {
        guard length >= 24 else {
          throw NTFSError.corrupt("\(what()): an entry too short for its sub-node", offset: b.at(p))
        }
        let vcn = b.i64(p + length - 8)
        guard vcn >= 0 else {
          throw NTFSError.corrupt("\(what()): a negative sub-node VCN", offset: b.at(p + length - 8))
        }
        subnode = UInt64(vcn)
      }
      let last = flags & 2 != 0
      var key: NTFSFileNameKey?
      if !last {
        guard keyLength >= 66 else {
          throw NTFSError.corrupt("\(what()): a key of \(keyLength) bytes", offset: b.at(p + 10))
        }
        let units = try NTFSFileName.checkedUnits(b, at: p + 16, limit: p + 16 + keyLength)
        key = NTFSFileNameKey(bytes: b, at: p + 16, units: units)
      }
      try body(b.u64(p), key, subnode)
      if last { break }
      p += length
    }
    return hasChildren
  }
}
