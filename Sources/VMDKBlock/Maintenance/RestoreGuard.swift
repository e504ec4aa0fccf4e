// The restore guard: a disk with snapshots on top of it must not be written, or every
// snapshot silently reads a mix of old and new data (VMware's CID check catches it later, as
// a CID mismatch, when the damage is done). A snapshot of a disk is a .vmdk file in the
// disk's folder whose descriptor names the disk through parentFileNameHint AND carries the
// disk's CID as parentCID; a child whose parentCID is stale is already broken and does not
// count. The scan reads at most 64 KiB (the header and the descriptor) of each candidate,
// follows no symbolic link and no path that leaves the folder.

import Foundation
import VMDKFormat
import VMDKTransport

/// Finds the snapshots that sit on top of a disk, and refuses writes under them.
public enum RestoreGuard {
  /// Most bytes read from one candidate file: its header and descriptor.
  static let scanBytes = 64 << 10

  /// The snapshots on top of the disk whose descriptor is at `path` (paths of the child
  /// descriptors, sorted). A file that is not a VMDK with a descriptor has none.
  public static func snapshots(of path: String) throws -> [String] {
    guard let descriptor = readDescriptor(path), let cid = descriptor.cid else { return [] }
    return try snapshots(of: path, cid: cid)
  }

  /// The snapshots in `path`'s folder that name `path` as parent with parentCID `cid`.
  public static func snapshots(of path: String, cid: UInt32) throws -> [String] {
    let folder = folderOf(path)
    var target = stat()
    guard stat(path, &target) == 0 else { return [] }
    let names: [String]
    do {
      names = try FileManager.default.contentsOfDirectory(atPath: folder)
    } catch {
      throw VMDKError(.fileAccess, "cannot list the folder to look for snapshots: \(error)", file: folder)
    }
    var found: [String] = []
    for name in names.sorted() where name.lowercased().hasSuffix(".vmdk") && !name.hasPrefix(".") {
      let candidate = folder + "/" + name
      guard let d = readDescriptor(candidate), d.parentCID == cid, let hint = d.parentFileNameHint,
        !hint.isEmpty
      else { continue }
      guard let parent = resolveInside(hint, folder: folder) else { continue }
      var st = stat()
      guard stat(parent, &st) == 0, st.st_dev == target.st_dev, st.st_ino == target.st_ino else { continue }
      // The disk itself (a descriptor naming itself) is not its own snapshot.
      var own = stat()
      if stat(candidate, &own) == 0, own.st_dev == target.st_dev, own.st_ino == target.st_ino { continue }
      found.append(candidate)
    }
    return found
  }

  /// Throws `hasSnapshots` when snapshots in `path`'s folder sit on top of it.
  public static func refuseIfSnapshots(of path: String, doing what: String = "writing into it") throws {
    try refuse(path: path, snapshots: try snapshots(of: path), doing: what)
  }

  /// The same for a link already open (its descriptor and CID as read at open).
  static func refuseIfSnapshots(of link: DiskLink) throws {
    guard link.kind == .vmdk, link.hasDescriptor, let cid = link.descriptor.cid else { return }
    try refuse(path: link.path, snapshots: try snapshots(of: link.path, cid: cid), doing: "writing into it")
  }

  static func refuse(path: String, snapshots: [String], doing what: String) throws {
    guard !snapshots.isEmpty else { return }
    let names = snapshots.map { ($0 as NSString).lastPathComponent }
    let shown = names.prefix(5).joined(separator: ", ") + (names.count > 5 ? ", ..." : "")
    let count = snapshots.count == 1 ? "1 snapshot" : "\(snapshots.count) snapshots"
    throw VMDKError(
      .hasSnapshots,
      "the disk has \(count) on top of it (\(shown)); \(what) would change what the snapshots read: commit or delete them, or restore to another place",
      file: path)
  }

  // MARK: Reading candidates

  /// The descriptor of a VMDK (embedded in a KDMV file or a text file), from at most 64 KiB;
  /// nil for anything else, an unreadable file, or a symbolic link.
  static func readDescriptor(_ path: String) -> Descriptor? {
    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
    func read(at offset: UInt64, count: Int) -> [UInt8] {
      var bytes = [UInt8](repeating: 0, count: count)
      var done = 0
      while done < count {
        let n = bytes.withUnsafeMutableBytes {
          pread(fd, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done))
        }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        done += n
      }
      return Array(bytes.prefix(done))
    }
    let head = read(at: 0, count: scanBytes)
    if SparseExtentHeader.hasMagic(head) {
      guard let h = try? SparseExtentHeader(parsing: Array(head.prefix(SparseExtentHeader.size))),
        h.descriptorOffsetSectors != 0, h.descriptorSizeSectors != 0
      else { return nil }
      let (start, o) = h.descriptorOffsetSectors.multipliedReportingOverflow(by: 512)
      guard !o, start < UInt64(st.st_size) else { return nil }
      let size = Int(min(h.descriptorSizeSectors, UInt64(scanBytes / 512))) * 512
      let bytes =
        start + UInt64(size) <= UInt64(head.count)
        ? Array(head[Int(start)..<Int(start) + size]) : read(at: start, count: size)
      return try? Descriptor(parsing: bytes)
    }
    guard Descriptor.looksLikeDescriptor(head) else { return nil }
    return try? Descriptor(parsing: head)
  }

  /// `hint` as a path in `folder`, or nil when it leaves the folder (also through `..`).
  static func resolveInside(_ hint: String, folder: String) -> String? {
    let full = hint.hasPrefix("/") ? hint : folder + "/" + hint
    let standard = (full as NSString).standardizingPath
    let base = (folder as NSString).standardizingPath
    let dir = (standard as NSString).deletingLastPathComponent
    if dir == base { return standard }
    // An absolute hint may spell the folder another way (through a symbolic link).
    if let a = PathResolver.realPath(dir), let b = PathResolver.realPath(base), a == b {
      return folder + "/" + (standard as NSString).lastPathComponent
    }
    return nil
  }

  /// The folder of `path`, absolute, so that hints compare with it after standardizing.
  static func folderOf(_ path: String) -> String {
    let dir = (path as NSString).deletingLastPathComponent
    let absolute =
      dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + (dir.isEmpty ? "" : "/" + dir)
    return (absolute as NSString).standardizingPath
  }
}
