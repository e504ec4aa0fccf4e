// The change-tracking sidecar, `NAME-changes.vtrack`: its 512-byte header and its block map
// (FORMAT.md next to this file is the specification), as bytes <-> values, and reading and
// writing the whole file. Nothing here decides when tracking resets; ChangeTracking does.

import CDeflate
import Foundation
import VMDKTransport

/// Why a tracking epoch started: kept in the header so that "tracking was reset" can say why.
enum TrackingResetReason: UInt32, Sendable {
  case enabled = 0
  case uncleanShutdown = 1
  case cidChanged = 2
  case damaged = 3
  case otherDisk = 4
  case sequenceOverflow = 5
  case parentNotTrusted = 6

  var text: String {
    switch self {
    case .enabled: "change tracking was turned on"
    case .uncleanShutdown: "a process died while writing the disk (the tracking file was left dirty)"
    case .cidChanged: "the disk was written by a tool that does not track changes (its CID changed)"
    case .damaged: "the tracking file was missing or damaged"
    case .otherDisk: "the tracking file belongs to another disk or another capacity"
    case .sequenceOverflow: "the change sequence ran out of room"
    case .parentNotTrusted: "the snapshot's parent had no trustworthy tracking"
    }
  }
}

/// The sidecar's header (offsets and sizes in FORMAT.md). All integers little-endian.
struct TrackingHeader: Equatable, Sendable {
  /// Bytes 0-7.
  static let magic: [UInt8] = Array("VTRACK\r\n".utf8)
  static let version: UInt32 = 1
  static let size = 512
  /// The smallest tracking block; larger disks get larger blocks.
  static let minBlockBytes: UInt64 = 64 << 10
  /// Most blocks in the map: 2^20 u32 entries, a 4 MiB map whatever the capacity.
  static let maxBlocks: UInt64 = 1 << 20

  var dirty = false
  var reason: TrackingResetReason = .enabled
  var capacityBytes: UInt64
  var blockBytes: UInt64
  var blockCount: UInt64
  /// The first sequence of this epoch: IDs below it answer "tracking was reset".
  var epochStart: UInt64
  /// The sequence of the disk's state as the file describes it (the current change ID).
  var sequence: UInt64
  /// The top link's CID when the file was last written clean (ffffffff when the descriptor
  /// has none).
  var cid: UInt32
  var mapCRC: UInt32 = 0
  /// When this epoch started, Unix seconds.
  var epochTime: UInt64
  /// The disk uuid of the change IDs, VMware's spelling, at most 63 bytes.
  var uuid: String

  /// The block size for a capacity: 64 KiB, doubled until the map has at most 2^20 entries.
  static func blockBytes(forCapacity capacity: UInt64) -> UInt64 {
    var b = minBlockBytes
    while (capacity / b) + (capacity % b == 0 ? 0 : 1) > maxBlocks { b <<= 1 }
    return b
  }

  static func blockCount(capacity: UInt64, blockBytes: UInt64) -> UInt64 {
    capacity / blockBytes + (capacity % blockBytes == 0 ? 0 : 1)
  }

  func serialized() -> [UInt8] {
    var b = [UInt8](repeating: 0, count: Self.size)
    func put(_ v: UInt64, _ at: Int, _ n: Int) {
      for i in 0..<n { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }
    b.replaceSubrange(0..<8, with: Self.magic)
    put(UInt64(Self.version), 8, 4)
    put(UInt64(Self.size), 12, 4)
    put(dirty ? 1 : 0, 16, 4)
    put(UInt64(reason.rawValue), 20, 4)
    put(capacityBytes, 24, 8)
    put(blockBytes, 32, 8)
    put(blockCount, 40, 8)
    put(epochStart, 48, 8)
    put(sequence, 56, 8)
    put(UInt64(cid), 64, 4)
    put(UInt64(mapCRC), 68, 4)
    put(epochTime, 72, 8)
    let u = Array(uuid.utf8.prefix(63))
    b.replaceSubrange(80..<(80 + u.count), with: u)
    put(UInt64(crc32(b[0..<508])), 508, 4)
    return b
  }

  /// Parses and checks a header; the error says what is wrong, for the reset message.
  init(parsing b: [UInt8]) throws(TrackingDamage) {
    guard b.count >= Self.size else { throw TrackingDamage("the file is shorter than its 512-byte header") }
    func get(_ at: Int, _ n: Int) -> UInt64 {
      var v: UInt64 = 0
      for i in 0..<n { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
      return v
    }
    guard Array(b[0..<8]) == Self.magic else { throw TrackingDamage("bad magic at offset 0") }
    guard get(8, 4) == UInt64(Self.version), get(12, 4) == UInt64(Self.size) else {
      throw TrackingDamage("unsupported version \(get(8, 4)) or header size \(get(12, 4))")
    }
    guard get(508, 4) == UInt64(crc32(b[0..<508])) else { throw TrackingDamage("header checksum mismatch") }
    let flags = get(16, 4)
    guard flags <= 1 else { throw TrackingDamage("unknown flags \(flags) at offset 16") }
    dirty = flags == 1
    reason = TrackingResetReason(rawValue: UInt32(get(20, 4))) ?? .damaged
    capacityBytes = get(24, 8)
    blockBytes = get(32, 8)
    blockCount = get(40, 8)
    epochStart = get(48, 8)
    sequence = get(56, 8)
    cid = UInt32(get(64, 4))
    mapCRC = UInt32(get(68, 4))
    epochTime = get(72, 8)
    let u = b[80..<144].prefix { $0 != 0 }
    uuid = String(decoding: u, as: UTF8.self)
    guard blockBytes >= Self.minBlockBytes, blockBytes.nonzeroBitCount == 1,
      blockCount == Self.blockCount(capacity: capacityBytes, blockBytes: blockBytes), blockCount <= Self.maxBlocks
    else {
      throw TrackingDamage(
        "block size \(blockBytes) and count \(blockCount) do not fit a capacity of \(capacityBytes) bytes")
    }
    guard epochStart <= sequence, sequence - epochStart < UInt64(UInt32.max) else {
      throw TrackingDamage("sequence \(sequence) is not within its epoch starting at \(epochStart)")
    }
  }

  init(
    capacityBytes: UInt64, epochStart: UInt64, cid: UInt32, uuid: String, reason: TrackingResetReason
  ) {
    self.capacityBytes = capacityBytes
    self.blockBytes = Self.blockBytes(forCapacity: capacityBytes)
    self.blockCount = Self.blockCount(capacity: capacityBytes, blockBytes: blockBytes)
    self.epochStart = epochStart
    self.sequence = epochStart
    self.cid = cid
    self.epochTime = UInt64(max(0, Date().timeIntervalSince1970))
    self.uuid = uuid
    self.reason = reason
  }
}

/// What is wrong with a sidecar that cannot be trusted.
struct TrackingDamage: Error, Sendable {
  let message: String
  init(_ message: String) { self.message = message }
}

/// A whole sidecar in memory: the header and, per block, the sequence of its last change as
/// an offset from the epoch start (0: not changed since the epoch started).
struct TrackingState: Sendable {
  var header: TrackingHeader
  var map: [UInt32]

  init(header: TrackingHeader, map: [UInt32]) {
    self.header = header
    self.map = map
  }

  /// A new epoch: nothing changed since `epochStart`, which is also the current sequence.
  static func fresh(
    capacityBytes: UInt64, epochStart: UInt64, cid: UInt32, uuid: String, reason: TrackingResetReason
  ) -> TrackingState {
    let h = TrackingHeader(capacityBytes: capacityBytes, epochStart: epochStart, cid: cid, uuid: uuid, reason: reason)
    return TrackingState(header: h, map: [UInt32](repeating: 0, count: Int(h.blockCount)))
  }

  /// The start of a new epoch after one that reached `previous` (when known): past it, and
  /// past the clock in microseconds, so that IDs from a lost file (deleted, damaged, turned
  /// off and on) are below it whatever their number.
  static func nextEpochStart(after previous: UInt64?) -> UInt64 {
    let now = UInt64(max(0, Date().timeIntervalSince1970 * 1_000_000))
    return max(now, (previous ?? 0) &+ 1)
  }

  /// The map's bytes, little-endian.
  func mapBytes() -> [UInt8] {
    var out = [UInt8](repeating: 0, count: map.count * 4)
    out.withUnsafeMutableBytes { raw in
      for (i, v) in map.enumerated() { raw.storeBytes(of: v.littleEndian, toByteOffset: i * 4, as: UInt32.self) }
    }
    return out
  }

  /// Parses a whole file.
  init(parsing bytes: [UInt8]) throws(TrackingDamage) {
    let h = try TrackingHeader(parsing: bytes)
    let expected = TrackingHeader.size + Int(h.blockCount) * 4
    guard bytes.count == expected else {
      throw TrackingDamage("the file has \(bytes.count) bytes; its header says \(expected)")
    }
    guard crc32(bytes[TrackingHeader.size...]) == h.mapCRC else { throw TrackingDamage("block map checksum mismatch") }
    var map = [UInt32](repeating: 0, count: Int(h.blockCount))
    let limit = h.sequence - h.epochStart
    var bad: Int? = nil
    bytes.withUnsafeBytes { raw in
      for i in 0..<map.count {
        let v = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: TrackingHeader.size + i * 4, as: UInt32.self))
        if UInt64(v) > limit, bad == nil { bad = i }
        map[i] = v
      }
    }
    if let bad { throw TrackingDamage("block \(bad) changed after the current sequence") }
    self.header = h
    self.map = map
  }
}

func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
  bytes.withUnsafeBytes { UInt32(libdeflate_crc32(0, $0.baseAddress, $0.count)) }
}

func crc32(_ bytes: [UInt8]) -> UInt32 { crc32(bytes[...]) }

/// Reading and writing the sidecar file.
enum TrackingFile {
  enum Loaded {
    case missing
    case damaged(String)
    case ok(TrackingState)
  }

  /// Reads the file at `path`: missing, damaged (with why) or its state. Other I/O errors
  /// (permissions) throw.
  static func load(_ path: String) throws -> Loaded {
    let file: LocalFile
    do {
      file = try LocalFile(path: path)
    } catch let e as VMDKError where e.code == .fileNotFound {
      return .missing
    }
    return try load(file)
  }

  static func load(_ file: LocalFile) throws -> Loaded {
    let size = try file.size()
    let most = UInt64(TrackingHeader.size) + TrackingHeader.maxBlocks * 4
    guard size <= most else { return .damaged("the file has \(size) bytes, more than the largest (\(most))") }
    let bytes = try file.readUpTo(at: 0, count: Int(size))
    do {
      return .ok(try TrackingState(parsing: bytes))
    } catch {
      return .damaged(error.message)
    }
  }

  /// Writes the whole state (map first, then the header with the map's checksum) at the start
  /// of `file`, sets its size and syncs it. A crash in between leaves a checksum mismatch or
  /// the old dirty header: both read as "reset", never as a wrong map.
  static func write(_ state: inout TrackingState, to file: LocalFile) throws {
    let map = state.mapBytes()
    state.header.mapCRC = crc32(map)
    try file.write(at: UInt64(TrackingHeader.size), from: map)
    try file.truncate(to: UInt64(TrackingHeader.size + map.count))
    try file.write(at: 0, from: state.header.serialized())
    try file.flush()
  }

  /// Rewrites only the header (the dirty mark), synced.
  static func writeHeader(_ header: TrackingHeader, to file: LocalFile) throws {
    try file.write(at: 0, from: header.serialized())
    try file.flush()
  }

  /// Writes a new file at `path` under a temporary name and renames it into place.
  static func create(_ state: TrackingState, at path: String) throws {
    // Removed on any failure (AtomicFile).
    try AtomicFile.replace(path, followLinks: false, keepMode: false) { out in
      var s = state
      try write(&s, to: out)
    }
  }
}
