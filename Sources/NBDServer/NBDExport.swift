// NBDExport: one disk served under one name, and what the server tells clients about it (its
// transmission flags, block sizes, meta contexts), all derived from the open `Disk`.

import VMDKBlock

/// A disk served under a name.
public final class NBDExport: Sendable {
  /// The name clients ask for (NBD_OPT_GO, NBD_OPT_EXPORT_NAME); listed by NBD_OPT_LIST.
  public let name: String
  /// A line for people (NBD_INFO_DESCRIPTION), or nil.
  public let description: String?
  /// The disk. Its handle is shared by every connection to this export.
  public let disk: Disk
  /// Whether clients may write: the disk was opened writable.
  public let isWritable: Bool

  /// Serves `disk` as `name`; writable exactly when the disk was opened writable.
  public init(name: String, disk: Disk, description: String? = nil) {
    self.name = name
    self.disk = disk
    self.description = description
    self.isWritable = disk.isWritable
  }

  /// Size in bytes.
  public var size: UInt64 { disk.capacityBytes }

  /// The transmission flags, true to what the server does: every connection shares one
  /// `Disk`, so a FLUSH on one makes every connection's completed writes durable
  /// (multi-conn); CACHE is accepted (and does nothing: reads are served from the files);
  /// DF is offered only with structured replies.
  public func transmissionFlags(structuredReplies: Bool) -> UInt16 {
    let p = NBDProtocol.self
    var flags = p.transHasFlags | p.transSendFlush | p.transCanMultiConn | p.transSendCache
    if structuredReplies { flags |= p.transSendDF }
    if isWritable {
      flags |= p.transSendFUA | p.transSendTrim | p.transSendWriteZeroes
    } else {
      flags |= p.transReadOnly
    }
    return flags
  }

  /// The block sizes of NBD_INFO_BLOCK_SIZE: any byte granularity works (partial sectors are
  /// read and merged by the library), 4 KiB is preferred, 32 MiB is the largest payload.
  public static let blockSizes: (minimum: UInt32, preferred: UInt32, maximum: UInt32) = (
    1, 4096, UInt32(NBDProtocol.maxPayloadBytes)
  )

  /// The meta contexts this server has, in the order of their ids (1, 2).
  public static let metaContexts = [NBDProtocol.baseAllocation, NBDProtocol.qemuAllocationDepth]

  /// The context id of a context name (its index + 1).
  static func contextID(_ name: String) -> UInt32? {
    metaContexts.firstIndex(of: name).map { UInt32($0 + 1) }
  }
}

/// A context's value for one block status run: base:allocation's hole and zero flags as
/// qemu-nbd reports them (hole: not stored as data; zero: reads as zeros), or
/// qemu:allocation-depth's depth (0: in no link; 1: the top link; 2: its parent; ...).
public func nbdContextValue(_ context: String, _ status: BlockStatus) -> UInt32 {
  if context == NBDProtocol.qemuAllocationDepth {
    return status.present ? UInt32(clamping: status.depth + 1) : 0
  }
  return (status.data ? 0 : NBDProtocol.stateHole) | (status.zero ? NBDProtocol.stateZero : 0)
}

/// The extents of `[start, end)` for `context`, from block status runs (in order, covering the
/// range, possibly starting before `start` and ending after `end`), merged where the values
/// are equal, at most `maxExtents` of them (the last one then ends where the runs stop).
public func nbdExtents(
  _ runs: [BlockStatus], start: UInt64, end: UInt64, context: String, maxExtents: Int
) -> [NBDExtent] {
  var out: [NBDExtent] = []
  var position = start
  for run in runs {
    let runEnd = run.start &+ run.length
    guard runEnd > position, run.start < end, run.length > 0 else { continue }
    // Runs must be contiguous; a gap would mean a bug below, so stop there.
    guard run.start <= position else { break }
    let to = min(runEnd, end)
    let value = nbdContextValue(context, run)
    if out.count >= maxExtents, out.last?.flags != value { break }
    nbdAppendExtent(&out, length: to - position, flags: value)
    position = to
    if position >= end { break }
  }
  return out
}
