// Change tracking (what VMware calls CBT): the public interface. A disk whose top link has a
// `NAME-changes.vtrack` sidecar (FORMAT.md) is tracked: every write through the library marks
// its blocks before it returns, change IDs are `<disk uuid>/<sequence>`, and a query since an
// ID lists the blocks written after that ID was handed out. Whenever the answer cannot be
// trusted (a writer died, a tool that does not track changed the CID, the sidecar is missing
// or damaged) a query for an older ID throws `trackingReset`, never a wrong list.

import Foundation
import VMDKFormat
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

/// What `vmdk-inspect info` shows about tracking; reading it never writes a file.
public struct ChangeTrackingStatus: Sendable, Equatable {
  /// Whether the disk has a tracking sidecar.
  public var enabled: Bool
  /// The current change ID, when tracking is on and can be trusted.
  public var changeID: String?
  /// Why tracking cannot be trusted now (the next writable open or `currentChangeID()`
  /// restarts it); nil when it can.
  public var problem: String?
  /// The sidecar's path (whether it exists or not).
  public var sidecarPath: String
  /// The tracking block size, when tracking is on and trusted.
  public var blockBytes: UInt64?
}

public enum ChangeTracking {
  /// The sidecar of the disk whose descriptor (top link) is `descriptorPath`: in the same
  /// folder, `NAME-changes.vtrack` where NAME is the file's name without `.vmdk`
  /// (`vm/disk.vmdk` -> `vm/disk-changes.vtrack`). Not `.vmdk`, so no VMware tool takes it for
  /// its `-ctk.vmdk`. A pure string function: rename and delete use it too.
  public static func sidecarName(for descriptorPath: String) -> String {
    let ns = descriptorPath as NSString
    let folder = ns.deletingLastPathComponent
    var base = ns.lastPathComponent
    if base.lowercased().hasSuffix(".vmdk") && base.count > 5 { base.removeLast(5) }
    let name = base + "-changes.vtrack"
    return folder.isEmpty ? name : (folder as NSString).appendingPathComponent(name)
  }

  /// Turns tracking on or off for the disk at `path` (its top link). The disk is opened
  /// writable (so no other writer runs meanwhile). On: a new sidecar whose epoch starts now
  /// (nothing when tracking is already on and trusted; a restart when it is not). Off: the
  /// sidecar is deleted. Raw images and links without a descriptor have no CID to reveal
  /// untracked writes and are refused with `notSupported`.
  public static func setEnabled(_ enabled: Bool, path: String, options: OpenOptions = OpenOptions()) throws {
    var o = options
    o.writable = true
    let disk = try Disk.open(path, options: o)
    if enabled {
      try disk.enableTracking()
    } else {
      try disk.disableTracking()
    }
    try disk.close()
  }

  /// Called after a snapshot `childPath` of `parentPath` was created (and before the child is
  /// written): when the parent is tracked, the child gets its own sidecar with the parent's
  /// block map, epoch and uuid, and the sequence one past the parent's, a new change ID that
  /// names the same content. IDs handed out on the parent before the snapshot stay answerable
  /// on the child. The parent's sidecar is left as it is (closed at its sequence). When the
  /// parent's tracking cannot be trusted, the child starts a new epoch. Nothing happens when
  /// the parent is not tracked.
  public static func didCreateSnapshot(parentPath: String, childPath: String) throws {
    guard access(sidecarName(for: parentPath), F_OK) == 0 else { return }
    var o = OpenOptions()
    o.allowExternalPaths = true  // the caller named both files itself
    let parent = try Disk.open(parentPath, options: o)
    let child = try Disk.open(childPath, options: o)
    guard child.top.kind == .vmdk, child.top.hasDescriptor else {
      throw VMDKError(.notSupported, "a snapshot without a descriptor cannot be tracked", file: childPath)
    }
    let view = try parent.trackingView(publishing: false)
    let cid = child.top.descriptor.cid ?? Descriptor.noParentCID
    let childUUID = child.diskUUID
    var state: TrackingState
    if case .live(let s) = view, s.header.capacityBytes == child.capacityBytes,
      childUUID.map({ normalizedUUID($0) == normalizedUUID(s.header.uuid) }) ?? true,
      s.header.sequence + 1 - s.header.epochStart < UInt64(UInt32.max)
    {
      state = s
      state.header.sequence += 1
      state.header.cid = cid
      state.header.dirty = false
    } else {
      var previous: UInt64? = nil
      var uuid = childUUID
      if case .untrusted(_, _, let p) = view, let p {
        previous = p.header.sequence
        uuid = uuid ?? p.header.uuid
      }
      if case .live(let s) = view {
        previous = s.header.sequence
        uuid = uuid ?? s.header.uuid
      }
      state = .fresh(
        capacityBytes: child.capacityBytes, epochStart: TrackingState.nextEpochStart(after: previous), cid: cid,
        uuid: uuid ?? CreateOptions.vmwareUUID(UUID()), reason: .parentNotTrusted)
    }
    try TrackingFile.create(state, at: sidecarName(for: child.top.path))
  }

  /// Splits `<uuid>/<sequence>`; `invalidArgument` when it is not that shape.
  static func parseChangeID(_ id: String, file: String) throws -> (uuid: String, sequence: UInt64) {
    guard let slash = id.lastIndex(of: "/"), let seq = UInt64(id[id.index(after: slash)...]),
      normalizedUUID(String(id[..<slash])).count == 32
    else {
      throw VMDKError(
        .invalidArgument, "\"\(id)\" is not a change ID (expected \"<disk uuid>/<sequence>\" or \"*\")", file: file)
    }
    return (String(id[..<slash]), seq)
  }

  static func changeID(_ s: TrackingState) -> String { "\(s.header.uuid)/\(s.header.sequence)" }
}

/// A uuid's 32 hex digits, lowercased, whatever the spacing.
func normalizedUUID(_ s: String) -> String {
  String(s.lowercased().filter { $0.isHexDigit })
}

/// What the sidecar says about a disk, checked against it.
enum TrackingView {
  case off
  /// Trusted: the in-memory state of this handle's writing session, or a clean file that
  /// matches the disk.
  case live(TrackingState)
  /// Present but not trustworthy: why, and the state when the file could be parsed.
  case untrusted(TrackingResetReason, String, TrackingState?)
}

extension Disk {
  /// The disk's uuid (`ddb.uuid`, as VMware reads the chain's database), when it is one.
  var diskUUID: String? {
    guard let u = metadata("uuid"), normalizedUUID(u).count == 32 else { return nil }
    return u
  }

  var sidecarPath: String { ChangeTracking.sidecarName(for: top.path) }

  /// The current change ID (`<disk uuid>/<sequence>`), or nil when tracking is off. Writes
  /// after this call get a higher sequence. When tracking cannot be trusted it is restarted
  /// here (a new epoch in the sidecar; older IDs then answer `trackingReset`), and the new ID
  /// is returned; `alreadyLocked` when another process is writing the disk.
  public func currentChangeID() throws -> String? {
    switch try trackingView(publishing: true) {
    case .off: return nil
    case .live(let s): return ChangeTracking.changeID(s)
    case .untrusted(let reason, _, let previous):
      return ChangeTracking.changeID(try restartTrackingFile(reason: reason, previous: previous))
    }
  }

  /// Whether tracking is on, the current change ID and what is wrong with it, without writing
  /// anything (for `info`).
  public func changeTrackingStatus() throws -> ChangeTrackingStatus {
    var status = ChangeTrackingStatus(enabled: false, changeID: nil, problem: nil, sidecarPath: sidecarPath)
    switch try trackingView(publishing: true) {
    case .off: break
    case .live(let s):
      status.enabled = true
      status.changeID = ChangeTracking.changeID(s)
      status.blockBytes = s.header.blockBytes
    case .untrusted(let reason, let why, _):
      status.enabled = true
      status.problem = "\(reason.text): \(why)"
    }
    return status
  }

  /// The areas changed since `changeID` (`"*"`: every allocated area), from `startOffset` to
  /// the end of the disk, in byte ranges aligned to the tracking block size (clipped to
  /// `startOffset` and the capacity) and merged. A malformed ID or one for another disk
  /// throws `invalidArgument`; an ID the tracking cannot answer (from before a reset, tracking
  /// off, the sidecar untrustworthy, or newer than the disk) throws `trackingReset`.
  public func queryChangedDiskAreas(since changeID: String, startOffset: UInt64 = 0) throws -> DiskChangeInfo {
    guard startOffset <= capacityBytes else {
      throw VMDKError(
        .invalidArgument, "start offset \(startOffset) is past the end of the disk (\(capacityBytes) bytes)",
        file: top.path)
    }
    let length = capacityBytes - startOffset
    if changeID == "*" {
      return DiskChangeInfo(
        startOffset: startOffset, length: length, changedArea: try allocatedAreas(from: startOffset))
    }
    let (uuid, sequence) = try ChangeTracking.parseChangeID(changeID, file: top.path)
    if let own = diskUUID, normalizedUUID(own) != normalizedUUID(uuid) {
      throw VMDKError(
        .invalidArgument, "change ID \(changeID) is for disk \(uuid); this disk is \(own)", file: top.path)
    }
    func reset(_ why: String) -> VMDKError {
      VMDKError(
        .trackingReset, "tracking was reset: a full backup is needed: change ID \(changeID): \(why)", file: top.path)
    }
    switch try trackingView(publishing: false) {
    case .off:
      throw reset("change tracking is off for this disk (no \(PathResolver.baseName(sidecarPath)))")
    case .untrusted(let reason, let why, _):
      throw reset("\(reason.text) (\(why))")
    case .live(let s):
      let h = s.header
      guard normalizedUUID(h.uuid) == normalizedUUID(uuid) else {
        throw reset("tracking restarted with disk uuid \(h.uuid) (\(h.reason.text))")
      }
      guard sequence >= h.epochStart else {
        throw reset("tracking restarted at sequence \(h.epochStart) because \(h.reason.text)")
      }
      guard sequence <= h.sequence else {
        throw reset(
          "it is newer than the disk's current sequence \(h.sequence) (were the disk and its tracking file restored from an older copy?)"
        )
      }
      return DiskChangeInfo(
        startOffset: startOffset, length: length,
        changedArea: Self.changedAreas(s, since: sequence, from: startOffset, capacity: capacityBytes))
    }
  }

  static func changedAreas(_ s: TrackingState, since sequence: UInt64, from start: UInt64, capacity: UInt64)
    -> [ChangedArea]
  {
    let bs = s.header.blockBytes
    let threshold = sequence - s.header.epochStart
    var out: [ChangedArea] = []
    var i = Int(start / bs)
    while i < s.map.count {
      guard UInt64(s.map[i]) > threshold else {
        i += 1
        continue
      }
      let begin = i
      while i < s.map.count && UInt64(s.map[i]) > threshold { i += 1 }
      let lo = max(UInt64(begin) * bs, start)
      let hi = min(UInt64(i) * bs, capacity)
      if hi > lo { out.append(ChangedArea(start: lo, length: hi - lo)) }
    }
    return out
  }

  /// Every range whose data some link stores (block status present and data), aligned out to
  /// the tracking block size (64 KiB when tracking is off), merged and clipped.
  func allocatedAreas(from start: UInt64) throws -> [ChangedArea] {
    var align = TrackingHeader.minBlockBytes
    if case .live(let s)? = try? trackingView(publishing: false) { align = s.header.blockBytes }
    var out: [ChangedArea] = []
    try blockStatus(offset: start) { run in
      guard run.present && run.data else { return }
      let lo = max(run.start / align * align, start)
      let hi = min((run.start + run.length + align - 1) / align * align, capacityBytes)
      guard hi > lo else { return }
      if let last = out.last, last.start + last.length >= lo {
        out[out.count - 1].length = max(last.start + last.length, hi) - last.start
      } else {
        out.append(ChangedArea(start: lo, length: hi - lo))
      }
    }
    return out
  }

  // MARK: The sidecar against the disk

  /// Why the state in a sidecar does not describe this disk now, or nil.
  func trackingProblem(_ s: TrackingState, cid: UInt32) -> (TrackingResetReason, String)? {
    let h = s.header
    if h.dirty { return (.uncleanShutdown, "the tracking file is marked dirty and no writer holds it") }
    if let own = diskUUID, normalizedUUID(own) != normalizedUUID(h.uuid) {
      return (.otherDisk, "the tracking file is for disk uuid \(h.uuid); this disk is \(own)")
    }
    if h.capacityBytes != capacityBytes {
      return (.otherDisk, "the tracking file is for \(h.capacityBytes) bytes; the disk has \(capacityBytes)")
    }
    if h.cid != cid {
      return (
        .cidChanged,
        "the tracking file was last written at CID \(Descriptor.formatCID(h.cid)); the disk's CID is \(Descriptor.formatCID(cid))"
      )
    }
    return nil
  }

  /// The top link's CID as its descriptor has it now (another process may have written since
  /// this handle was opened).
  func cidOnDiskNow() throws -> UInt32 {
    if writer != nil { return currentCID ?? Descriptor.noParentCID }
    var o = OpenOptions()
    o.singleLink = true
    o.format = .vmdk
    o.allowExternalPaths = options.allowExternalPaths
    let link = try DiskLink.open(top.path, options: o, cache: TableCache(budgetBytes: 1 << 20))
    return link.descriptor.cid ?? Descriptor.noParentCID
  }

  /// The tracking state: from this handle's writing session when there is one, else from the
  /// sidecar, checked against the disk. `alreadyLocked` when the sidecar is not trustworthy
  /// because another open is writing the disk right now.
  func trackingView(publishing: Bool) throws -> TrackingView {
    if let writer {
      let live: TrackingState? = writer.state.withLock { state in
        guard !state.closed, let session = state.tracking else { return nil }
        if publishing { _ = session.publish() }
        return session.state
      }
      if let live { return .live(live) }
    }
    guard top.kind == .vmdk, top.hasDescriptor else { return .off }
    let path = sidecarPath
    let view: TrackingView
    switch try TrackingFile.load(path) {
    case .missing: return .off
    case .damaged(let why): view = .untrusted(.damaged, why, nil)
    case .ok(let s):
      guard let (reason, why) = trackingProblem(s, cid: try cidOnDiskNow()) else { return .live(s) }
      view = .untrusted(reason, why, s)
    }
    // A writer in the middle of its session leaves the file dirty (or the CID ahead of it):
    // that is not a reset, only not answerable now.
    if Self.sidecarIsLocked(path) {
      throw VMDKError(
        .alreadyLocked,
        "the disk is open for writing elsewhere; its changes can be queried after that writer closes it",
        file: path)
    }
    return view
  }

  static func sidecarIsLocked(_ path: String) -> Bool {
    do {
      _ = try FileLock(path: path)
      return false
    } catch let e as VMDKError where e.code == .alreadyLocked {
      return true
    } catch {
      return false
    }
  }

  /// Restarts tracking in the sidecar (a new epoch, nothing changed since), under its lock,
  /// in place; returns the new state. For handles that are not writing.
  func restartTrackingFile(reason: TrackingResetReason, previous: TrackingState?) throws -> TrackingState {
    let path = sidecarPath
    let lock = try FileLock(path: path)
    let file = try LocalFile(path: path, writable: true)
    // Read again under the lock: another process may have restarted it meanwhile.
    var known = previous?.header.sequence
    var uuid = previous?.header.uuid
    if case .ok(let s) = try TrackingFile.load(file) {
      if trackingProblem(s, cid: try cidOnDiskNow()) == nil { return s }
      known = max(known ?? 0, s.header.sequence)
      uuid = uuid ?? s.header.uuid
    }
    var state = TrackingState.fresh(
      capacityBytes: capacityBytes, epochStart: TrackingState.nextEpochStart(after: known),
      cid: try cidOnDiskNow(), uuid: diskUUID ?? uuid ?? CreateOptions.vmwareUUID(UUID()), reason: reason)
    try TrackingFile.write(&state, to: file)
    withExtendedLifetime(lock) {}
    return state
  }

  // MARK: Writing sessions

  /// Starts tracking for a disk opened writable whose top link has a sidecar: checks it
  /// (restarting it when it cannot be trusted) and keeps it open and locked until close.
  func startChangeTracking() throws {
    guard let writer, top.kind == .vmdk, top.hasDescriptor else { return }
    let path = sidecarPath
    guard access(path, F_OK) == 0 else { return }
    // A reader restarting the file holds its lock for a moment.
    var lock: FileLock? = nil
    for attempt in 0..<100 {
      do {
        lock = try FileLock(path: path)
        break
      } catch let e as VMDKError where e.code == .alreadyLocked && attempt < 99 {
        usleep(10_000)
      }
    }
    guard let lock else { return }
    let file = try LocalFile(path: path, writable: true)
    let cid = top.descriptor.cid ?? Descriptor.noParentCID
    var loaded: TrackingState? = nil
    var restart: (TrackingResetReason, TrackingState?)? = nil
    switch try TrackingFile.load(file) {
    case .missing: return
    case .damaged: restart = (.damaged, nil)
    case .ok(let s):
      loaded = s
      if let (reason, _) = trackingProblem(s, cid: cid) {
        restart = (reason, s)
      } else if s.header.sequence + 1 - s.header.epochStart >= UInt64(UInt32.max) {
        restart = (.sequenceOverflow, s)
      }
    }
    var state: TrackingState
    if let loaded, restart == nil {
      state = loaded
    } else {
      let (reason, previous) = restart ?? (.damaged, nil)
      state = .fresh(
        capacityBytes: capacityBytes, epochStart: TrackingState.nextEpochStart(after: previous?.header.sequence),
        cid: cid, uuid: diskUUID ?? previous?.header.uuid ?? CreateOptions.vmwareUUID(UUID()), reason: reason)
      try TrackingFile.write(&state, to: file)
    }
    let session = TrackingSession(path: path, file: file, lock: lock, state: state)
    writer.state.withLock { $0.tracking = session }
  }

  /// setEnabled(true) on a disk opened writable.
  func enableTracking() throws {
    guard let writer else { return }
    guard top.kind == .vmdk, top.hasDescriptor else {
      throw VMDKError(
        .notSupported,
        "change tracking needs a VMDK descriptor (its CID reveals writes by tools that do not track); this is a \(top.createType) image",
        file: top.path)
    }
    if writer.state.withLock({ $0.tracking != nil }) { return }
    let path = sidecarPath
    let state = TrackingState.fresh(
      capacityBytes: capacityBytes, epochStart: TrackingState.nextEpochStart(after: nil),
      cid: currentCID ?? Descriptor.noParentCID, uuid: diskUUID ?? CreateOptions.vmwareUUID(UUID()),
      reason: .enabled)
    try TrackingFile.create(state, at: path)
    let lock = try FileLock(path: path)
    let file = try LocalFile(path: path, writable: true)
    let session = TrackingSession(path: path, file: file, lock: lock, state: state)
    writer.state.withLock { $0.tracking = session }
  }

  /// setEnabled(false) on a disk opened writable.
  func disableTracking() throws {
    guard let writer else { return }
    writer.state.withLock { $0.tracking = nil }
    let path = sidecarPath
    if unlink(path) != 0 && errno != ENOENT {
      throw VMDKError(
        .fileAccess, "cannot delete the change-tracking file: \(String(cString: strerror(errno)))", file: path)
    }
  }
}
