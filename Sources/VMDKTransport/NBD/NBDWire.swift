// NBDWire: the constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md) and the
// big-endian encoding of its messages. Everything on the wire is in network byte order.

enum NBDWire {
  // Handshake.
  static let nbdMagic: UInt64 = 0x4e42_444d_4147_4943  // "NBDMAGIC"
  static let iHaveOpt: UInt64 = 0x4948_4156_454f_5054  // "IHAVEOPT"
  static let oldstyleMagic: UInt64 = 0x0000_4202_8186_1253
  static let optionReplyMagic: UInt64 = 0x0003_e889_0455_65a9
  static let flagFixedNewstyle: UInt16 = 1 << 0
  static let flagNoZeroes: UInt16 = 1 << 1

  // Options.
  static let optStartTLS: UInt32 = 5
  static let optGo: UInt32 = 7
  static let optStructuredReply: UInt32 = 8
  static let optSetMetaContext: UInt32 = 10

  // Option replies.
  static let repAck: UInt32 = 1
  static let repInfo: UInt32 = 3
  static let repMetaContext: UInt32 = 4
  static let repErrorBit: UInt32 = 1 << 31
  static let repErrUnsup: UInt32 = repErrorBit | 1
  static let repErrPolicy: UInt32 = repErrorBit | 2
  static let repErrInvalid: UInt32 = repErrorBit | 3
  static let repErrPlatform: UInt32 = repErrorBit | 4
  static let repErrTLSRequired: UInt32 = repErrorBit | 5
  static let repErrUnknown: UInt32 = repErrorBit | 6
  static let repErrShutdown: UInt32 = repErrorBit | 7
  static let repErrBlockSizeRequired: UInt32 = repErrorBit | 8
  static let repErrTooBig: UInt32 = repErrorBit | 9

  static let infoExport: UInt16 = 0
  static let infoBlockSize: UInt16 = 3

  // Transmission flags.
  static let transHasFlags: UInt16 = 1 << 0
  static let transReadOnly: UInt16 = 1 << 1
  static let transSendFlush: UInt16 = 1 << 2
  static let transSendTrim: UInt16 = 1 << 5
  static let transSendWriteZeroes: UInt16 = 1 << 6

  // Requests and replies.
  static let requestMagic: UInt32 = 0x2560_9513
  static let simpleReplyMagic: UInt32 = 0x6744_6698
  static let structuredReplyMagic: UInt32 = 0x668e_33ef
  static let cmdRead: UInt16 = 0
  static let cmdWrite: UInt16 = 1
  static let cmdDisc: UInt16 = 2
  static let cmdFlush: UInt16 = 3
  static let cmdTrim: UInt16 = 4
  static let cmdWriteZeroes: UInt16 = 6
  static let cmdBlockStatus: UInt16 = 7

  static let replyFlagDone: UInt16 = 1 << 0
  static let chunkNone: UInt16 = 0
  static let chunkOffsetData: UInt16 = 1
  static let chunkOffsetHole: UInt16 = 2
  static let chunkBlockStatus: UInt16 = 5
  static let chunkErrorBit: UInt16 = 1 << 15
  static let chunkError: UInt16 = chunkErrorBit | 1
  static let chunkErrorOffset: UInt16 = chunkErrorBit | 2

  static let stateHole: UInt32 = 1 << 0
  static let stateZero: UInt32 = 1 << 1

  // NBD error numbers (fixed by the protocol, not the host's errno values).
  static let ePerm: UInt32 = 1
  static let eIO: UInt32 = 5
  static let eNoMem: UInt32 = 12
  static let eInval: UInt32 = 22
  static let eNoSpc: UInt32 = 28
  static let eOverflow: UInt32 = 75
  static let eNotSup: UInt32 = 95
  static let eShutdown: UInt32 = 108

  static let baseAllocation = "base:allocation"

  /// The size of a request header (magic, flags, type, cookie, offset, length).
  static let requestHeaderBytes = 28
}

/// Big-endian loads and stores in a raw buffer: the request and reply headers of the
/// transmission phase are built and parsed in place, without an array per message.
extension UnsafeMutableRawBufferPointer {
  func storeBE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
    storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
  }
  func loadBE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
    T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
  }
}

/// A message being built, big-endian.
struct NBDEncoder {
  var bytes: [UInt8] = []
  mutating func u16(_ v: UInt16) {
    bytes.append(UInt8(v >> 8))
    bytes.append(UInt8(truncatingIfNeeded: v))
  }
  mutating func u32(_ v: UInt32) {
    for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) }
  }
  mutating func u64(_ v: UInt64) {
    for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
  }
  mutating func string(_ s: String) { bytes.append(contentsOf: Array(s.utf8)) }
}

/// A received message being parsed, big-endian. The caller checks the length first; reading
/// past the end is a programming error, so every read is bounds-checked by the caller's size
/// checks and `remaining`.
struct NBDDecoder {
  let bytes: [UInt8]
  var index = 0
  init(_ bytes: [UInt8]) { self.bytes = bytes }
  var remaining: Int { bytes.count - index }
  mutating func u16() -> UInt16 {
    defer { index += 2 }
    return UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
  }
  mutating func u32() -> UInt32 {
    var v: UInt32 = 0
    for i in 0..<4 { v = v << 8 | UInt32(bytes[index + i]) }
    index += 4
    return v
  }
  mutating func u64() -> UInt64 {
    var v: UInt64 = 0
    for i in 0..<8 { v = v << 8 | UInt64(bytes[index + i]) }
    index += 8
    return v
  }
  mutating func take(_ n: Int) -> ArraySlice<UInt8> {
    defer { index += n }
    return bytes[index..<(index + n)]
  }
}
