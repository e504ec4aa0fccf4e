// TrackingSession: the change tracking of a disk open for writing. It holds the sidecar open
// and locked for the whole open, keeps the block map in memory, marks the file dirty (synced)
// before the first write after each clean point, records every write's blocks before the
// write goes ahead, and writes the map back clean, with the disk's new CID, on flush.
// It lives in LinkWriter.State, so the writer's mutex serializes it with the writes.

import VMDKTransport

final class TrackingSession: @unchecked Sendable {
  let path: String
  let file: LocalFile
  let lock: FileLock
  var state: TrackingState
  /// The sequence the next write records. Always above every sequence handed out (as a change
  /// ID or in the file), so that a query since a handed-out ID sees every later write.
  var writeSequence: UInt64
  /// Whether the file on disk says dirty (set before the first write after a clean point).
  var dirtyOnDisk = false

  init(path: String, file: LocalFile, lock: FileLock, state: TrackingState) {
    self.path = path
    self.file = file
    self.lock = lock
    self.state = state
    self.writeSequence = state.header.sequence + 1
  }

  /// The change ID of the disk as it is now; later writes get a higher sequence.
  func publish() -> UInt64 {
    let current = state.header.sequence
    if current == writeSequence { writeSequence += 1 }
    return current
  }

  /// Called before a write of `count` bytes at `offset` goes ahead: marks the file dirty (once
  /// per clean point, synced) and the blocks changed at the write sequence.
  func willWrite(offset: UInt64, count: UInt64) throws {
    let h = state.header
    guard writeSequence - h.epochStart < UInt64(UInt32.max) else {
      throw VMDKError(
        .failure,
        "the change sequence of this open ran out of room; close and reopen the disk (tracking then restarts)",
        file: path)
    }
    if !dirtyOnDisk {
      var dirty = h
      dirty.dirty = true
      try TrackingFile.writeHeader(dirty, to: file)
      dirtyOnDisk = true
      state.header.dirty = true
    }
    guard count > 0 else { return }
    let mark = UInt32(writeSequence - h.epochStart)
    let first = Int(offset / h.blockBytes)
    let last = Int((offset + count - 1) / h.blockBytes)
    for b in first...min(last, state.map.count - 1) { state.map[b] = mark }
    state.header.sequence = writeSequence
  }

  /// After the disk's own data was made durable: writes the map and a clean header with the
  /// disk's CID. The sequence written becomes visible to other processes, so it counts as
  /// handed out.
  func persist(cid: UInt32) throws {
    guard dirtyOnDisk else { return }
    state.header.dirty = false
    state.header.cid = cid
    try TrackingFile.write(&state, to: file)
    dirtyOnDisk = false
    _ = publish()
  }
}
