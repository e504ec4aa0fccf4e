// A file as the reader sees it: the attributes of its base record and of the extension
// records its $ATTRIBUTE_LIST names, grouped into streams (extents merged by VCN).
import VMDKBlock

/// One stream of a file: the value of a resident attribute, or the merged runlist of a
/// non-resident one with its sizes and flags (taken from the extent at VCN 0).
struct NTFSStream: Sendable {
  var record: UInt64
  var type: UInt32
  var name: [UInt16]
  var resident: [UInt8]?
  var runs: [NTFSRun] = []
  var allocatedSize: UInt64 = 0
  var dataSize: UInt64 = 0
  var initializedSize: UInt64 = 0
  var flags: UInt16 = 0
  var compressionUnit: UInt8 = 0

  var size: UInt64 { resident.map { UInt64($0.count) } ?? dataSize }
  var isCompressed: Bool { resident == nil && flags & NTFSAttribute.flagCompressed != 0 }
  var isEncrypted: Bool { flags & NTFSAttribute.flagEncrypted != 0 }

  /// The index of the run that holds `vcn`, by binary search.
  func runIndex(_ vcn: UInt64) -> Int? {
    var lo = 0
    var hi = runs.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if runs[mid].vcn + runs[mid].length <= vcn { lo = mid + 1 } else { hi = mid }
    }
    guard lo < runs.count, runs[lo].vcn <= vcn else { return nil }
    return lo
  }

  /// Builds a stream from the attribute records of one (type, name): one resident record, or
  /// non-resident extents that start at VCN 0 and do not overlap.
  static func merge(_ parts: [NTFSAttribute]) throws -> NTFSStream {
    guard let first = parts.first else { throw NTFSError.corrupt("an attribute with no records") }
    let what = "MFT record \(first.record): attribute 0x\(String(first.type, radix: 16))"
    if let value = first.value {
      guard parts.count == 1 else { throw NTFSError.corrupt("\(what): a resident attribute appears twice") }
      return NTFSStream(record: first.record, type: first.type, name: first.name, resident: value, flags: first.flags)
    }
    let sorted = parts.sorted { $0.lowestVCN < $1.lowestVCN }
    guard let base = sorted.first, base.lowestVCN == 0 else {
      throw NTFSError.corrupt("\(what): no extent starts at VCN 0", offset: first.volumeOffset)
    }
    var s = NTFSStream(
      record: base.record, type: base.type, name: base.name, resident: nil, allocatedSize: base.allocatedSize,
      dataSize: base.dataSize, initializedSize: base.initializedSize, flags: base.flags,
      compressionUnit: base.compressionUnit)
    var end: UInt64 = 0
    for a in sorted {
      guard a.value == nil else { throw NTFSError.corrupt("\(what): resident and non-resident records mixed") }
      guard a.lowestVCN >= end else {
        throw NTFSError.corrupt("\(what): extents overlap at VCN \(a.lowestVCN)", offset: a.volumeOffset)
      }
      s.runs += a.runs
      end = a.runs.last.map { $0.vcn + $0.length } ?? end
    }
    return s
  }
}

/// What listing a folder needs: its $I30 index ($INDEX_ROOT's value, $INDEX_ALLOCATION and
/// $BITMAP:$I30), from a loaded file or read in place from the folder's record.
struct NTFSFolderIndex {
  var number: UInt64
  var root: [UInt8]?
  var allocation: NTFSStream?
  var bitmap: NTFSStream?
}

/// A base record with everything its attribute list adds. A class, so that the file cache and
/// every reader share one copy (a struct of this many arrays costs a reference count per field
/// each time it is copied out of the cache). Unchecked Sendable: `loadFile` sets the last
/// fields before the file is cached or returned, and nothing changes it afterwards.
final class NTFSFile: @unchecked Sendable {
  var number: UInt64
  var sequence: UInt16
  var recordFlags: UInt16
  var standardInformation: NTFSStandardInformation?
  var names: [NTFSFileName]
  /// $DATA streams by name (the empty name is the file's content).
  var data: [[UInt16]: NTFSStream]
  /// The order the named streams were met in.
  var streamNames: [[UInt16]]
  var indexRoot: [UInt8]?
  var indexAllocation: NTFSStream?
  /// $BITMAP:$I30: which index blocks are in use.
  var indexBitmap: NTFSStream?
  /// The unnamed $BITMAP ($MFT's: one bit per record in use).
  var bitmap: NTFSStream?
  var reparse: [UInt8]?
  /// Non-resident reparse data (rare); the file system reads it into `reparse`.
  var reparseStream: NTFSStream?
  /// The target of an Interix symbolic link (what ntfs-3g writes for `ln -s`): a system file
  /// whose data is "IntxLNK\u{1}" and the UTF-16 target.
  var interixTarget: [UInt8]?
  var volumeName: [UInt16]?
  var volumeInformation: [UInt8]?

  static let i30: [UInt16] = Array("$I30".utf16)

  /// The attribute records of one stream share a type and a name.
  private struct StreamKey: Hashable {
    var type: UInt32
    var name: [UInt16]
  }

  var reparseTag: UInt32? {
    guard let r = reparse, r.count >= 4 else { return nil }
    return NTFSBytes(r).u32(0)
  }

  var isDirectory: Bool { recordFlags & NTFSRecord.flagDirectory != 0 }

  var type: FileType {
    if let tag = reparseTag, tag == NTFSReparse.symlink || tag == NTFSReparse.mountPoint { return .symlink }
    if interixTarget != nil { return .symlink }
    return isDirectory ? .directory : .regular
  }

  var folderIndex: NTFSFolderIndex {
    NTFSFolderIndex(number: number, root: indexRoot, allocation: indexAllocation, bitmap: indexBitmap)
  }

  /// The names that are links (DOS-only names are the 8.3 twins of a Win32 name).
  var linkNames: [NTFSFileName] { names.filter { $0.namespace != NTFSFileName.dos } }

  init(number: UInt64, sequence: UInt16, flags: UInt16, attributes: [NTFSAttribute]) throws {
    self.number = number
    self.sequence = sequence
    recordFlags = flags
    names = []
    data = [:]
    streamNames = []
    var groups: [StreamKey: [NTFSAttribute]] = [:]
    var order: [StreamKey] = []
    for a in attributes {
      switch a.type {
      case NTFSAttribute.standardInformation:
        if standardInformation == nil, let v = a.value {
          standardInformation = try NTFSStandardInformation.parse(v, record: number)
        }
      case NTFSAttribute.fileName:
        guard let v = a.value else { throw NTFSError.corrupt("MFT record \(a.record): a non-resident $FILE_NAME") }
        names.append(try NTFSFileName.parse(NTFSBytes(v), at: 0, limit: v.count))
      case NTFSAttribute.indexRoot where a.name == Self.i30:
        indexRoot = a.value
      case NTFSAttribute.reparsePoint:
        if let v = a.value {
          reparse = v
        } else {
          reparseStream = try NTFSStream.merge([a])
        }
      case NTFSAttribute.volumeName:
        volumeName = a.value.map { NTFSBytes($0).utf16(0, units: $0.count / 2) }
      case NTFSAttribute.volumeInformation:
        volumeInformation = a.value
      case NTFSAttribute.data, NTFSAttribute.indexAllocation, NTFSAttribute.bitmap:
        if a.type == NTFSAttribute.indexAllocation && a.name != Self.i30 { continue }
        // $BITMAP:$I30 of a folder, and $MFT's own unnamed $BITMAP (record 0 only).
        if a.type == NTFSAttribute.bitmap && a.name != Self.i30 && !(a.name.isEmpty && number == 0) { continue }
        let key = StreamKey(type: a.type, name: a.name)
        if groups[key] == nil { order.append(key) }
        groups[key, default: []].append(a)
      default:
        continue
      }
    }
    for key in order {
      guard let parts = groups[key] else { continue }
      let s = try NTFSStream.merge(parts)
      if s.type == NTFSAttribute.indexAllocation {
        indexAllocation = s
      } else if s.type == NTFSAttribute.bitmap {
        if s.name.isEmpty { bitmap = s } else { indexBitmap = s }
      } else {
        data[s.name] = s
        if !s.name.isEmpty { streamNames.append(s.name) }
      }
    }
  }
}

/// Reparse tags and the targets of symbolic links and junctions.
public enum NTFSReparse {
  public static let mountPoint: UInt32 = 0xA000_0003
  public static let symlink: UInt32 = 0xA000_000C
  public static let dedup: UInt32 = 0x8000_0013
  public static let wof: UInt32 = 0x8000_0017
  public static let wslSymlink: UInt32 = 0xA000_001D

  /// What a reparse tag stands for, for messages.
  public static func describe(_ tag: UInt32) -> String {
    switch tag {
    case mountPoint: "junction or mount point"
    case symlink: "symbolic link"
    case dedup: "deduplicated file (data in the Dedup chunk store)"
    case wof: "WOF compressed file"
    case wslSymlink: "WSL symbolic link"
    default:
      tag & 0xFFFF_0FFF == 0x9000_001A ? "cloud placeholder" : "reparse point 0x\(String(tag, radix: 16))"
    }
  }

  /// The target of a symbolic link or junction, with `\` turned into `/` and the `\??\`
  /// prefix of an absolute name dropped.
  static func target(_ value: [UInt8], record: UInt64) throws -> [UInt8] {
    let b = NTFSBytes(value)
    let tag = b.u32(0)
    let buffer: Int
    switch tag {
    case symlink: buffer = 20
    case mountPoint: buffer = 16
    default:
      throw NTFSError.unsupported("MFT record \(record) is a \(describe(tag)), not a symbolic link or junction")
    }
    guard b.count >= buffer else { throw NTFSError.corrupt("MFT record \(record): reparse data truncated") }
    let substitute = (Int(b.u16(8)), Int(b.u16(10)))
    let print = (Int(b.u16(12)), Int(b.u16(14)))
    let (o, n) = print.1 > 0 ? print : substitute
    guard n % 2 == 0, b.has(buffer + o, n) else {
      throw NTFSError.corrupt("MFT record \(record): the reparse target lies outside the reparse data")
    }
    var units = b.utf16(buffer + o, units: n / 2)
    let prefix: [UInt16] = Array("\\??\\".utf16)
    if units.starts(with: prefix) { units.removeFirst(prefix.count) }
    return ntfsUTF8(units.map { $0 == 0x5C ? 0x2F : $0 })
  }
}
