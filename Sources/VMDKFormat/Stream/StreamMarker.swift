// streamOptimized markers: every marker starts on a sector boundary with `val` (u64) and
// `size` (u32). A non-zero size makes it a grain marker (val = the grain's first virtual
// sector, size = bytes of zlib data that follow at offset 12); size 0 makes it a metadata
// marker whose type (u32 at offset 12) says what follows.

/// A parsed stream marker.
public struct StreamMarker: Equatable, Sendable {
  /// Metadata marker types.
  public enum MetadataType: UInt32, Sendable {
    case endOfStream = 0
    case grainTable = 1
    case grainDirectory = 2
    case footer = 3
    /// VMware's "progress" marker (VirtualBox: unspecified); skipped as one sector.
    case progress = 4
  }

  /// Offset 0, 8 bytes: LBA (grain marker) or sectors of the metadata that follows.
  public var value: UInt64
  /// Offset 8, 4 bytes: bytes of compressed data; 0 for metadata markers.
  public var size: UInt32
  /// Offset 12, 4 bytes, metadata markers only.
  public var type: UInt32

  /// Bytes of a grain marker's header, before the compressed data.
  public static let grainHeaderBytes = 12

  public var isGrain: Bool { size != 0 }

  public init(value: UInt64, size: UInt32, type: UInt32 = 0) {
    self.value = value
    self.size = size
    self.type = type
  }

  /// Parses a marker from at least 12 (grain) or 16 (metadata) bytes at file offset `baseOffset`.
  public init(parsing bytes: [UInt8], baseOffset: UInt64 = 0) throws {
    let r = ByteReader(bytes, baseOffset: baseOffset)
    value = try r.u64(0, "marker value")
    size = try r.u32(8, "marker size")
    type = size == 0 ? try r.u32(12, "marker type") : 0
  }

  /// A metadata marker's 512-byte sector, or a grain marker's 12-byte header.
  public func serialized() -> [UInt8] {
    var w = ByteWriter(count: isGrain ? StreamMarker.grainHeaderBytes : 512)
    w.u64(0, value)
    w.u32(8, size)
    if !isGrain { w.u32(12, type) }
    return w.bytes
  }
}

/// The tail of VMware's stream layout: footer marker, footer header, end-of-stream marker,
/// the file's last 1536 bytes.
public enum StreamFooter {
  /// Bytes read from the end of the file to find the footer.
  public static let tailBytes = 1536

  /// Parses the last `tailBytes` of a file of `fileSize` bytes (qemu's rule: a footer marker
  /// of type 3, a KDMV header, then an end-of-stream marker) and returns the footer header.
  public static func parse(tail bytes: [UInt8], fileSize: UInt64) throws -> SparseExtentHeader {
    // A caller's fileSize may be smaller than the bytes it passes (a file that shrank between
    // stat and read); the subtraction must not trap.
    let base = fileSize >= UInt64(bytes.count) ? fileSize - UInt64(bytes.count) : 0
    guard bytes.count == tailBytes, fileSize >= UInt64(tailBytes) else {
      throw FormatError(
        .invalidMarker, offset: base,
        "the header says the grain directory is at the end, but the file (\(fileSize) bytes) is too short for a footer")
    }
    let marker = try StreamMarker(parsing: Array(bytes[0..<512]), baseOffset: base)
    guard marker.size == 0, marker.type == StreamMarker.MetadataType.footer.rawValue else {
      throw FormatError(
        .invalidMarker, offset: base,
        "invalid footer: expected a footer marker (size 0, type 3), found size \(marker.size) type \(marker.type)")
    }
    let footer: SparseExtentHeader
    do {
      footer = try SparseExtentHeader(parsing: Array(bytes[512..<1024]), baseOffset: base + 512)
    } catch let e as FormatError {
      throw FormatError(.invalidMarker, offset: e.offset, "invalid footer: \(e.message)")
    }
    let eos = try StreamMarker(parsing: Array(bytes[1024..<1536]), baseOffset: base + 1024)
    guard eos.value == 0, eos.size == 0, eos.type == StreamMarker.MetadataType.endOfStream.rawValue
    else {
      throw FormatError(
        .invalidMarker, offset: base + 1024,
        "invalid footer: expected an end-of-stream marker after the footer")
    }
    guard !footer.grainDirectoryAtEnd else {
      throw FormatError(
        .invalidMarker, offset: base + 512 + 56,
        "invalid footer: its grain directory offset is also 'at end'")
    }
    return footer
  }
}

/// The 12-byte header in front of a compressed grain (LBA u64, size u32), as a grain table
/// entry of a streamOptimized image points at it, checked against the grain size and the file.
public struct GrainMarkerHeader: Equatable, Sendable {
  /// The grain's first virtual sector, as the marker says.
  public let lba: UInt64
  /// Bytes of zlib data after the header.
  public let compressedBytes: UInt64
  /// Byte offset of the zlib data in the file.
  public let dataOffset: UInt64

  /// Parses the header at file offset `at` from `bytes` (at least 12). Compressed data over
  /// two grains (`grainBytes` each) is refused, so no caller sizes a buffer from the file.
  public init(parsing bytes: [UInt8], at: UInt64, grainBytes: Int, fileSize: UInt64) throws(FormatError) {
    guard bytes.count >= StreamMarker.grainHeaderBytes else {
      throw FormatError(.truncated, offset: at, "grain marker needs 12 bytes, found \(bytes.count)")
    }
    var lba: UInt64 = 0
    for i in 0..<8 { lba |= UInt64(bytes[i]) << (8 * UInt64(i)) }
    let size = UInt64(bytes[8]) | UInt64(bytes[9]) << 8 | UInt64(bytes[10]) << 16 | UInt64(bytes[11]) << 24
    guard size != 0 else {
      throw FormatError(.invalidMarker, offset: at, "grain table points at a metadata marker, not a grain")
    }
    let maxCompressed = UInt64(max(0, grainBytes)) * 2
    guard size <= maxCompressed else {
      throw FormatError(
        .compressedGrainTooLarge, offset: at,
        "compressed grain claims \(size) bytes; at most \(maxCompressed) (two grains) are allowed")
    }
    let (dataAt, overflow) = at.addingReportingOverflow(UInt64(StreamMarker.grainHeaderBytes))
    guard !overflow, dataAt <= fileSize, size <= fileSize - dataAt else {
      throw FormatError(
        .compressedGrainTooLarge, offset: at,
        "compressed grain claims \(size) bytes, but the file ends \(fileSize - min(dataAt, fileSize)) bytes after its start"
      )
    }
    self.lba = lba
    self.compressedBytes = size
    self.dataOffset = dataAt
  }
}
