// The disk-format layer's error: what kind of problem, at which byte offset of the bytes
// that were parsed, and a message that says what was expected and what was found. The block
// layer turns it into a VMDKError that also names the file.

/// A parse or validation failure in on-disk bytes.
public struct FormatError: Error, Equatable, Sendable, CustomStringConvertible {
  /// The kind of failure; each maps to one stable public error code.
  public enum Kind: String, Equatable, Sendable {
    case truncated, badMagic, unsupportedVersion, invalidGrainSize, invalidTableSize
    case offsetPastEnd, capacityOverflow, descriptorTooLarge, invalidDescriptor
    case corruptCompressedData, compressedGrainTooLarge, invalidMarker, invalidHeader
    case invalidTable
  }

  public var kind: Kind
  /// Byte offset, within the file being parsed, that the problem concerns.
  public var offset: UInt64
  public var message: String

  public init(_ kind: Kind, offset: UInt64, _ message: String) {
    self.kind = kind
    self.offset = offset
    self.message = message
  }

  public var description: String { "offset \(offset): \(message)" }
}
