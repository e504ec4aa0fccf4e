// The one public error type of the toolkit. Every failure that reaches a caller of the block
// layer, a transport or a tool is a VMDKError with a stable numeric code (VixDiskLib's number
// where VixDiskLib has one), the file and byte offset it concerns, and the underlying cause.

/// An error from the VMDK toolkit: a stable `code`, a message that says what was expected and
/// what was found, the file and byte offset concerned, and whether retrying can help.
public struct VMDKError: Error, Sendable, CustomStringConvertible {
  /// A stable numeric error code. Codes below 20000 are VixDiskLib's own numbers; codes from
  /// 20000 on are this toolkit's and are listed in the README's error table.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public let name: String
    package init(_ rawValue: Int, _ name: String) {
      self.rawValue = rawValue
      self.name = name
    }
    public static func == (a: Code, b: Code) -> Bool { a.rawValue == b.rawValue }
    public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }
    public var description: String { "\(name) (\(rawValue))" }

    // VixDiskLib's codes.
    public static let failure = Code(1, "failure")
    public static let invalidArgument = Code(3, "invalid argument")
    public static let fileNotFound = Code(4, "file not found")
    public static let notSupported = Code(6, "not supported")
    public static let diskFull = Code(8, "disk full")
    public static let cancelled = Code(10, "cancelled")
    public static let fileReadOnly = Code(11, "file is read-only")
    public static let fileExists = Code(12, "file already exists")
    public static let fileAccess = Code(13, "file access error")
    public static let alreadyLocked = Code(15, "file already locked")
    public static let invalidDisk = Code(16000, "invalid disk")
    public static let partialChain = Code(16003, "partial chain")
    public static let needsRepair = Code(16006, "needs repair")
    public static let outOfRange = Code(16007, "out of range")
    public static let cidMismatch = Code(16008, "CID mismatch")
    public static let cannotOpenParent = Code(16012, "cannot open parent")
    // VixDiskLib's network codes.
    public static let serverNotFound = Code(14008, "server not found")
    public static let connectionRefused = Code(14009, "connection refused")
    public static let connectionLost = Code(14011, "connection lost")
    public static let serverShutdown = Code(14014, "server shut down")
    public static let serverNotAvailable = Code(14015, "server not available")

    // The toolkit's own codes for malformed images (stable; documented in the README).
    public static let truncated = Code(20001, "truncated")
    public static let badMagic = Code(20002, "bad magic")
    public static let unsupportedVersion = Code(20003, "unsupported version")
    public static let invalidGrainSize = Code(20004, "invalid grain size")
    public static let invalidTableSize = Code(20005, "invalid grain table size")
    public static let offsetPastEnd = Code(20006, "offset past end of file")
    public static let capacityOverflow = Code(20007, "capacity too large")
    public static let descriptorTooLarge = Code(20008, "descriptor too large")
    public static let invalidDescriptor = Code(20009, "invalid descriptor")
    public static let pathOutsideFolder = Code(20010, "path leaves the disk's folder")
    public static let corruptCompressedData = Code(20011, "corrupt compressed data")
    public static let compressedGrainTooLarge = Code(20012, "compressed grain too large")
    public static let invalidMarker = Code(20013, "invalid marker")
    public static let chainLoop = Code(20014, "snapshot chain loop")
    public static let chainTooDeep = Code(20015, "snapshot chain too deep")
    public static let needsDevice = Code(20016, "needs the device")
    public static let extentNoAccess = Code(20017, "extent is NOACCESS")
    public static let invalidHeader = Code(20018, "invalid header field")
    public static let invalidTable = Code(20019, "invalid grain table entry")
    public static let trackingReset = Code(20020, "tracking was reset: a full backup is needed")
    public static let hasSnapshots = Code(20021, "the disk has snapshots on top of it")
    public static let timeout = Code(20022, "network timeout")
    public static let protocolError = Code(20023, "network protocol error")
    public static let tlsFailure = Code(20024, "TLS failure")
    public static let invalidConfig = Code(20025, "invalid configuration")
    // The file-level restore layer's codes (partition tables and guest file systems).
    public static let invalidPartitionTable = Code(20026, "invalid partition table")
    public static let corruptFileSystem = Code(20027, "corrupt file system")
    public static let fileSystemLimit = Code(20028, "file system cap exceeded")
    public static let unsafeName = Code(20029, "unsafe name from the guest")

    /// Every code, for documentation and tests.
    public static let all: [Code] = [
      .failure, .invalidArgument, .fileNotFound, .notSupported, .diskFull, .cancelled, .fileReadOnly,
      .fileExists, .fileAccess,
      .alreadyLocked, .invalidDisk, .partialChain, .needsRepair, .outOfRange, .cidMismatch,
      .cannotOpenParent, .truncated, .badMagic, .unsupportedVersion, .invalidGrainSize,
      .invalidTableSize, .offsetPastEnd, .capacityOverflow, .descriptorTooLarge,
      .invalidDescriptor, .pathOutsideFolder, .corruptCompressedData, .compressedGrainTooLarge,
      .invalidMarker, .chainLoop, .chainTooDeep, .needsDevice, .extentNoAccess, .invalidHeader,
      .invalidTable, .trackingReset, .hasSnapshots, .serverNotFound, .connectionRefused,
      .connectionLost, .serverShutdown, .serverNotAvailable, .timeout, .protocolError, .tlsFailure,
      .invalidConfig, .invalidPartitionTable, .corruptFileSystem, .fileSystemLimit, .unsafeName,
    ]
  }

  /// The stable code.
  public var code: Code
  /// What was expected and what was found, without the file and offset.
  public var message: String
  /// The file (path or URI) the error concerns, when there is one.
  public var file: String?
  /// The byte offset in `file` the error concerns, when there is one.
  public var offset: UInt64?
  /// Whether the same operation may succeed when retried (network faults).
  public var isRetryable: Bool
  /// The underlying cause, when another error led to this one.
  public var underlying: (any Error & Sendable)?

  public init(
    _ code: Code, _ message: String, file: String? = nil, offset: UInt64? = nil,
    isRetryable: Bool = false, underlying: (any Error & Sendable)? = nil
  ) {
    self.code = code
    self.message = message
    self.file = file
    self.offset = offset
    self.isRetryable = isRetryable
    self.underlying = underlying
  }

  /// One line: `FILE: offset N: message (code name NNNNN)`.
  public var description: String {
    var s = ""
    if let file { s += "\(file): " }
    if let offset { s += "offset \(offset): " }
    s += message
    s += " [\(code.name) \(code.rawValue)]"
    return s
  }

  /// The same error with the file (and offset) filled in where they were missing.
  public func at(file: String, offset: UInt64? = nil) -> VMDKError {
    var e = self
    if e.file == nil { e.file = file }
    if e.offset == nil { e.offset = offset }
    return e
  }
}
