// Restoring into a disk that already exists (an NBD export opened writable): the converter's
// writes go straight into it, and every range it skips (holes and zeros of the source) is
// zeroed, so the whole disk ends up equal to the source. There is no temporary name to rename:
// only data that was read correctly is ever written, but a failed restore leaves the target
// partly written, as any restore in place does.

import VMDKTransport

/// An `ImageWriter` over a disk opened writable.
public final class RestoreWriter: ImageWriter {
  public let disk: Disk
  /// How many bytes of the target the restore covers (the source's size).
  public let capacityBytes: UInt64
  /// Everything before this offset has been written or zeroed.
  private var zeroedUpTo: UInt64 = 0
  private var finished = false

  /// Restores `capacityBytes` bytes into `disk` (which must be at least that large).
  public init(disk: Disk, capacityBytes: UInt64) throws {
    guard disk.capacityBytes >= capacityBytes else {
      throw VMDKError(
        .invalidArgument,
        "the target holds \(disk.capacityBytes) bytes; the source has \(capacityBytes)", file: disk.top.path)
    }
    self.disk = disk
    self.capacityBytes = capacityBytes
  }

  public func write(at offset: UInt64, _ data: UnsafeRawBufferPointer) throws {
    try zero(upTo: offset)
    try disk.write(at: offset, data)
    zeroedUpTo = offset + UInt64(data.count)
  }

  /// Zeroes what is left, flushes and closes the target.
  public func commit() throws {
    guard !finished else { return }
    try zero(upTo: capacityBytes)
    try disk.close()
    finished = true
  }

  /// Nothing to remove: what was written stays (see the file comment).
  public func abort() { finished = true }

  private func zero(upTo end: UInt64) throws {
    guard end > zeroedUpTo else { return }
    try disk.writeZeroes(at: zeroedUpTo, count: end - zeroedUpTo)
    zeroedUpTo = end
  }
}
