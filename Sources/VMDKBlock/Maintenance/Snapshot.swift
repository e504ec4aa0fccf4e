// Taking a snapshot: a new, empty sparse child whose descriptor names the parent
// (parentFileNameHint, relative to the child's folder as VMware writes it) and carries the
// parent's CID as parentCID (notes §3.8), with the parent's capacity and disk database. The
// child is written under temporary names and renamed into place (SparseWriter). The parent
// is locked while its CID is read and the child made, so that no writer changes the parent
// in between; after that, the restore guard keeps writers out of the parent.

import Foundation
import VMDKFormat
import VMDKTransport

extension Disk {
  /// Makes `childPath` a snapshot of the disk at `parentPath`: monolithicSparse, or
  /// twoGbMaxExtentSparse with `split`. `options` open the parent (its chain must open).
  /// Refuses with `fileExists` when the child exists, `alreadyLocked` when the parent is open
  /// for writing, `invalidArgument` when the parent is not a VMDK with a descriptor. Then
  /// tells change tracking (`ChangeTracking.didCreateSnapshot`); when that fails, the child
  /// is removed again.
  public static func createSnapshot(
    of parentPath: String, at childPath: String, split: Bool = false, options: OpenOptions = OpenOptions()
  ) throws {
    try Maintenance.requireLocal(parentPath)
    try Maintenance.requireLocal(childPath)
    try OutputName.checkDescriptorName(childPath)
    if FileManager.default.fileExists(atPath: childPath) {
      throw VMDKError(.fileExists, "the snapshot's file exists; choose another name", file: childPath)
    }
    var openOptions = options
    openOptions.writable = false
    // Held until the child is in place.
    let lock = try lockIfWritable(parentPath)
    defer { withExtendedLifetime(lock) {} }
    let parent = try Disk.open(parentPath, options: openOptions)
    let top = parent.top
    guard top.kind == .vmdk, top.hasDescriptor, let cid = top.descriptor.cid else {
      throw VMDKError(
        .invalidArgument, "a snapshot's parent must be a VMDK with a descriptor and a CID (\(top.createType) is not)",
        file: parentPath)
    }
    // The parent's capacity and disk database, minus its identity (the library's snapshot
    // policy); a new ddb.uuid and longContentID.
    var create = CreateOptions(
      type: split ? .twoGbMaxExtentSparse : .monolithicSparse, inheriting: parent, for: .snapshot)
    create.parent = (cid: cid, hint: relativeHint(from: childPath, to: parentPath))
    create.cid = CreateOptions.randomCID()
    let writer = try SparseWriter(path: childPath, options: create)
    do {
      try writer.commit()
    } catch {
      writer.abort()
      throw error
    }
    do {
      try ChangeTracking.didCreateSnapshot(parentPath: parentPath, childPath: childPath)
    } catch {
      removeNewImage(childPath)
      throw error
    }
  }

  /// The parent's path as the child's descriptor names it: relative to the child's folder
  /// (the file name alone when both share a folder), absolute when they share nothing but /.
  static func relativeHint(from childPath: String, to parentPath: String) -> String {
    func absolute(_ p: String) -> String {
      let full = p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
      return (full as NSString).standardizingPath
    }
    func real(_ folder: String) -> String { PathResolver.realPath(folder) ?? folder }
    let childFolder = real((absolute(childPath) as NSString).deletingLastPathComponent)
    let parentAbs = absolute(parentPath)
    let parentFolder = real((parentAbs as NSString).deletingLastPathComponent)
    let name = (parentAbs as NSString).lastPathComponent
    if childFolder == parentFolder { return name }
    let a = childFolder.split(separator: "/")
    let b = parentFolder.split(separator: "/")
    var common = 0
    while common < a.count && common < b.count && a[common] == b[common] { common += 1 }
    if common == 0 { return parentFolder + "/" + name }
    let up = Array(repeating: "..", count: a.count - common)
    return (up + b[common...].map(String.init) + [name]).joined(separator: "/")
  }

  /// An exclusive lock on `path` while a snapshot is made or a chain is relinked, so that
  /// no writer changes it (and its CID) meanwhile. A file we may not open for writing cannot
  /// be written by us either: then no lock (nil).
  static func lockIfWritable(_ path: String) throws -> FileLock? {
    do {
      return try FileLock(path: path)
    } catch let e as VMDKError where e.code == .fileAccess {
      return nil
    }
  }

  /// Removes the files of an image this process just made (a descriptor and the extents it
  /// names in its folder), after a later step failed.
  static func removeNewImage(_ path: String) {
    if let d = RestoreGuard.readDescriptor(path), d.createType != "monolithicSparse" {
      let folder = (path as NSString).deletingLastPathComponent
      for e in d.extents {
        guard let name = e.fileName, !name.contains("/") else { continue }
        unlink((folder.isEmpty ? "." : folder) + "/" + name)
      }
    }
    unlink(path)
  }
}
