// Rename and delete (vmware-vdiskmanager -n and VixDiskLib_Unlink): every file of a disk's top
// link, the descriptor, and the change-tracking sidecar (`ChangeTracking.sidecarName(for:)`).
// Children in the same folder whose
// parentFileNameHint names the disk are found by reading every descriptor there: rename
// points them at the new name, delete refuses unless forced.
//
// Rename is crash-safe by hard links: the new names are linked to the old files, the new
// descriptor is written (embedded: in the same inode, naming the new extent file), children are
// updated, and only then are the old names removed; at every point one complete set of names
// exists.

import Foundation
import VMDKFormat
import VMDKTransport

/// A disk in a folder that names another as its parent.
public struct ChildLink: Sendable, Equatable {
  /// The child's descriptor file (or monolithic file).
  public var path: String
  /// Its parentFileNameHint as written.
  public var hint: String
}

/// What rename or delete did.
public struct FileOperationResult: Sendable, Equatable {
  /// (old, new) for rename; (path, "") for delete.
  public var files: [(String, String)] = []
  /// Children whose parentFileNameHint was changed (rename) or that were left naming a
  /// deleted parent (delete with force).
  public var children: [String] = []

  public static func == (a: Self, b: Self) -> Bool {
    a.children == b.children && a.files.map { [$0.0, $0.1] } == b.files.map { [$0.0, $0.1] }
  }
}

extension Disk {
  /// The change-tracking sidecar of the disk at `path`: `NAME-changes.vtrack` for `NAME.vmdk`.
  public static func sidecarPath(for path: String) -> String { ChangeTracking.sidecarName(for: path) }

  /// The disks in `path`'s folder whose parentFileNameHint resolves to `path`.
  public static func children(of path: String) -> [ChildLink] {
    let real = PathResolver.realPath(path) ?? path
    let folder = (path as NSString).deletingLastPathComponent
    let dir = folder.isEmpty ? "." : folder
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
    var out: [ChildLink] = []
    for name in names.sorted() where name.lowercased().hasSuffix(".vmdk") && !name.hasPrefix(".") {
      let p = dir + "/" + name
      if (PathResolver.realPath(p) ?? p) == real { continue }
      guard let (d, _) = try? readDescriptor(p), let hint = d.parentFileNameHint, !hint.isEmpty else { continue }
      let target = hint.hasPrefix("/") ? hint : dir + "/" + hint
      if (PathResolver.realPath(target) ?? target) == real { out.append(ChildLink(path: p, hint: hint)) }
    }
    return out
  }

  /// The descriptor of a file and where it is: the embedded area (offset, room) or nil for a
  /// descriptor file. Throws when the file has none.
  static func readDescriptor(_ path: String) throws -> (Descriptor, (offset: UInt64, room: UInt64)?) {
    let f = try LocalFile(path: path)
    let size = try f.size()
    let head = try f.readUpTo(at: 0, count: 512)
    if SparseExtentHeader.hasMagic(head) {
      let h = try wrap(path) { try SparseExtentHeader(parsing: head) }
      guard h.descriptorOffsetSectors != 0, h.descriptorSizeSectors <= 2048 else {
        throw VMDKError(.invalidDescriptor, "no embedded descriptor", file: path)
      }
      var bytes = try f.readUpTo(at: h.descriptorOffsetSectors * 512, count: Int(h.descriptorSizeSectors * 512))
      if let nul = bytes.firstIndex(of: 0) { bytes.removeSubrange(nul...) }
      return (
        try wrap(path) { try Descriptor(parsing: bytes) },
        (h.descriptorOffsetSectors * 512, h.descriptorSizeSectors * 512)
      )
    }
    guard size <= Limits.maxDescriptorBytes, Descriptor.looksLikeDescriptor(head) else {
      throw VMDKError(.invalidDescriptor, "not a descriptor", file: path)
    }
    return (try wrap(path) { try Descriptor(parsing: try f.readUpTo(at: 0, count: Int(size))) }, nil)
  }

  /// Writes `d` where `readDescriptor` found it.
  static func writeDescriptor(_ d: Descriptor, to path: String, embedded: (offset: UInt64, room: UInt64)?) throws {
    let text = Array(d.serialized().utf8)
    guard let embedded else { return try Maintenance.replaceFile(path, with: text) }
    guard UInt64(text.count) <= embedded.room else {
      throw VMDKError(
        .notSupported,
        "the changed descriptor needs \(text.count) bytes; the embedded descriptor has room for \(embedded.room)",
        file: path, offset: embedded.offset)
    }
    let f = try LocalFile(path: path, writable: true)
    try f.write(at: embedded.offset, from: text + [UInt8](repeating: 0, count: Int(embedded.room) - text.count))
    try f.flush()
  }

  /// Renames the disk at `oldPath` to `newPath` (same folder or another): its extent files
  /// (names starting with the old name's stem get the new stem; others keep their names and
  /// are not moved), the descriptor, the tracking sidecar; children in the old folder are
  /// pointed at the new name. Throws `fileExists` before changing anything when a new name is taken.
  public static func rename(_ oldPath: String, to newPath: String, options: OpenOptions = OpenOptions()) throws
    -> FileOperationResult
  {
    // The new name is written into the descriptor's extent lines.
    try OutputName.checkDescriptorName(newPath)
    let disk = try Maintenance.openLocked(oldPath, options: options, parents: false)
    defer { try? disk.close() }
    let link = disk.top
    guard link.kind == .vmdk, link.hasDescriptor else {
      throw VMDKError(.notSupported, "rename applies to VMDK disks with a descriptor", file: oldPath)
    }
    let oldFolder = (oldPath as NSString).deletingLastPathComponent
    let newFolder = (newPath as NSString).deletingLastPathComponent
    let oldStem = Self.stem(oldPath)
    let newStem = Self.stem(newPath)
    let embedded = link.descriptorLocation == .embedded
    var moves: [(String, String)] = []
    var lines = link.descriptor.extents
    for (i, info) in link.extents.enumerated() {
      guard let p = info.path, let name = lines[i].fileName else { continue }
      if embedded && (PathResolver.realPath(p) ?? p) == (PathResolver.realPath(oldPath) ?? oldPath) {
        lines[i].fileName = (newPath as NSString).lastPathComponent
        continue
      }
      let base = (name as NSString).lastPathComponent
      guard base.hasPrefix(oldStem), !name.contains("/") else {
        guard Self.sameFolder(oldFolder, newFolder) || name.hasPrefix("/") else {
          throw VMDKError(
            .notSupported, "extent \(name) does not start with \(oldStem) and the disk moves to another folder",
            file: oldPath)
        }
        continue
      }
      let newName = newStem + base.dropFirst(oldStem.count)
      lines[i].fileName = newName
      moves.append((p, (newFolder.isEmpty ? "." : newFolder) + "/" + newName))
    }
    moves.append((oldPath, newPath))
    let sidecar = sidecarPath(for: oldPath)
    if FileManager.default.fileExists(atPath: sidecar) { moves.append((sidecar, sidecarPath(for: newPath))) }
    for (_, to) in moves where FileManager.default.fileExists(atPath: to) {
      throw VMDKError(.fileExists, "the new name is taken", file: to)
    }
    let children = Self.children(of: oldPath)
    // Children change too: lock them before anything changes (a child open for writing refuses).
    let childLocks = try children.map { try FileLock(path: $0.path) }
    defer { _ = childLocks }
    var d = link.descriptor
    d.setExtents(lines)
    // 1. New names for every file (the descriptor's file last; separate descriptors are written new).
    var linked: [String] = []
    do {
      for (from, to) in moves where !(to == newPath && !embedded) {
        guard Maintenance.hardLink(from, to) == 0 else {
          throw VMDKError(
            .fileAccess, "cannot link \(from) to its new name: \(String(cString: strerror(errno)))", file: to)
        }
        linked.append(to)
      }
      if embedded {
        let (_, area) = try readDescriptor(newPath)
        try writeDescriptor(d, to: newPath, embedded: area)
      } else {
        let text = Array(d.serialized().utf8)
        let out = try LocalFile.create(path: newPath)
        linked.append(newPath)
        try out.write(at: 0, from: text)
        try out.flush()
      }
    } catch {
      for p in linked { unlink(p) }
      throw error
    }
    // 2. Children follow (a child's hint in the form it had: absolute or relative).
    var result = FileOperationResult()
    for c in children {
      var (cd, area) = try readDescriptor(c.path)
      let childFolder = (c.path as NSString).deletingLastPathComponent
      let hint: String
      if c.hint.hasPrefix("/") {
        hint = PathResolver.realPath(newPath) ?? newPath
      } else if Self.sameFolder(childFolder, newFolder) {
        hint = (newPath as NSString).lastPathComponent
      } else {
        hint = PathResolver.realPath(newPath) ?? newPath
      }
      cd.setHeader("parentFileNameHint", hint, quoted: true)
      try writeDescriptor(cd, to: c.path, embedded: area)
      result.children.append(c.path)
    }
    // 3. The old names go.
    for (from, _) in moves { unlink(from) }
    Maintenance.syncFolder(of: oldPath)
    Maintenance.syncFolder(of: newPath)
    result.files = moves
    return result
  }

  /// Deletes the disk at `path`: the descriptor first (so that no half-deleted disk can be
  /// opened), then its extent files and the tracking sidecar. Refused (`hasSnapshots`) when a
  /// disk in its folder names it as parent, unless `force`.
  public static func delete(_ path: String, force: Bool = false, options: OpenOptions = OpenOptions()) throws
    -> FileOperationResult
  {
    let disk = try Maintenance.openLocked(path, options: options, parents: false)
    defer { try? disk.close() }
    let children = Self.children(of: path)
    if !children.isEmpty && !force {
      throw VMDKError(
        .hasSnapshots,
        "\(children.map(\.path).joined(separator: ", ")) name\(children.count == 1 ? "s" : "") it as parent; use --force to delete anyway",
        file: path)
    }
    var result = FileOperationResult()
    var paths = [path]
    for info in disk.top.extents {
      if let p = info.path, !paths.contains(p), (PathResolver.realPath(p) ?? p) != (PathResolver.realPath(path) ?? path)
      {
        paths.append(p)
      }
    }
    let sidecar = sidecarPath(for: path)
    if FileManager.default.fileExists(atPath: sidecar) { paths.append(sidecar) }
    for p in paths {
      guard unlink(p) == 0 || errno == ENOENT else {
        throw VMDKError(.fileAccess, "cannot delete: \(String(cString: strerror(errno)))", file: p)
      }
      result.files.append((p, ""))
    }
    Maintenance.syncFolder(of: path)
    result.children = children.map(\.path)
    return result
  }

  /// Whether two folder paths ("" is the current folder) name the same folder.
  static func sameFolder(_ a: String, _ b: String) -> Bool {
    let x = a.isEmpty ? "." : a
    let y = b.isEmpty ? "." : b
    return (PathResolver.realPath(x) ?? x) == (PathResolver.realPath(y) ?? y)
  }

  /// The file name without its folder and final `.vmdk`.
  static func stem(_ path: String) -> String {
    let name = (path as NSString).lastPathComponent
    return name.lowercased().hasSuffix(".vmdk") ? String(name.dropLast(5)) : name
  }
}
