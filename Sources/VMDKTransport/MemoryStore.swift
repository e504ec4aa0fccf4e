// MemoryStore: a ByteStore held in memory, for tests and for images built before they are
// written out.

/// A growable in-memory byte store.
public final class MemoryStore: ByteStore {
  public let name: String
  public let isWritable = true
  private let bytes: Locked<[UInt8]>

  public init(name: String = "memory", bytes: [UInt8] = []) {
    self.name = name
    self.bytes = Locked(bytes)
  }

  /// A copy of the contents.
  public var contents: [UInt8] { bytes.withLock { $0 } }

  public func size() throws -> UInt64 { UInt64(bytes.withLock { $0.count }) }

  public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    guard buffer.count > 0 else { return 0 }
    return bytes.withLock { b in
      guard offset < UInt64(b.count) else { return 0 }
      let n = min(buffer.count, b.count - Int(offset))
      b.withUnsafeBytes { src in
        buffer.baseAddress!.copyMemory(from: src.baseAddress! + Int(offset), byteCount: n)
      }
      return n
    }
  }

  public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
    guard buffer.count > 0 else { return }
    bytes.withLock { b in
      let end = Int(offset) + buffer.count
      if b.count < end { b.append(contentsOf: repeatElement(0, count: end - b.count)) }
      b.withUnsafeMutableBytes { dst in
        (dst.baseAddress! + Int(offset)).copyMemory(from: buffer.baseAddress!, byteCount: buffer.count)
      }
    }
  }

  public func flush() throws {}
}
