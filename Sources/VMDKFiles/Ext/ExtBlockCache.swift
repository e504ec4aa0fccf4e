// A bounded cache of metadata blocks (descriptor, inode-table, indirect, extent and directory
// blocks) shared by concurrent callers. File data never goes through it.

import VMDKBlock

final class ExtBlockCache: Sendable {
  /// The bound: this many blocks at most (the file system sizes it to 8 MiB of blocks).
  let capacity: Int

  private struct State {
    var blocks: [UInt64: [UInt8]] = [:]
    /// Insertion order, a ring: the oldest entry is evicted first.
    var ring: [UInt64] = []
    var next = 0
  }
  private let state = Locked(State())

  init(capacity: Int) {
    self.capacity = max(1, capacity)
  }

  func get(_ block: UInt64) -> [UInt8]? {
    state.withLock { $0.blocks[block] }
  }

  func put(_ block: UInt64, _ bytes: [UInt8]) {
    state.withLock { s in
      if s.blocks[block] != nil { return }
      if s.ring.count < capacity {
        s.ring.append(block)
      } else {
        s.blocks[s.ring[s.next]] = nil
        s.ring[s.next] = block
        s.next = (s.next + 1) % capacity
      }
      s.blocks[block] = bytes
    }
  }
}
