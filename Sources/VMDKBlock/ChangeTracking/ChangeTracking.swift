// Change tracking (what VMware calls CBT): the interface the rest of the toolkit uses.
// PLACEHOLDER: every call says "not implemented yet" until issue 4's tracking lands.

import VMDKTransport

/// One changed range of the virtual disk, in bytes.
public struct ChangedArea: Sendable, Equatable {
  public var start: UInt64
  public var length: UInt64
  public init(start: UInt64, length: UInt64) {
    self.start = start
    self.length = length
  }
}

/// vSphere's QueryChangedDiskAreas answer: the areas changed in
/// `[startOffset, startOffset + length)`.
public struct DiskChangeInfo: Sendable, Equatable {
  public var startOffset: UInt64
  public var length: UInt64
  public var changedArea: [ChangedArea]
  public init(startOffset: UInt64, length: UInt64, changedArea: [ChangedArea]) {
    self.startOffset = startOffset
    self.length = length
    self.changedArea = changedArea
  }
}

public enum ChangeTracking {
  /// Turns tracking on or off for the disk at `path` (its top link).
  public static func setEnabled(_ enabled: Bool, path: String, options: OpenOptions = OpenOptions()) throws {
    throw VMDKError(.notSupported, "change tracking is not implemented yet", file: path)
  }

  /// Called after a snapshot `childPath` of `parentPath` was created: the child goes on tracking
  /// with a new change ID.
  public static func didCreateSnapshot(parentPath: String, childPath: String) throws {}
}

extension Disk {
  /// The current change ID (`<disk uuid>/<sequence>`), or nil when tracking is off.
  public func currentChangeID() throws -> String? { nil }

  /// The areas changed since `changeID` (`"*"`: every allocated area), from `startOffset` to
  /// the end of the disk. Throws `trackingReset` when the answer cannot be trusted.
  public func queryChangedDiskAreas(since changeID: String, startOffset: UInt64 = 0) throws -> DiskChangeInfo {
    throw VMDKError(.notSupported, "change tracking is not implemented yet", file: top.path)
  }
}
