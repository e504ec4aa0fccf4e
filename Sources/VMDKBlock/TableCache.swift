// A bounded cache of grain directory pages and grain tables, shared by every extent of a disk
// so that the bound holds whatever the number of extents. Safe for concurrent readers.

/// Cached little-endian tables (u32 or u64 entries), keyed by (extent, byte offset).
final class TableCache: Sendable {
  struct Key: Hashable {
    let extent: ObjectIdentifier
    let offset: UInt64
  }
  private struct Entry {
    let table: [UInt64]
    var lastUse: UInt64
  }
  private struct State {
    var entries: [Key: Entry] = [:]
    var bytes = 0
    var clock: UInt64 = 0
    /// Bumped by every `replace`: a table loaded while a writer changed one is not kept,
    /// since it may have been read from the file before the change.
    var generation: UInt64 = 0
  }

  /// Bytes of tables kept before the least recently used half is dropped.
  let budgetBytes: Int
  private let state = Locked(State())

  /// The default budget: 16 MiB (8192 hosted grain tables, 256 GiB of disk at 64 KiB grains).
  static let defaultBudgetBytes = 16 << 20

  init(budgetBytes: Int = TableCache.defaultBudgetBytes) {
    self.budgetBytes = budgetBytes
  }

  /// The table at `key`, loading it with `load` on a miss. Entries are widened to u64.
  func table(_ key: Key, load: () throws -> [UInt64]) throws -> [UInt64] {
    let hit: [UInt64]? = state.withLock { s in
      s.clock += 1
      if var e = s.entries[key] {
        e.lastUse = s.clock
        s.entries[key] = e
        return e.table
      }
      return nil
    }
    if let hit { return hit }
    let generation = state.withLock { $0.generation }
    let t = try load()
    state.withLock { s in
      guard s.generation == generation else { return }
      s.clock += 1
      if let old = s.entries[key] { s.bytes -= old.table.count * 8 }
      s.entries[key] = Entry(table: t, lastUse: s.clock)
      s.bytes += t.count * 8
      if s.bytes > budgetBytes { evictHalf(&s) }
    }
    return t
  }

  /// The table at `key` when it is cached, without loading it.
  func cached(_ key: Key) -> [UInt64]? {
    state.withLock { s in
      s.clock += 1
      guard var e = s.entries[key] else { return nil }
      e.lastUse = s.clock
      s.entries[key] = e
      return e.table
    }
  }

  private func evictHalf(_ s: inout State) {
    let order = s.entries.sorted { $0.value.lastUse < $1.value.lastUse }
    for (k, e) in order.prefix(max(1, order.count / 2)) {
      s.entries[k] = nil
      s.bytes -= e.table.count * 8
    }
  }

  /// Stores `table` at `key` after a writer changed it in the file (the file first, then the
  /// cache, so a reader sees the new entry only once its grain is there).
  func replace(_ key: Key, with table: [UInt64]) {
    state.withLock { s in
      s.generation += 1
      s.clock += 1
      if let old = s.entries[key] { s.bytes -= old.table.count * 8 }
      s.entries[key] = Entry(table: table, lastUse: s.clock)
      s.bytes += table.count * 8
      if s.bytes > budgetBytes { evictHalf(&s) }
    }
  }

  /// Forgets every table of `extent` (after it was rewritten).
  func invalidate(extent: ObjectIdentifier) {
    state.withLock { s in
      s.generation += 1
      for (k, e) in s.entries where k.extent == extent {
        s.entries[k] = nil
        s.bytes -= e.table.count * 8
      }
    }
  }
}
