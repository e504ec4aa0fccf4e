// Extraction with writer threads: a tree of many small files in nested folders, with hard
// links across folders and files that cannot be read, written by 0, 1, 2 and 4 writer
// threads. Every output must be the same: contents, modes, file and folder times (set after
// everything inside), hard links as links, and the failures named in walk order while the
// rest is restored.
import Foundation
import Testing
import VMDKBlock

@testable import VMDKFiles

#if canImport(Glibc)
  import Glibc
#endif

/// A MemoryFileSystem whose reads of some files fail, after a short sleep for others (so that
/// the writer threads finish out of order).
struct FlakyFileSystem: FileSystem {
  let base: MemoryFileSystem
  let failing: Set<FileID>
  /// When set: the most descriptors this process had open during a read.
  var openDescriptors: Locked<Int>? = nil
  var kind: String { "flaky" }
  var label: String? { nil }
  var uuid: String? { nil }
  var root: FileID { base.root }
  func list(_ id: FileID) throws -> [DirectoryEntry] { try base.list(id) }
  func stat(_ id: FileID) throws -> FileAttributes { try base.stat(id) }
  func readlink(_ id: FileID) throws -> [UInt8] { try base.readlink(id) }
  func dataRanges(_ id: FileID) throws -> [Range<UInt64>] { try base.dataRanges(id) }
  func read(_ id: FileID, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    if failing.contains(id) { throw VMDKError(.corruptFileSystem, "file \(id) is unreadable") }
    if let openDescriptors {
      let n = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
      openDescriptors.withLock { $0 = max($0, n) }
    }
    if id % 7 == 0 { usleep(200) }
    return try base.read(id, at: offset, into: buffer)
  }
}

enum ThreadedTree {
  static let folders = 12
  static let filesPerFolder = 40

  /// Folders f0/f1/.../f11 (each inside the previous one), each with 40 files of
  /// 0...4 KiB; every tenth file has a second name in the top folder (a hard link). Two files
  /// are unreadable.
  static func make() -> (fs: FlakyFileSystem, expected: [String: [UInt8]], links: [(String, String)], bad: [String]) {
    var nodes: [FileID: MemoryFileSystem.Node] = [:]
    var expected: [String: [UInt8]] = [:]
    var links: [(String, String)] = []
    var next: FileID = 2
    func time(_ id: FileID) -> FileTime { FileTime(seconds: 1_500_000_000 + Int64(id) * 97, nanoseconds: 1000) }
    func attrs(_ id: FileID, _ type: FileType, _ size: UInt64, _ mode: UInt32, links: UInt32 = 1) -> FileAttributes {
      FileAttributes(
        id: id, type: type, size: size, mode: mode, linkCount: links, accessTime: time(id),
        modificationTime: time(id))
    }
    var rootChildren: [DirectoryEntry] = []
    var parent: FileID = 1
    var parentPath = ""
    var failing: Set<FileID> = []
    var bad: [String] = []
    var folderChildren: [FileID: [DirectoryEntry]] = [:]
    var folderIDs: [FileID] = []
    for f in 0..<folders {
      let folder = next
      next += 1
      let path = parentPath.isEmpty ? "f\(f)" : "\(parentPath)/f\(f)"
      nodes[folder] = MemoryFileSystem.Node(attributes: attrs(folder, .directory, 0, f % 2 == 0 ? 0o755 : 0o750))
      folderIDs.append(folder)
      var children: [DirectoryEntry] = []
      for i in 0..<filesPerFolder {
        let id = next
        next += 1
        let size = (i * 131 + f * 17) % 4097
        let data = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(id)) }
        let linked = i % 10 == 3
        nodes[id] = MemoryFileSystem.Node(
          attributes: attrs(id, .regular, UInt64(size), [0o644, 0o600, 0o755, 0o444][i % 4], links: linked ? 2 : 1),
          data: data)
        let name = "file\(i)"
        children.append(DirectoryEntry(name: Array(name.utf8), id: id, type: .regular))
        let filePath = "\(path)/\(name)"
        if (f == 3 && i == 5) || (f == 9 && i == 30) {
          failing.insert(id)
          bad.append(filePath)
        } else {
          expected[filePath] = data
        }
        if linked {
          let other = "link-\(f)-\(i)"
          rootChildren.append(DirectoryEntry(name: Array(other.utf8), id: id, type: .regular))
          links.append((filePath, other))
          expected[other] = data
        }
      }
      folderChildren[folder] = children
      if parent == 1 {
        rootChildren.insert(DirectoryEntry(name: Array("f\(f)".utf8), id: folder, type: .directory), at: 0)
      } else {
        folderChildren[parent, default: []].append(
          DirectoryEntry(name: Array("f\(f)".utf8), id: folder, type: .directory))
      }
      parent = folder
      parentPath = path
    }
    for id in folderIDs { nodes[id]?.children = folderChildren[id] ?? [] }
    nodes[1] = MemoryFileSystem.Node(attributes: attrs(1, .directory, 0, 0o755), children: rootChildren)
    return (FlakyFileSystem(base: MemoryFileSystem(nodes: nodes), failing: failing), expected, links, bad)
  }
}

@Suite struct ExtractThreadsTests {
  @Test(arguments: [0, 1, 2, 4])
  func theSameTreeWithAnyNumberOfWriters(workers: Int) throws {
    let dir = try temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (fs, expected, links, bad) = ThreadedTree.make()
    var options = ExtractOptions()
    options.workers = workers
    let x = try Extractor(fileSystem: fs, to: "\(dir)/out", options: options)
    var calls = 0
    var last: UInt64 = 0
    var increasing = true
    x.progress = { n in
      calls += 1
      if n < last { increasing = false }
      last = n
    }
    try x.extract(path: "/")
    // The two unreadable files, in walk order, and nothing else.
    #expect(x.report.failures.map(\.path) == bad.map { "/" + $0 })
    #expect(x.report.failures.allSatisfy { $0.error.code == .corruptFileSystem })
    let total = ThreadedTree.folders * ThreadedTree.filesPerFolder
    #expect(x.report.files == total - 2)
    #expect(x.report.hardLinks == links.count)
    #expect(x.report.directories == ThreadedTree.folders)
    let bytes = expected.filter { !$0.key.hasPrefix("link-") }.values.reduce(0) { $0 + $1.count }
    #expect(x.report.bytes == UInt64(bytes))
    #expect(calls > 0 && increasing && last == UInt64(bytes))
    for (path, data) in expected {
      let got = FileManager.default.contents(atPath: "\(dir)/out/\(path)")
      #expect(got == Data(data), "\(path)")
    }
    for (path, other) in links {
      var a = Glibc.stat()
      var b = Glibc.stat()
      #expect(lstat("\(dir)/out/\(path)", &a) == 0 && lstat("\(dir)/out/\(other)", &b) == 0)
      #expect(a.st_ino == b.st_ino && a.st_nlink == 2, "\(path) and \(other) are not one file")
    }
    // Modes and times of every file and folder, folders last (their times survive the files
    // written inside them by other threads).
    for id in fs.base.nodes.keys.sorted() where id != 1 {
      guard let path = pathOf(id, in: fs.base) else { continue }
      if bad.contains(path) { continue }
      var st = Glibc.stat()
      #expect(lstat("\(dir)/out/\(path)", &st) == 0, "\(path)")
      let a = try fs.stat(id)
      #expect(st.st_mode & 0o7777 == a.mode, "\(path): mode \(String(st.st_mode & 0o7777, radix: 8))")
      #expect(
        st.st_mtim.tv_sec == Int(a.modificationTime?.seconds ?? 0) && st.st_mtim.tv_nsec == 1000,
        "\(path): mtime \(st.st_mtim.tv_sec)")
    }
    // The unreadable files were created and left incomplete or empty, never with another's data.
    for path in bad {
      let got = FileManager.default.contents(atPath: "\(dir)/out/\(path)") ?? Data()
      #expect(got.isEmpty, "\(path)")
    }
  }

  /// An existing file fails (no --force), the rest is restored, and the folder's times are
  /// still set.
  @Test func anExistingFileFailsAloneUnderThreads() throws {
    let dir = try temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (fs, expected, _, bad) = ThreadedTree.make()
    try FileManager.default.createDirectory(atPath: "\(dir)/out/f0/f1", withIntermediateDirectories: true)
    #expect(FileManager.default.createFile(atPath: "\(dir)/out/f0/f1/file7", contents: Data("mine".utf8)))
    var options = ExtractOptions()
    options.workers = 2
    let x = try Extractor(fileSystem: fs, to: "\(dir)/out", options: options)
    try x.extract(path: "/")
    #expect(x.report.failures.map(\.path) == ["/f0/f1/file7", "/" + bad[0], "/" + bad[1]])
    #expect(x.report.failures.first?.error.code == .fileExists)
    #expect(FileManager.default.contents(atPath: "\(dir)/out/f0/f1/file7") == Data("mine".utf8))
    for (path, data) in expected where path != "f0/f1/file7" {
      #expect(FileManager.default.contents(atPath: "\(dir)/out/\(path)") == Data(data), "\(path)")
    }
    var st = Glibc.stat()
    #expect(lstat("\(dir)/out/f0/f1", &st) == 0)
    #expect(st.st_mtim.tv_sec == Int(try fs.stat(fs.base.list(2).last?.id ?? 0).modificationTime?.seconds ?? 0))
  }
}

extension ExtractThreadsTests {
  /// 40 chains of 20 nested folders with one file at the bottom of each: every queued file
  /// keeps its 20 folders open, so the walk must wait for the writers once `maxOpenFolders`
  /// are open, and the descriptors stay bounded.
  @Test func openFoldersAreBounded() throws {
    let dir = try temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let t = FileTime(seconds: 1_600_000_000)
    var nodes: [FileID: MemoryFileSystem.Node] = [:]
    var rootChildren: [DirectoryEntry] = []
    var next: FileID = 2
    var files: [(String, [UInt8])] = []
    for c in 0..<40 {
      var parent: FileID = 1
      var path = ""
      for level in 0..<20 {
        let id = next
        next += 1
        nodes[id] = MemoryFileSystem.Node(
          attributes: FileAttributes(
            id: id, type: .directory, size: 0, mode: 0o755, accessTime: t, modificationTime: t))
        let e = DirectoryEntry(name: Array("c\(c)l\(level)".utf8), id: id, type: .directory)
        if parent == 1 { rootChildren.append(e) } else { nodes[parent]?.children.append(e) }
        parent = id
        path += (path.isEmpty ? "" : "/") + "c\(c)l\(level)"
      }
      let id = next
      next += 1
      let data = Array("chain \(c)".utf8)
      nodes[id] = MemoryFileSystem.Node(
        attributes: FileAttributes(
          id: id, type: .regular, size: UInt64(data.count), mode: 0o644, accessTime: t, modificationTime: t),
        data: data)
      nodes[parent]?.children.append(DirectoryEntry(name: Array("file".utf8), id: id, type: .regular))
      files.append((path + "/file", data))
    }
    nodes[1] = MemoryFileSystem.Node(
      attributes: FileAttributes(id: 1, type: .directory, size: 0, mode: 0o755), children: rootChildren)
    let count = Locked(0)
    let fs = FlakyFileSystem(base: MemoryFileSystem(nodes: nodes), failing: [], openDescriptors: count)
    let before = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
    var options = ExtractOptions()
    options.workers = 2
    options.maxOpenFolders = 16
    let x = try Extractor(fileSystem: fs, to: "\(dir)/out", options: options)
    try x.extract(path: "/")
    #expect(x.report.failures.isEmpty, "\(x.report.failures)")
    #expect(x.report.files == 40 && x.report.directories == 800)
    for (path, data) in files {
      #expect(FileManager.default.contents(atPath: "\(dir)/out/\(path)") == Data(data), "\(path)")
    }
    // Without the bound some 640 folders would be open at once (32 files to a batch).
    // With it: at most 16 + one chain of 20, and slack for other tests' descriptors.
    let most = count.withLock { $0 }
    #expect(most > 0 && most - before < 200, "\(most - before) more descriptors open during the extraction")
  }
}

/// The path of `id` below the root of `fs` (ids are unique names except hard links: the first).
func pathOf(_ id: FileID, in fs: MemoryFileSystem) -> String? {
  var stack: [(FileID, String)] = [(1, "")]
  while let (folder, path) = stack.popLast() {
    for e in (try? fs.list(folder)) ?? [] {
      let p = path.isEmpty ? e.displayName : "\(path)/\(e.displayName)"
      if e.id == id { return p }
      if e.type == .directory { stack.append((e.id, p)) }
    }
  }
  return nil
}
