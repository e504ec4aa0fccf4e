// Volume readers: a byte range of a `Disk` (DiskVolume), a byte range of another volume
// (VolumeSlice) and bytes in memory (MemoryVolume, for tests and small images). Every read is
// checked against the range before it reaches the layer below.
import VMDKBlock

/// Checks that `count` bytes at `offset` lie inside a volume of `size` bytes.
@inline(__always)
func checkRange(_ offset: UInt64, _ count: Int, size: UInt64, name: String) throws {
  let c = UInt64(count)
  guard offset <= size, c <= size - offset else {
    throw VMDKError(
      .outOfRange, "read of \(count) bytes at \(offset) goes past the end of the volume (\(size) bytes)",
      file: name, offset: offset)
  }
}

/// A byte range of a disk: a partition, or the whole disk.
public struct DiskVolume: VolumeReader {
  public let disk: Disk
  /// The first byte of the range on the disk.
  public let startBytes: UInt64
  public let size: UInt64
  public let name: String

  /// The whole disk.
  public init(disk: Disk, name: String) {
    self.disk = disk
    self.startBytes = 0
    self.size = disk.capacityBytes
    self.name = name
  }

  /// `size` bytes from `startBytes`; the range must lie inside the disk.
  public init(disk: Disk, startBytes: UInt64, size: UInt64, name: String) throws {
    guard startBytes <= disk.capacityBytes, size <= disk.capacityBytes - startBytes else {
      throw VMDKError(
        .outOfRange, "volume \(startBytes)..<\(startBytes &+ size) is outside the disk (\(disk.capacityBytes) bytes)",
        file: name, offset: startBytes)
    }
    self.disk = disk
    self.startBytes = startBytes
    self.size = size
    self.name = name
  }

  /// A partition of the disk.
  public init(disk: Disk, partition: Partition, name: String) throws {
    try self.init(disk: disk, startBytes: partition.startBytes, size: partition.sizeBytes, name: name)
  }

  public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
    try checkRange(offset, buffer.count, size: size, name: name)
    try disk.read(at: startBytes + offset, into: buffer)
  }

  public var diskRange: (disk: Disk, start: UInt64)? { (disk, startBytes) }
}

/// A byte range of another volume.
public struct VolumeSlice: VolumeReader {
  public let base: any VolumeReader
  public let startBytes: UInt64
  public let size: UInt64
  public let name: String

  public init(_ base: any VolumeReader, startBytes: UInt64, size: UInt64, name: String? = nil) throws {
    guard startBytes <= base.size, size <= base.size - startBytes else {
      throw VMDKError(
        .outOfRange, "slice \(startBytes)..<\(startBytes &+ size) is outside the volume (\(base.size) bytes)",
        file: base.name, offset: startBytes)
    }
    self.base = base
    self.startBytes = startBytes
    self.size = size
    self.name = name ?? "\(base.name)@\(startBytes)"
  }

  public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
    try checkRange(offset, buffer.count, size: size, name: name)
    try base.read(at: startBytes + offset, into: buffer)
  }

  public var diskRange: (disk: Disk, start: UInt64)? {
    guard let (disk, start) = base.diskRange else { return nil }
    let (at, overflow) = start.addingReportingOverflow(startBytes)
    return overflow ? nil : (disk, at)
  }
}

/// A volume held in memory.
public struct MemoryVolume: VolumeReader {
  public let bytes: [UInt8]
  public let name: String
  public var size: UInt64 { UInt64(bytes.count) }

  public init(_ bytes: [UInt8], name: String = "memory") {
    self.bytes = bytes
    self.name = name
  }

  public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
    try checkRange(offset, buffer.count, size: size, name: name)
    guard buffer.count > 0 else { return }
    bytes.withUnsafeBytes { src in
      let start = Int(offset)
      buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[start..<(start + buffer.count)]))
    }
  }
}

/// Little-endian field readers over a byte array whose length the caller has checked.
extension Array where Element == UInt8 {
  @inline(__always) func le16(_ o: Int) -> UInt16 { UInt16(self[o]) | UInt16(self[o + 1]) << 8 }
  @inline(__always) func le32(_ o: Int) -> UInt32 {
    UInt32(self[o]) | UInt32(self[o + 1]) << 8 | UInt32(self[o + 2]) << 16 | UInt32(self[o + 3]) << 24
  }
  @inline(__always) func le64(_ o: Int) -> UInt64 { UInt64(le32(o)) | UInt64(le32(o + 4)) << 32 }
}
