// Extraction from a file system in memory that has what FAT lacks: symbolic links, hard
// links, a sparse file, odd modes and times; and hostile names and link targets.
import Foundation
import Testing
import VMDKBlock

@testable import VMDKFiles

#if canImport(Glibc)
  import Glibc
#endif

/// A read-only tree in memory. Ids: 1 root, then the order of `nodes`.
struct MemoryFileSystem: FileSystem {
  struct Node: Sendable {
    var attributes: FileAttributes
    var children: [DirectoryEntry] = []
    var data: [UInt8] = []
    var holes: [Range<UInt64>] = []
    var target: [UInt8] = []
  }
  var nodes: [FileID: Node]
  var kind: String { "memory" }
  var label: String? { nil }
  var uuid: String? { nil }
  var root: FileID { 1 }

  func node(_ id: FileID) throws -> Node {
    guard let n = nodes[id] else { throw VMDKError(.fileNotFound, "no id \(id)") }
    return n
  }
  func list(_ id: FileID) throws -> [DirectoryEntry] { try node(id).children }
  func stat(_ id: FileID) throws -> FileAttributes { try node(id).attributes }
  func readlink(_ id: FileID) throws -> [UInt8] { try node(id).target }
  func read(_ id: FileID, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    let n = try node(id)
    let size = n.attributes.size
    guard offset < size else { return 0 }
    let count = Int(min(UInt64(buffer.count), size - offset))
    for i in 0..<count {
      let p = offset + UInt64(i)
      buffer[i] = p < UInt64(n.data.count) ? n.data[Int(p)] : 0
    }
    return count
  }
  func dataRanges(_ id: FileID) throws -> [Range<UInt64>] {
    let n = try node(id)
    if n.holes.isEmpty { return n.attributes.size == 0 ? [] : [0..<n.attributes.size] }
    var out: [Range<UInt64>] = []
    var pos: UInt64 = 0
    for h in n.holes {
      if h.lowerBound > pos { out.append(pos..<h.lowerBound) }
      pos = h.upperBound
    }
    if pos < n.attributes.size { out.append(pos..<n.attributes.size) }
    return out
  }

  static func sample(extraRootEntries: [DirectoryEntry] = []) -> MemoryFileSystem {
    let t = FileTime(seconds: 1_600_000_000, nanoseconds: 123_000_000)
    func a(_ id: FileID, _ type: FileType, _ size: UInt64, _ mode: UInt32, links: UInt32 = 1) -> FileAttributes {
      FileAttributes(id: id, type: type, size: size, mode: mode, linkCount: links, accessTime: t, modificationTime: t)
    }
    var nodes: [FileID: Node] = [:]
    nodes[1] = Node(
      attributes: a(1, .directory, 0, 0o755),
      children: [
        DirectoryEntry(name: Array("dir".utf8), id: 2, type: .directory),
        DirectoryEntry(name: Array("link".utf8), id: 4, type: .symlink),
        DirectoryEntry(name: Array("sparse".utf8), id: 5, type: .regular),
        DirectoryEntry(name: Array("hard1".utf8), id: 3, type: .regular),
      ] + extraRootEntries)
    nodes[2] = Node(
      attributes: a(2, .directory, 0, 0o750),
      children: [DirectoryEntry(name: Array("hard2".utf8), id: 3, type: .regular)])
    nodes[3] = Node(attributes: a(3, .regular, 5, 0o640, links: 2), data: Array("hello".utf8))
    nodes[4] = Node(attributes: a(4, .symlink, 9, 0o777), target: Array("dir/hard2".utf8))
    let big: UInt64 = 64 << 20
    nodes[5] = Node(
      attributes: a(5, .regular, big, 0o600), data: Array("start".utf8), holes: [4096..<(big - 4096)])
    nodes[6] = Node(attributes: a(6, .regular, 3, 0o644), data: Array("bad".utf8))
    nodes[7] = Node(attributes: a(7, .symlink, 3, 0o777), target: [0x61, 0, 0x62])
    return MemoryFileSystem(nodes: nodes)
  }
}

func temporaryFolder() throws -> String {
  var template = Array("\(NSTemporaryDirectory())/vmdk-files-test.XXXXXX".utf8CString)
  guard let p = mkdtemp(&template) else { throw VMDKError(.fileAccess, "mkdtemp") }
  return String(cString: p)
}

@Suite struct ExtractTests {
  @Test func keepsLinksHolesModesAndTimes() throws {
    let dir = try temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let x = try Extractor(fileSystem: MemoryFileSystem.sample(), to: "\(dir)/out")
    try x.extract(path: "/")
    #expect(x.report.failures.isEmpty, "\(x.report.failures)")
    #expect(x.report.files == 2 && x.report.hardLinks == 1 && x.report.symlinks == 1 && x.report.directories == 1)
    var h1 = Glibc.stat()
    var h2 = Glibc.stat()
    #expect(lstat("\(dir)/out/hard1", &h1) == 0 && lstat("\(dir)/out/dir/hard2", &h2) == 0)
    #expect(h1.st_ino == h2.st_ino && h1.st_nlink == 2)
    #expect(h1.st_mode & 0o7777 == 0o640)
    #expect(h1.st_mtim.tv_sec == 1_600_000_000 && h1.st_mtim.tv_nsec == 123_000_000)
    var d = Glibc.stat()
    #expect(lstat("\(dir)/out/dir", &d) == 0 && d.st_mode & 0o7777 == 0o750)
    #expect(d.st_mtim.tv_sec == 1_600_000_000)  // set after its contents
    #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/out/link") == "dir/hard2")
    var s = Glibc.stat()
    #expect(lstat("\(dir)/out/sparse", &s) == 0)
    #expect(s.st_size == 64 << 20)
    #expect(s.st_blocks * 512 < 1 << 20, "the holes were written: \(s.st_blocks) blocks")
    let head = try FileHandle(forReadingFrom: URL(fileURLWithPath: "\(dir)/out/sparse")).read(upToCount: 5)
    #expect(head == Data("start".utf8))
  }

  @Test func unsafeNamesAndTargetsAreReportedTheRestRestored() throws {
    let dir = try temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let bad = [
      DirectoryEntry(name: Array("..".utf8), id: 6, type: .regular),
      DirectoryEntry(name: Array("../escape".utf8), id: 6, type: .regular),
      DirectoryEntry(name: [0x61, 0, 0x62], id: 6, type: .regular),
      DirectoryEntry(name: Array("nul-target".utf8), id: 7, type: .symlink),
    ]
    let x = try Extractor(fileSystem: MemoryFileSystem.sample(extraRootEntries: bad), to: "\(dir)/out")
    try x.extract(path: "/")
    #expect(x.report.failures.count == 4)
    #expect(x.report.failures.allSatisfy { $0.error.code == .unsafeName })
    #expect(x.report.files == 2)
    #expect(!FileManager.default.fileExists(atPath: "\(dir)/escape"))
  }

  @Test func existingFilesNeedForce() throws {
    let dir = try temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let fs = MemoryFileSystem.sample()
    try Extractor(fileSystem: fs, to: "\(dir)/out").extract(path: "/hard1")
    let again = try Extractor(fileSystem: fs, to: "\(dir)/out")
    try again.extract(path: "/hard1")
    #expect(again.report.failures.first?.error.code == .fileExists)
    var o = ExtractOptions()
    o.force = true
    let forced = try Extractor(fileSystem: fs, to: "\(dir)/out", options: o)
    try forced.extract(path: "/hard1")
    #expect(forced.report.failures.isEmpty && forced.report.files == 1)
  }
}
