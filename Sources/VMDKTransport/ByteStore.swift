// ByteStore: a sized, randomly addressable container of bytes. It knows nothing about VMDK;
// extents of every kind read and write their files through it.

/// A sized, randomly addressable byte container: a local file, memory, or a remote object.
public protocol ByteStore: AnyObject, Sendable {
  /// The path or URI, for messages.
  var name: String { get }
  /// Whether `write(at:from:)` is allowed.
  var isWritable: Bool { get }
  /// The current size in bytes.
  func size() throws -> UInt64
  /// Reads up to `buffer.count` bytes at `offset`; returns how many were read, fewer only at
  /// the end of the store. Loops on short reads.
  func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
  /// Writes all of `buffer` at `offset`.
  func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws
  /// Makes written data durable.
  func flush() throws
  /// Bytes the store occupies on its medium (a sparse file's allocated blocks), when known.
  func allocatedBytes() throws -> UInt64?
  /// The first byte at or after `offset` that holds data (SEEK_DATA), or nil when the store
  /// cannot tell; `UInt64.max` when no data follows.
  func nextData(from offset: UInt64) throws -> UInt64?
  /// The first byte at or after `offset` that is in a hole (SEEK_HOLE; the end of the store
  /// counts as a hole), or nil when unknown.
  func nextHole(from offset: UInt64) throws -> UInt64?
  /// The store as a block device (an NBD export), when it is one.
  var blockDevice: (any BlockDevice)? { get }
  /// An open descriptor of a local file whose byte at offset N is the store's byte N, for
  /// zero-copy transfers (splice); nil when the store is not such a file. Owned by the store:
  /// valid until `close()`.
  var spliceDescriptor: Int32? { get }
  /// Lets go of what the store holds (a file descriptor, connections) now; idempotent. Later
  /// reads and writes throw.
  func close()
}

/// A store that is a whole virtual disk behind a block-device protocol (an NBD export): it
/// answers block status from the server and zeroes ranges without sending data.
public protocol BlockDevice: ByteStore {
  /// Whether the server answers block status queries.
  var supportsBlockStatus: Bool { get }
  /// The extent at `offset` as the server reports it; nil when it cannot tell.
  func status(at offset: UInt64) throws -> NBDExtent?
  /// Makes `length` bytes at `offset` read as zeros (the server writes them when it has no
  /// command for it).
  func writeZeroes(at offset: UInt64, length: UInt64) throws
}

extension ByteStore {
  public func allocatedBytes() throws -> UInt64? { nil }
  public func nextData(from offset: UInt64) throws -> UInt64? { nil }
  public func nextHole(from offset: UInt64) throws -> UInt64? { nil }
  public var blockDevice: (any BlockDevice)? { nil }
  public var spliceDescriptor: Int32? { nil }
  public func close() {}

  /// Reads exactly `count` bytes at `offset`, or throws `truncated` naming `what`.
  public func readExactly(at offset: UInt64, count: Int, what: String) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    let n = try bytes.withUnsafeMutableBytes { try read(at: offset, into: $0) }
    if n < count {
      throw VMDKError(
        .truncated, "\(what): needed \(count) bytes, the file ends after \(n)", file: name,
        offset: offset)
    }
    return bytes
  }

  /// Reads up to `count` bytes at `offset`; the array is shorter at the end of the store.
  public func readUpTo(at offset: UInt64, count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    let n = try bytes.withUnsafeMutableBytes { try read(at: offset, into: $0) }
    if n < count { bytes.removeLast(count - n) }
    return bytes
  }
}
