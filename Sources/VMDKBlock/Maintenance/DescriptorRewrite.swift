// Rewriting the top link's descriptor in place: a disk database key (metadata), or the parent
// a snapshot names (rebase). The same path as the CID written on the first write
// (LinkWriter.writeDescriptor): inside the embedded descriptor's sectors, or a temporary file
// synced and renamed over a separate descriptor. Metadata is not content: the CID stays.

import VMDKFormat
import VMDKTransport

extension Disk {
  /// The top link's descriptor as this handle last wrote it (or as read at open).
  public var currentDescriptor: Descriptor {
    writer?.state.withLock { $0.descriptor } ?? top.descriptor
  }

  /// Applies `change` to the top link's descriptor and writes it. The disk must be open
  /// writable; the CID written by an earlier write of this open is kept.
  public func rewriteDescriptor(_ change: (inout Descriptor) throws -> Void) throws {
    guard let writer else {
      throw VMDKError(
        .fileReadOnly, "the disk was opened read-only; open it with OpenOptions.writable to change it", file: top.path)
    }
    guard top.kind == .vmdk, top.hasDescriptor else {
      throw VMDKError(.notSupported, "the disk has no descriptor to change (\(top.createType))", file: top.path)
    }
    try writer.state.withLock { state in
      guard !state.closed else { throw VMDKError(.invalidArgument, "the disk was closed", file: top.path) }
      var d = state.descriptor ?? top.descriptor
      try change(&d)
      try writer.writeDescriptor(d, locks: &state.locks)
      state.descriptor = d
    }
  }

  /// Checks a disk database key and value as VMware writes them (`ddb.key = "value"`).
  static func checkMetadata(key: String, value: String?) throws -> String {
    let full = key.lowercased().hasPrefix("ddb.") ? key : "ddb." + key
    guard full.count > 4, full.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
    else {
      throw VMDKError(.invalidArgument, "metadata key \(key.debugDescription): letters, digits, '.', '_' and '-' only")
    }
    if let value, value.unicodeScalars.contains(where: { $0 == "\"" || $0.value < 0x20 || $0.value == 0x7F }) {
      throw VMDKError(
        .invalidArgument, "metadata value \(value.debugDescription): no double quotes or control characters")
    }
    return full
  }

  /// Sets (`value`) or deletes (nil) the disk database key `key` (with or without `ddb.`) in
  /// the descriptor of the disk at `path`'s top link. Only that link is opened (its parents
  /// need not be there). Returns whether the key was there before.
  @discardableResult
  public static func setMetadata(path: String, key: String, value: String?, options: OpenOptions = OpenOptions())
    throws -> Bool
  {
    let full = try checkMetadata(key: key, value: value)
    try Maintenance.requireLocal(path)
    var o = options
    o.writable = true
    o.singleLink = true
    // The disk database is not content: snapshots read the same after the change.
    o.allowWritingUnderSnapshots = true
    let disk = try Disk.open(path, options: o)
    let had = disk.top.descriptor.ddb(full) != nil
    if value == nil && !had { return false }
    try disk.rewriteDescriptor { d in
      if let value { d.setDDB(full, value) } else { d.removeDDB(full) }
    }
    try disk.close()
    return had
  }

  /// The top link's own value of a disk database key (nil when that link lacks it).
  public static func topMetadata(path: String, key: String, options: OpenOptions = OpenOptions()) throws -> String? {
    let full = try checkMetadata(key: key, value: nil)
    var o = options
    o.writable = false
    o.singleLink = true
    return try Disk.open(path, options: o).top.descriptor.ddb(full)
  }
}
