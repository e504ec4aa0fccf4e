// HTTPStore: a read-only ByteStore over a file an HTTP(S) server serves, read with range
// requests on keep-alive connections borrowed from a pool. Opening asks for the size (HEAD);
// a read asks for exactly its range and takes the body straight into the caller's buffer.
// Small reads (the many header, descriptor and grain-table reads of opening a disk) go
// through a small cache of aligned 1 MiB blocks, so that they do not cost a round trip each;
// large reads bypass it.
// Retryable failures reconnect and resume where the data stopped (HTTPSession).

/// A file on an HTTP(S) server, read with range requests.
public final class HTTPStore: ByteStore {
  /// The size of a cached block, and its alignment.
  public static let cacheBlockBytes = 1 << 20
  /// How many blocks the cache keeps (least recently used goes first).
  public static let cacheBlocks = 32
  /// Reads smaller than this go through the cache.
  public static let cachedReadLimit = 256 << 10
  /// The largest range asked for in one request; larger reads are split.
  public static let maxRequestBytes = 32 << 20

  public let url: HTTPURL
  /// The canonical URL, for messages.
  public let name: String
  public var isWritable: Bool { false }
  /// The file's size, from the server's first answer.
  public let fileSize: UInt64
  private let state: Locked<State>

  private struct State {
    let session: HTTPSession
    var cache = BlockCache()
  }

  /// Whether `text` starts with http:// or https:// (in any case).
  public static func isURL(_ text: String) -> Bool { HTTPURL.isURL(text) }

  /// Opens the file at `location` (an http:// or https:// URL) and asks for its size. Throws
  /// `invalidArgument` for a bad URL, `fileNotFound` (404, 410), `fileAccess` (401, 403),
  /// the network codes, `protocolError` for an answer that breaks HTTP. `pool` shares
  /// connections with other stores (nil: a pool of the store's own).
  public convenience init(
    _ location: String, options: TransportOptions = TransportOptions(), pool: HTTPConnectionPool? = nil
  ) throws {
    try self.init(url: HTTPURL(location), options: options, pool: pool)
  }

  /// Opens the file at `url` and asks for its size.
  public init(url: HTTPURL, options: TransportOptions = TransportOptions(), pool: HTTPConnectionPool? = nil) throws {
    let session = HTTPSession(url: url, options: options, pool: pool ?? HTTPConnectionPool())
    fileSize = try session.fetchSize()
    self.url = url
    self.name = session.name
    state = Locked(State(session: session))
  }

  /// Exchanges asked again on a new connection after a failure, since the store opened.
  public var reconnects: Int { state.withLock { $0.session.reconnects } }

  // MARK: ByteStore

  public func size() throws -> UInt64 { fileSize }

  public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    guard offset < fileSize, buffer.count > 0 else { return 0 }
    let total = Int(min(UInt64(buffer.count), fileSize - offset))
    let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<total])
    try state.withLock { s in
      if total < HTTPStore.cachedReadLimit {
        try HTTPStore.readCached(&s, at: offset, into: target, size: fileSize)
      } else {
        try HTTPStore.readDirect(s.session, at: offset, into: target, size: fileSize)
      }
    }
    return total
  }

  public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
    throw VMDKError(.fileReadOnly, "HTTP is read-only", file: name, offset: offset)
  }

  public func flush() throws {}

  /// Closes the idle connections of the store's pool.
  public func close() { state.withLock { $0.session.pool }.closeAll() }

  // MARK: Reading

  /// Reads `buffer.count` bytes at `offset` (inside the file) with range requests of at most
  /// `maxRequestBytes`; after a retryable failure the next request starts where the data
  /// stopped.
  private static func readDirect(
    _ session: HTTPSession, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, size: UInt64
  ) throws {
    var done = 0
    while done < buffer.count {
      try session.perform("read", offset: offset + UInt64(done)) { c in
        let n = min(buffer.count - done, maxRequestBytes)
        let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)])
        var received = 0
        defer { done += received }
        try session.fetchRange(c, offset: offset + UInt64(done), size: size, into: piece, received: &received)
      }
    }
  }

  /// Reads through the cache: every aligned block the range touches, fetched when missing.
  private static func readCached(
    _ s: inout State, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, size: UInt64
  ) throws {
    let blockBytes = UInt64(cacheBlockBytes)
    let end = offset + UInt64(buffer.count)
    var index = offset / blockBytes
    while index * blockBytes < end {
      let blockStart = index * blockBytes
      let block = try s.cache.block(index) ?? fetchBlock(&s, index: index, size: size)
      let from = max(offset, blockStart)
      let to = min(end, blockStart + UInt64(block.count))
      guard from < to else { break }
      block.withUnsafeBytes { src in
        (buffer.baseAddress! + Int(from - offset)).copyMemory(
          from: src.baseAddress! + Int(from - blockStart), byteCount: Int(to - from))
      }
      index += 1
    }
  }

  /// Fetches the block `index` (shorter at the end of the file) and keeps it in the cache.
  private static func fetchBlock(_ s: inout State, index: UInt64, size: UInt64) throws -> [UInt8] {
    let start = index * UInt64(cacheBlockBytes)
    var block = [UInt8](repeating: 0, count: Int(min(UInt64(cacheBlockBytes), size - start)))
    try block.withUnsafeMutableBytes { try readDirect(s.session, at: start, into: $0, size: size) }
    s.cache.insert(block, at: index)
    return block
  }
}

/// The last `HTTPStore.cacheBlocks` blocks fetched, with their last use, least recently used
/// dropped first. A linear search: there are few.
private struct BlockCache {
  private var entries: [(index: UInt64, bytes: [UInt8], used: UInt64)] = []
  private var clock: UInt64 = 0

  /// The block `index`, when cached (and marks it used).
  mutating func block(_ index: UInt64) -> [UInt8]? {
    guard let i = entries.firstIndex(where: { $0.index == index }) else { return nil }
    clock += 1
    entries[i].used = clock
    return entries[i].bytes
  }

  mutating func insert(_ bytes: [UInt8], at index: UInt64) {
    clock += 1
    if entries.count >= HTTPStore.cacheBlocks,
      let lru = entries.indices.min(by: { entries[$0].used < entries[$1].used })
    {
      entries.remove(at: lru)
    }
    entries.append((index, bytes, clock))
  }
}
