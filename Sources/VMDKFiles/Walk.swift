// Path lookup and the recursive walk over any FileSystem. Every walk keeps a visited set of
// folders and a depth cap, so a hostile folder that contains its own ancestor ends in an
// error, not a loop; "." and ".." are never followed.
import VMDKBlock

public enum WalkLimits {
  /// Folder depth of a walk (ext and FAT trees are far shallower; a loop is deeper).
  public static let maxDepth = 256
  /// Symbolic links followed while resolving one path (Linux's MAXSYMLINKS).
  public static let maxSymlinks = 40
}

/// One name met by a walk.
public struct WalkItem: Sendable {
  /// The path below the walk's start, components joined with "/" (raw bytes).
  public var path: [UInt8]
  /// Where the name starts in `path`.
  var nameStart: Int
  public var id: FileID
  public var type: FileType
  /// 1 for the start folder's entries.
  public var depth: Int
  /// The name (the last component of `path`).
  public var name: ArraySlice<UInt8> { path[nameStart...] }
  public var entry: DirectoryEntry { DirectoryEntry(name: Array(name), id: id, type: type) }
  public var displayPath: String { String(decoding: path, as: UTF8.self) }
}

extension FileSystem {
  /// The id of `path` ("/", "/etc/hosts", "etc/hosts"). Symbolic links in the middle are
  /// followed (at most `WalkLimits.maxSymlinks`); the last component is not (like lstat).
  /// Each name matches by the file system's rule (`entry(named:in:)`).
  public func lookup(_ path: String) throws -> FileID {
    try lookup(Array(path.utf8))
  }

  public func lookup(_ path: [UInt8]) throws -> FileID {
    var pending = path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map(Array.init)
    pending.reverse()
    var stack: [FileID] = [root]
    var hops = 0
    while let name = pending.popLast() {
      if name == [UInt8(ascii: ".")] { continue }
      if name == [UInt8(ascii: "."), UInt8(ascii: ".")] {
        if stack.count > 1 { stack.removeLast() }
        continue
      }
      let current = stack[stack.count - 1]
      guard let e = try entry(named: name, in: current) else {
        throw VMDKError(
          .fileNotFound,
          "no \"\(String(decoding: path, as: UTF8.self))\": \"\(String(decoding: name, as: UTF8.self))\" not found")
      }
      if e.type == .symlink && !pending.isEmpty {
        hops += 1
        guard hops <= WalkLimits.maxSymlinks else {
          throw VMDKError(
            .fileSystemLimit,
            "more than \(WalkLimits.maxSymlinks) symbolic links in \"\(String(decoding: path, as: UTF8.self))\"")
        }
        let target = try readlink(e.id)
        if target.first == UInt8(ascii: "/") { stack = [root] }
        let parts = target.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map(Array.init)
        pending += parts.reversed()
        continue
      }
      stack.append(e.id)
    }
    return stack[stack.count - 1]
  }

  /// Visits every name below folder `start`, parents before children, in on-disk order.
  /// `body` returns false to skip a folder's contents. A folder that cannot be listed goes
  /// to `onError` (which may throw to stop), after the entries read before the damage; without
  /// it the walk throws. An error of `body` or `onError` ends the walk.
  public func walk(
    from start: FileID, maxDepth: Int = WalkLimits.maxDepth,
    onError: ((_ path: [UInt8], _ error: any Error) throws -> Void)? = nil,
    _ body: (WalkItem) throws -> Bool
  ) throws {
    try walkPaths(from: start, maxDepth: maxDepth, onError: onError) { path, nameStart, id, type, depth in
      try body(WalkItem(path: Array(path), nameStart: nameStart, id: id, type: type, depth: depth))
    }
  }

  /// `walk` with each path lent to `body` for the call only, so that a name costs no array
  /// (a listing that prints paths needs nothing more): `path` is the path below `start`
  /// (components joined with "/"), the name starts at `nameStart`, `depth` is 1 for the start
  /// folder's entries.
  public func walkPaths(
    from start: FileID, maxDepth: Int = WalkLimits.maxDepth,
    onError: ((_ path: [UInt8], _ error: any Error) throws -> Void)? = nil,
    _ body: (
      _ path: UnsafeBufferPointer<UInt8>, _ nameStart: Int, _ id: FileID, _ type: FileType, _ depth: Int
    ) throws -> Bool
  ) throws {
    var visited: Set<FileID> = [start]
    // Depth-first with an explicit stack of folders still to list.
    var stack: [(id: FileID, path: [UInt8], depth: Int)] = [(start, [], 0)]
    var children: [(id: FileID, path: [UInt8], depth: Int)] = []
    // The path of the name being visited: the folder's path and "/", then the name.
    let current = PathBuffer()
    let slash = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: 1)
    slash[0] = UInt8(ascii: "/")
    defer { slash.deallocate() }
    while let (id, path, depth) = stack.popLast() {
      children.removeAll(keepingCapacity: true)
      var prefix = 0
      path.withUnsafeBufferPointer { prefix = current.set(0, $0) }
      if !path.isEmpty { prefix = current.set(prefix, UnsafeBufferPointer(slash)) }
      // An error of `body` (or of `onError`) ends the walk; one of the listing goes to `onError`.
      var stopped: (any Error)?
      do {
        try forEachEntry(in: id) { name, eid, type in
          let full = UnsafeBufferPointer(start: current.bytes, count: current.set(prefix, name))
          do {
            guard try body(full, prefix, eid, type, depth + 1), type == .directory else { return }
            guard visited.insert(eid).inserted else {
              let err = VMDKError(
                .corruptFileSystem,
                "folder \"\(String(decoding: full, as: UTF8.self))\" (id \(eid)) is its own ancestor or listed twice: not entered"
              )
              guard let onError else { throw err }
              return try onError(Array(full), err)
            }
            guard depth + 1 < maxDepth else {
              let err = VMDKError(
                .fileSystemLimit,
                "folder \"\(String(decoding: full, as: UTF8.self))\" is deeper than the cap of \(maxDepth)")
              guard let onError else { throw err }
              return try onError(Array(full), err)
            }
            children.append((eid, Array(full), depth + 1))
          } catch {
            stopped = error
            throw error
          }
        }
      } catch {
        if let stopped { throw stopped }
        guard let onError else { throw error }
        try onError(path, error)
      }
      // Reversed so that the first child is listed first.
      stack += children.reversed()
    }
  }
}

/// The bytes of the path a walk is at, grown when a name needs it; a class so that the walk's
/// closure changes it without the captured-variable checks a `var` would cost per name.
private final class PathBuffer {
  private(set) var bytes: UnsafeMutablePointer<UInt8>
  private var capacity = 4096
  init() { bytes = .allocate(capacity: capacity) }
  deinit { bytes.deallocate() }

  /// Puts `part` at `offset` (the bytes before it kept); returns where it ends.
  func set(_ offset: Int, _ part: UnsafeBufferPointer<UInt8>) -> Int {
    let end = offset + part.count
    if end > capacity {
      let grown = max(end, 2 * capacity)
      let new = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
      new.update(from: bytes, count: offset)
      bytes.deallocate()
      bytes = new
      capacity = grown
    }
    if let base = part.baseAddress { (bytes + offset).update(from: base, count: part.count) }
    return end
  }
}

func asciiLower(_ b: [UInt8]) -> [UInt8] { b.map { (0x41...0x5A).contains($0) ? $0 + 32 : $0 } }
