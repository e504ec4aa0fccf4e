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
    var visited: Set<FileID> = [start]
    // Depth-first with an explicit stack of folders still to list.
    var stack: [(id: FileID, path: [UInt8], depth: Int)] = [(start, [], 0)]
    var children: [(id: FileID, path: [UInt8], depth: Int)] = []
    while let (id, path, depth) = stack.popLast() {
      children.removeAll(keepingCapacity: true)
      // An error of `body` (or of `onError`) ends the walk; one of the listing goes to `onError`.
      var stopped: (any Error)?
      do {
        try forEachEntry(in: id) { name, eid, type in
          var p: [UInt8] = []
          p.reserveCapacity(path.count + 1 + name.count)
          if !path.isEmpty {
            p += path
            p.append(UInt8(ascii: "/"))
          }
          let nameStart = p.count
          p += name
          let item = WalkItem(path: p, nameStart: nameStart, id: eid, type: type, depth: depth + 1)
          do {
            guard try body(item), type == .directory else { return }
            guard visited.insert(eid).inserted else {
              let err = VMDKError(
                .corruptFileSystem,
                "folder \"\(item.displayPath)\" (id \(eid)) is its own ancestor or listed twice: not entered")
              guard let onError else { throw err }
              return try onError(p, err)
            }
            guard depth + 1 < maxDepth else {
              let err = VMDKError(
                .fileSystemLimit, "folder \"\(item.displayPath)\" is deeper than the cap of \(maxDepth)")
              guard let onError else { throw err }
              return try onError(p, err)
            }
            children.append((eid, p, depth + 1))
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

func asciiLower(_ b: [UInt8]) -> [UInt8] { b.map { (0x41...0x5A).contains($0) ? $0 + 32 : $0 } }
