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
    guard b.has(o, 66), o + 66 <= limit else { throw NTFSError.corrupt("a file name is truncated", offset: b.at(o)) }
    let units = Int(b.u8(o + 64))
    guard units > 0, o + 66 + 2 * units <= limit, b.has(o + 66, 2 * units) else {
      throw NTFSError.corrupt("a file name of \(units) characters does not fit", offset: b.at(o + 64))
    }
    return NTFSFileName(
      parent: b.u64(o), fileAttributes: b.u32(o + 56), reparseTag: b.u32(o + 60), namespace: b.u8(o + 65),
      name: b.utf16(o + 66, units: units))
  }
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
    guard b.has(h, 16), h + 16 <= limit else {
      throw NTFSError.corrupt("\(what()): index header truncated", offset: b.at(h))
    }
    let entriesOffset = Int(b.u32(h))
    let indexLength = Int(b.u32(h + 4))
    guard entriesOffset >= 16, entriesOffset <= indexLength, indexLength <= limit - h else {
      throw NTFSError.corrupt(
        "\(what()): entries at \(entriesOffset), \(indexLength) bytes used, \(limit - h) available", offset: b.at(h))
    }
    var node = NTFSIndexNode(entries: [], hasChildren: b.u8(h + 12) & 1 != 0)
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
      var entry = NTFSIndexEntry(reference: b.u64(p), fileName: nil, subnode: nil)
      if flags & 1 != 0 {
        guard length >= 24 else {
          throw NTFSError.corrupt("\(what()): an entry too short for its sub-node", offset: b.at(p))
        }
        let vcn = b.i64(p + length - 8)
        guard vcn >= 0 else {
          throw NTFSError.corrupt("\(what()): a negative sub-node VCN", offset: b.at(p + length - 8))
        }
        entry.subnode = UInt64(vcn)
      }
      let last = flags & 2 != 0
      if !last {
        guard keyLength >= 66 else {
          throw NTFSError.corrupt("\(what()): a key of \(keyLength) bytes", offset: b.at(p + 10))
        }
        entry.fileName = try NTFSFileName.parse(b, at: p + 16, limit: p + 16 + keyLength)
      }
      node.entries.append(entry)
      if last { break }
      p += length
    }
    return node
  }
}
