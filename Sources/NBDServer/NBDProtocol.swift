// NBDProtocol: the numbers of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md) that the
// server speaks, from the server's side. The client in VMDKTransport keeps its own (internal)
// table; this one is the server's, public so that tests and fuzzers can build messages.

/// Constants of the NBD protocol, as the server uses them. Everything on the wire is big-endian.
public enum NBDProtocol {
  // MARK: Handshake

  /// "NBDMAGIC", the first 8 bytes the server sends.
  public static let nbdMagic: UInt64 = 0x4e42_444d_4147_4943
  /// "IHAVEOPT": the second 8 bytes of the greeting, and the magic of every option.
  public static let optionMagic: UInt64 = 0x4948_4156_454f_5054
  /// The magic of every option reply.
  public static let optionReplyMagic: UInt64 = 0x0003_e889_0455_65a9

  /// Handshake flags (server) and client flags.
  public static let flagFixedNewstyle: UInt16 = 1 << 0
  public static let flagNoZeroes: UInt16 = 1 << 1

  // MARK: Options

  public static let optExportName: UInt32 = 1
  public static let optAbort: UInt32 = 2
  public static let optList: UInt32 = 3
  public static let optStartTLS: UInt32 = 5
  public static let optInfo: UInt32 = 6
  public static let optGo: UInt32 = 7
  public static let optStructuredReply: UInt32 = 8
  public static let optListMetaContext: UInt32 = 9
  public static let optSetMetaContext: UInt32 = 10

  // MARK: Option replies

  public static let repAck: UInt32 = 1
  public static let repServer: UInt32 = 2
  public static let repInfo: UInt32 = 3
  public static let repMetaContext: UInt32 = 4
  public static let repErrUnsup: UInt32 = 1 << 31 | 1
  public static let repErrPolicy: UInt32 = 1 << 31 | 2
  public static let repErrInvalid: UInt32 = 1 << 31 | 3
  public static let repErrPlatform: UInt32 = 1 << 31 | 4
  public static let repErrTLSRequired: UInt32 = 1 << 31 | 5
  public static let repErrUnknown: UInt32 = 1 << 31 | 6
  public static let repErrShutdown: UInt32 = 1 << 31 | 7
  public static let repErrBlockSizeRequired: UInt32 = 1 << 31 | 8
  public static let repErrTooBig: UInt32 = 1 << 31 | 9

  /// Information types of NBD_REP_INFO.
  public static let infoExport: UInt16 = 0
  public static let infoName: UInt16 = 1
  public static let infoDescription: UInt16 = 2
  public static let infoBlockSize: UInt16 = 3

  // MARK: Transmission flags (NBD_INFO_EXPORT)

  public static let transHasFlags: UInt16 = 1 << 0
  public static let transReadOnly: UInt16 = 1 << 1
  public static let transSendFlush: UInt16 = 1 << 2
  public static let transSendFUA: UInt16 = 1 << 3
  public static let transSendTrim: UInt16 = 1 << 5
  public static let transSendWriteZeroes: UInt16 = 1 << 6
  public static let transSendDF: UInt16 = 1 << 7
  public static let transCanMultiConn: UInt16 = 1 << 8
  public static let transSendCache: UInt16 = 1 << 10

  // MARK: Requests

  public static let requestMagic: UInt32 = 0x2560_9513
  public static let simpleReplyMagic: UInt32 = 0x6744_6698
  public static let structuredReplyMagic: UInt32 = 0x668e_33ef
  /// Bytes of a request header: magic 4, flags 2, type 2, cookie 8, offset 8, length 4.
  public static let requestHeaderBytes = 28

  public static let cmdRead: UInt16 = 0
  public static let cmdWrite: UInt16 = 1
  public static let cmdDisc: UInt16 = 2
  public static let cmdFlush: UInt16 = 3
  public static let cmdTrim: UInt16 = 4
  public static let cmdCache: UInt16 = 5
  public static let cmdWriteZeroes: UInt16 = 6
  public static let cmdBlockStatus: UInt16 = 7

  /// Command flags.
  public static let cmdFlagFUA: UInt16 = 1 << 0
  public static let cmdFlagNoHole: UInt16 = 1 << 1
  public static let cmdFlagDF: UInt16 = 1 << 2
  public static let cmdFlagReqOne: UInt16 = 1 << 3
  public static let cmdFlagFastZero: UInt16 = 1 << 4

  // MARK: Structured replies

  public static let replyFlagDone: UInt16 = 1 << 0
  public static let chunkNone: UInt16 = 0
  public static let chunkOffsetData: UInt16 = 1
  public static let chunkOffsetHole: UInt16 = 2
  public static let chunkBlockStatus: UInt16 = 5
  public static let chunkError: UInt16 = 1 << 15 | 1
  public static let chunkErrorOffset: UInt16 = 1 << 15 | 2

  /// base:allocation flags.
  public static let stateHole: UInt32 = 1 << 0
  public static let stateZero: UInt32 = 1 << 1

  // MARK: Errors (the protocol's numbers, not the host's errno)

  public static let ePerm: UInt32 = 1
  public static let eIO: UInt32 = 5
  public static let eNoMem: UInt32 = 12
  public static let eInval: UInt32 = 22
  public static let eNoSpc: UInt32 = 28
  public static let eOverflow: UInt32 = 75
  public static let eNotSup: UInt32 = 95
  public static let eShutdown: UInt32 = 108

  // MARK: Meta contexts

  public static let baseAllocation = "base:allocation"
  public static let qemuAllocationDepth = "qemu:allocation-depth"

  // MARK: Limits

  /// The largest export name accepted (the protocol's recommended limit).
  public static let maxNameBytes = 4096
  /// The largest option payload read; a longer one gets NBD_REP_ERR_TOO_BIG and a close.
  public static let maxOptionBytes = 64 << 10
  /// The largest READ or WRITE payload (advertised as the maximum block size): 32 MiB,
  /// what qemu-nbd and nbdkit advertise.
  public static let maxPayloadBytes = 32 << 20
}
