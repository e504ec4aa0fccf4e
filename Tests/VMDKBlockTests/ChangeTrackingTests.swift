// Change tracking against a model: random writes, change IDs handed out, flushes, close and
// reopen, snapshots; for every ID, every byte outside the changed list is the byte the disk had
// when the ID was handed out (so a backup built from the list and the old copy equals the
// disk). Then every way the answer stops being trustworthy (sidecar deleted or damaged, CID
// changed behind our back, a writer that died, a process SIGKILLed while writing) must give
// `trackingReset` for older IDs, never a wrong list.

import Foundation
import Testing
import VMDKFormat
import VMDKTransport

@testable import VMDKBlock

/// A chain of monolithicSparse links built by hand (the snapshot command is elsewhere).
enum TrackedDisk {
  static let capacitySectors: UInt64 = 4096  // 2 MiB: 32 tracking blocks of 64 KiB
  static let uuid = "60 00 C2 9b 69 2f c9 76-74 c4 07 9e 10 87 3b 9e"

  /// A base with data in a few grains and a ddb.uuid.
  static func base(_ folder: TempFolder, name: String = "base.vmdk") throws -> String {
    var image = SparseImage(capacitySectors: capacitySectors)
    image.descriptor =
      descriptorText(
        createType: "monolithicSparse", cid: "0badcafe", extents: ["RW \(capacitySectors) SPARSE \"\(name)\""])
      + "ddb.uuid = \"\(uuid)\"\n"
    image.fill([0, 3, 17, 31])
    return try folder.write(name, image.build().bytes)
  }

  /// An empty child of `parent` (its current CID as parentCID).
  static func child(_ folder: TempFolder, of parent: String, name: String) throws -> String {
    let pcid = try cidOnDisk(parent) ?? 0xFFFF_FFFF
    var image = SparseImage(capacitySectors: capacitySectors)
    image.descriptor = descriptorText(
      createType: "monolithicSparse", cid: Descriptor.formatCID(UInt32.random(in: 1...0xFFFF_FFF0)),
      parentCID: Descriptor.formatCID(pcid), parentHint: PathResolver.baseName(parent),
      extents: ["RW \(capacitySectors) SPARSE \"\(name)\""])
    return try folder.write(name, image.build().bytes)
  }
}

/// The whole virtual disk.
func wholeDisk(_ disk: Disk) throws -> [UInt8] { try disk.read(at: 0, count: Int(disk.capacityBytes)) }

/// Checks the answer for `id` against the copy taken when it was handed out: every byte
/// outside the changed areas is unchanged, and the old copy patched with the changed areas
/// read now equals the disk.
func expectAnswerCovers(
  _ info: DiskChangeInfo, old: [UInt8], now: [UInt8], blockBytes: UInt64 = 65536, _ what: String,
  sourceLocation: SourceLocation = #_sourceLocation
) {
  var backup = old
  var covered = 0
  for a in info.changedArea {
    #expect(a.start % blockBytes == 0, "\(what): area \(a) not aligned", sourceLocation: sourceLocation)
    let lo = Int(a.start)
    let hi = Int(a.start + a.length)
    backup.replaceSubrange(lo..<hi, with: now[lo..<hi])
    covered += hi - lo
  }
  if backup != now {
    let at = zip(backup, now).enumerated().first { $0.element.0 != $0.element.1 }!.offset
    Issue.record(
      "\(what): byte \(at) changed but is not in the list \(info.changedArea)", sourceLocation: sourceLocation)
  }
  #expect(info.startOffset == 0 && info.length == UInt64(now.count), sourceLocation: sourceLocation)
}

@Suite(.timeLimit(.minutes(20))) struct ChangeTrackingTests {
  @Test func sidecarName() {
    #expect(ChangeTracking.sidecarName(for: "vm/disk.vmdk") == "vm/disk-changes.vtrack")
    #expect(ChangeTracking.sidecarName(for: "disk.VMDK") == "disk-changes.vtrack")
    #expect(ChangeTracking.sidecarName(for: "/a/b/raw.img") == "/a/b/raw.img-changes.vtrack")
  }

  @Test func blockSizeKeepsTheMapBounded() {
    #expect(TrackingHeader.blockBytes(forCapacity: 1 << 30) == 65536)
    #expect(TrackingHeader.blockBytes(forCapacity: 64 << 30) == 65536)
    #expect(TrackingHeader.blockBytes(forCapacity: (64 << 30) + 1) == 131072)
    for cap: UInt64 in [1, 1 << 40, 64 << 40, 1 << 62, UInt64.max / 2] {
      let b = TrackingHeader.blockBytes(forCapacity: cap)
      #expect(TrackingHeader.blockCount(capacity: cap, blockBytes: b) <= TrackingHeader.maxBlocks)
    }
  }

  /// The model run: for several seeds, a random program of writes, IDs, flushes, reopenings
  /// and snapshots; every ID is checked after every step that changes the disk.
  @Test(arguments: [1, 2, 3, 4] as [UInt64]) func randomProgramMatchesModel(seed: UInt64) throws {
    var rng = SeededRandom(seed: seed)
    let folder = try TempFolder()
    var path = try TrackedDisk.base(folder)
    try ChangeTracking.setEnabled(true, path: path)
    var disk = try Disk.open(path, options: writableOptions())
    var taken: [(id: String, copy: [UInt8])] = []
    var snapshots = 0
    func checkAll(_ step: Int) throws {
      let now = try wholeDisk(disk)
      for (id, copy) in taken {
        let info = try disk.queryChangedDiskAreas(since: id)
        expectAnswerCovers(info, old: copy, now: now, "seed \(seed) step \(step) since \(id)")
      }
    }
    for step in 0..<60 {
      switch rng.next() % 10 {
      case 0...4:
        let count = Int(rng.next() % 100_000) + 1
        let offset = rng.next() % (disk.capacityBytes - UInt64(count))
        let byte = UInt8(truncatingIfNeeded: rng.next() | 1)
        try disk.write(at: offset, [UInt8](repeating: byte, count: count))
      case 5, 6:
        let id = try #require(try disk.currentChangeID())
        #expect(id.hasPrefix(TrackedDisk.uuid + "/"))
        taken.append((id, try wholeDisk(disk)))
        // Nothing changed since an ID just handed out.
        #expect(try disk.queryChangedDiskAreas(since: id).changedArea.isEmpty)
      case 7:
        try disk.flush()
      case 8:
        try disk.close()
        disk = try Disk.open(path, options: writableOptions())
        try checkAll(step)
      default:
        guard snapshots < 3 else { continue }
        snapshots += 1
        try disk.close()
        let before = try #require(try Disk.open(path).currentChangeID())
        let child = try TrackedDisk.child(folder, of: path, name: "child\(snapshots).vmdk")
        try ChangeTracking.didCreateSnapshot(parentPath: path, childPath: child)
        path = child
        disk = try Disk.open(path, options: writableOptions())
        // Each snapshot gets a new change ID; the child goes on tracking.
        let after = try #require(try disk.currentChangeID())
        #expect(after != before)
        #expect(try disk.queryChangedDiskAreas(since: before).changedArea.isEmpty)
        try checkAll(step)
      }
      if step % 3 == 2 { try checkAll(step) }
    }
    try checkAll(60)
    try disk.close()
    // After close, a read-only open answers the same from the file.
    let reader = try Disk.open(path)
    let now = try wholeDisk(reader)
    for (id, copy) in taken {
      expectAnswerCovers(try reader.queryChangedDiskAreas(since: id), old: copy, now: now, "reopened, since \(id)")
    }
    #expect(taken.count > 3)
  }

  /// A query from an offset is the same list clipped there; "*" lists what block status calls
  /// data; IDs of the wrong shape or another disk are invalid arguments.
  @Test func queryShapes() throws {
    let folder = try TempFolder()
    let path = try TrackedDisk.base(folder)
    try ChangeTracking.setEnabled(true, path: path)
    let disk = try Disk.open(path, options: writableOptions())
    let id = try #require(try disk.currentChangeID())
    try disk.write(at: 100_000, [UInt8](repeating: 9, count: 300_000))
    let all = try disk.queryChangedDiskAreas(since: id)
    #expect(all.changedArea == [ChangedArea(start: 65536, length: 6 * 65536)])
    let tail = try disk.queryChangedDiskAreas(since: id, startOffset: 200_000)
    #expect(tail.startOffset == 200_000 && tail.length == disk.capacityBytes - 200_000)
    #expect(tail.changedArea == [ChangedArea(start: 200_000, length: 7 * 65536 - 200_000)])
    let star = try disk.queryChangedDiskAreas(since: "*")
    var expected: [ChangedArea] = []
    for s in try disk.blockStatus() where s.present && s.data {
      let lo = s.start / 65536 * 65536
      let hi = (s.start + s.length + 65535) / 65536 * 65536
      if let l = expected.last, l.start + l.length >= lo {
        expected[expected.count - 1].length = max(hi, l.start + l.length) - l.start
      } else {
        expected.append(ChangedArea(start: lo, length: hi - lo))
      }
    }
    #expect(star.changedArea == expected && !expected.isEmpty)
    for bad in ["", "nonsense", "\(TrackedDisk.uuid)/", "\(TrackedDisk.uuid)/x", "12/3"] {
      expectCode(.invalidArgument) { _ = try disk.queryChangedDiskAreas(since: bad) }
    }
    expectCode(.invalidArgument) {
      _ = try disk.queryChangedDiskAreas(since: "11 22 33 44 55 66 77 88-99 aa bb cc dd ee ff 00/5")
    }
    expectCode(.invalidArgument) { _ = try disk.queryChangedDiskAreas(since: id, startOffset: disk.capacityBytes + 1) }
    try disk.close()
  }

  /// Tracking off: no ID, and older IDs cannot be answered. On again: a new epoch.
  @Test func offAndOnAgain() throws {
    let folder = try TempFolder()
    let path = try TrackedDisk.base(folder)
    #expect(try Disk.open(path).currentChangeID() == nil)
    try ChangeTracking.setEnabled(true, path: path)
    #expect(FileManager.default.fileExists(atPath: folder.path("base-changes.vtrack")))
    let first = try #require(try Disk.open(path).currentChangeID())
    try ChangeTracking.setEnabled(true, path: path)  // already on: the same epoch
    #expect(try Disk.open(path).currentChangeID() == first)
    try ChangeTracking.setEnabled(false, path: path)
    #expect(!FileManager.default.fileExists(atPath: folder.path("base-changes.vtrack")))
    #expect(try Disk.open(path).currentChangeID() == nil)
    expectCode(.trackingReset) { _ = try Disk.open(path).queryChangedDiskAreas(since: first) }
    try ChangeTracking.setEnabled(true, path: path)
    let second = try #require(try Disk.open(path).currentChangeID())
    #expect(second != first)
    expectCode(.trackingReset) { _ = try Disk.open(path).queryChangedDiskAreas(since: first) }
    #expect(try Disk.open(path).queryChangedDiskAreas(since: second).changedArea.isEmpty)
  }

  /// Raw images have no CID: tracking them is refused.
  @Test func rawRefused() throws {
    let folder = try TempFolder()
    let path = try folder.write("disk.img", [UInt8](repeating: 1, count: 1 << 20))
    expectCode(.notSupported) { try ChangeTracking.setEnabled(true, path: path) }
  }

  // MARK: Resets

  enum Breakage: String, CaseIterable, Sendable {
    case sidecarDeleted, headerByteFlipped, mapByteFlipped, sidecarTruncated, cidPatched, writerNotClosed
  }

  /// Each way the tracking stops being trustworthy: the old ID answers trackingReset, for a
  /// reader and for a writer; a writable open (or currentChangeID) restarts tracking, whose
  /// new ID then answers correctly.
  @Test(arguments: Breakage.allCases) func resetCases(_ breakage: Breakage) throws {
    let folder = try TempFolder()
    let path = try TrackedDisk.base(folder)
    let sidecar = folder.path("base-changes.vtrack")
    try ChangeTracking.setEnabled(true, path: path)
    var disk: Disk? = try Disk.open(path, options: writableOptions())
    try disk!.write(at: 0, [1, 2, 3])
    try disk!.close()
    let old = try #require(try Disk.open(path).currentChangeID())
    #expect(try Disk.open(path).queryChangedDiskAreas(since: old).changedArea.isEmpty)
    switch breakage {
    case .sidecarDeleted:
      try FileManager.default.removeItem(atPath: sidecar)
    case .headerByteFlipped:
      try flipByte(sidecar, at: 60)
    case .mapByteFlipped:
      try flipByte(sidecar, at: 512 + 3)
    case .sidecarTruncated:
      try FileHandle(forUpdatingAtPath: sidecar)!.truncate(atOffset: 600)
    case .cidPatched:
      // What a tool that does not track does: a new CID in the descriptor.
      let cid = Descriptor.formatCID(try #require(try cidOnDisk(path)))
      try patch(path, "CID=\(cid)", "CID=\(cid == "12345678" ? "87654321" : "12345678")")
    case .writerNotClosed:
      disk = try Disk.open(path, options: writableOptions())
      try disk!.write(at: 70_000, [9])
      disk = nil  // gone without close: the sidecar stays dirty
    }
    expectCode(.trackingReset) { _ = try Disk.open(path).queryChangedDiskAreas(since: old) }
    let status = try Disk.open(path).changeTrackingStatus()
    if breakage == .sidecarDeleted {
      #expect(!status.enabled)
      #expect(try Disk.open(path).currentChangeID() == nil)
      return
    }
    #expect(status.enabled && status.changeID == nil && status.problem != nil)
    // A writable open restarts tracking; the old ID stays unanswerable, the new one works.
    let writer = try Disk.open(path, options: writableOptions())
    expectCode(.trackingReset) { _ = try writer.queryChangedDiskAreas(since: old) }
    let fresh = try #require(try writer.currentChangeID())
    #expect(fresh != old)
    let copy = try wholeDisk(writer)
    try writer.write(at: 200_000, [UInt8](repeating: 5, count: 70_000))
    try writer.close()
    let reader = try Disk.open(path)
    let info = try reader.queryChangedDiskAreas(since: fresh)
    expectAnswerCovers(info, old: copy, now: try wholeDisk(reader), "after restart")
    #expect(info.changedArea == [ChangedArea(start: 196_608, length: 2 * 65536)])
    expectCode(.trackingReset) { _ = try reader.queryChangedDiskAreas(since: old) }
  }

  /// A reader (no writer) restarts an untrustworthy tracking itself when asked for an ID.
  @Test func readerRestartsOnCurrentChangeID() throws {
    let folder = try TempFolder()
    let path = try TrackedDisk.base(folder)
    try ChangeTracking.setEnabled(true, path: path)
    let old = try #require(try Disk.open(path).currentChangeID())
    try flipByte(folder.path("base-changes.vtrack"), at: 512)
    let reader = try Disk.open(path)
    let fresh = try #require(try reader.currentChangeID())
    #expect(fresh != old)
    #expect(try reader.queryChangedDiskAreas(since: fresh).changedArea.isEmpty)
    expectCode(.trackingReset) { _ = try reader.queryChangedDiskAreas(since: old) }
  }

  /// While another open writes, a reader is told so, not given a reset or a stale list.
  @Test func queryDuringAnotherWriterIsLocked() throws {
    let folder = try TempFolder()
    let path = try TrackedDisk.base(folder)
    try ChangeTracking.setEnabled(true, path: path)
    let old = try #require(try Disk.open(path).currentChangeID())
    let writer = try Disk.open(path, options: writableOptions())
    try writer.write(at: 0, [1])
    expectCode(.alreadyLocked) { _ = try Disk.open(path).queryChangedDiskAreas(since: old) }
    try writer.close()
    #expect(try Disk.open(path).queryChangedDiskAreas(since: old).changedArea == [ChangedArea(start: 0, length: 65536)])
  }

  /// A process SIGKILLed at a random moment while writing (with flushes now and then): the
  /// next query for an older ID is trackingReset or a list that covers every changed byte;
  /// never a wrong list.
  @Test(arguments: [11, 12, 13, 14, 15, 16] as [UInt64]) func killedWriter(seed: UInt64) async throws {
    let folder = try TempFolder()
    let path = try TrackedDisk.base(folder)
    try ChangeTracking.setEnabled(true, path: path)
    var ids: [(String, [UInt8])] = []
    do {
      let d = try Disk.open(path, options: writableOptions())
      ids.append((try #require(try d.currentChangeID()), try wholeDisk(d)))
      try d.write(at: 123_456, [UInt8](repeating: 3, count: 100_000))
      ids.append((try #require(try d.currentChangeID()), try wholeDisk(d)))
      try d.close()
    }
    await #expect(processExitsWith: .signal(SIGKILL)) { [path = path as String, seed = seed as UInt64] in
      var rng = SeededRandom(seed: seed)
      var o = OpenOptions()
      o.writable = true
      guard let disk = try? Disk.open(path, options: o) else { exit(2) }
      let delay = UInt32(rng.next() % 40_000)
      var started = false
      while true {
        let count = Int(rng.next() % 100_000) + 1
        let offset = rng.next() % (disk.capacityBytes - UInt64(count))
        do {
          try disk.write(at: offset, [UInt8](repeating: UInt8(truncatingIfNeeded: rng.next()), count: count))
          if rng.next() % 4 == 0 { try disk.flush() }
        } catch {
          exit(3)
        }
        if !started {
          started = true
          Thread.detachNewThread {
            usleep(delay)
            kill(getpid(), SIGKILL)
          }
        }
      }
    }
    let reader = try Disk.open(path)
    let now = try wholeDisk(reader)
    for (id, copy) in ids {
      do {
        let info = try reader.queryChangedDiskAreas(since: id)
        expectAnswerCovers(info, old: copy, now: now, "seed \(seed), since \(id) after the kill")
      } catch let e as VMDKError {
        #expect(e.code == .trackingReset, "\(e)")
      }
    }
    // The next writer restarts or goes on; either way the disk stays usable and tracked.
    let writer = try Disk.open(path, options: writableOptions())
    let id = try #require(try writer.currentChangeID())
    try writer.write(at: 0, [1])
    try writer.close()
    #expect(try Disk.open(path).queryChangedDiskAreas(since: id).changedArea == [ChangedArea(start: 0, length: 65536)])
  }

  /// A damaged sidecar is "damaged", whatever is cut or changed: truncated at every header
  /// field boundary and inside the map, or claiming a map larger than the cap (refused before
  /// anything is allocated).
  @Test func hostileSidecars() throws {
    let folder = try TempFolder()
    var state = TrackingState.fresh(
      capacityBytes: 2 << 20, epochStart: 1000, cid: 0x1234_5678, uuid: TrackedDisk.uuid, reason: .enabled)
    state.map[3] = 0
    let path = folder.path("x-changes.vtrack")
    try TrackingFile.create(state, at: path)
    let good = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    guard case .ok(let back) = try TrackingFile.load(path) else {
      Issue.record("a valid sidecar does not load")
      return
    }
    #expect(
      back.header
        == {
          var h = state.header
          h.mapCRC = back.header.mapCRC
          return h
        }())
    for cut in [0, 4, 8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 68, 72, 80, 144, 508, 511, 512, 513, good.count - 1] {
      try folder.write("x-changes.vtrack", Array(good.prefix(cut)))
      guard case .damaged = try TrackingFile.load(path) else {
        Issue.record("truncated at \(cut): not damaged")
        continue
      }
    }
    // A header that claims 2^40 blocks, with a correct checksum: damaged, nothing allocated.
    var huge = state.header
    huge.capacityBytes = 1 << 56
    huge.blockCount = 1 << 40
    try folder.write("x-changes.vtrack", huge.serialized())
    guard case .damaged(let why) = try TrackingFile.load(path) else {
      Issue.record("a huge map was accepted")
      return
    }
    #expect(why.contains("block size"))
    // A map entry past the current sequence.
    var ahead = state
    ahead.map[5] = 7
    try FileManager.default.removeItem(atPath: path)
    try TrackingFile.create(ahead, at: path)
    guard case .damaged = try TrackingFile.load(path) else {
      Issue.record("an entry after the current sequence was accepted")
      return
    }
  }

  /// The sidecar holds the block map in a bounded file: 512 bytes of header and 4 bytes a block.
  @Test func sidecarSize() throws {
    let folder = try TempFolder()
    let path = try TrackedDisk.base(folder)
    try ChangeTracking.setEnabled(true, path: path)
    let size = try FileManager.default.attributesOfItem(atPath: folder.path("base-changes.vtrack"))[.size] as? Int
    #expect(size == 512 + 32 * 4)
  }
}

func flipByte(_ path: String, at offset: UInt64) throws {
  let h = try #require(FileHandle(forUpdatingAtPath: path))
  defer { try? h.close() }
  try h.seek(toOffset: offset)
  let b = try #require(try h.read(upToCount: 1)).first!
  try h.seek(toOffset: offset)
  try h.write(contentsOf: Data([b ^ 0x40]))
}

/// Replaces `old` with `new` (same length) in the first 64 KiB of a file.
func patch(_ path: String, _ old: String, _ new: String) throws {
  let h = try #require(FileHandle(forUpdatingAtPath: path))
  defer { try? h.close() }
  let head = Array(try h.read(upToCount: 64 << 10) ?? Data())
  let needle = Array(old.utf8)
  let at = try #require(
    (0...(head.count - needle.count)).first { head[$0..<($0 + needle.count)].elementsEqual(needle) })
  try h.seek(toOffset: UInt64(at))
  try h.write(contentsOf: Data(new.utf8))
}
