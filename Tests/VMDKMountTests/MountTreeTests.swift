// MountTree without the kernel: a fake file system with hostile names (`/`, NUL, `.`, `..`,
// empty, duplicates) and a reader that fails, checked for the names served, the paths
// resolved and the errno answered (EIO logged once, with the file and the offset).
import Testing
import VMDKBlock
import VMDKFiles
import VMDKMount

#if canImport(Glibc)
  import Glibc
#endif

/// Root 1 holds the hostile names; file 9 fails every read; folder 5 holds one file.
struct FakeFileSystem: FileSystem {
  var kind: String { "fake" }
  var label: String? { nil }
  var uuid: String? { nil }
  var root: FileID { 1 }

  func list(_ id: FileID) throws -> [DirectoryEntry] {
    func e(_ name: [UInt8], _ id: FileID, _ t: FileType = .regular) -> DirectoryEntry {
      DirectoryEntry(name: name, id: id, type: t)
    }
    switch id {
    case 1:
      return [
        e(Array("plain".utf8), 2), e(Array("a/b".utf8), 3), e([0x6E, 0, 0x6C], 4), e(Array(".".utf8), 6),
        e(Array("..".utf8), 7), e([], 8), e(Array("plain".utf8), 10), e(Array("broken".utf8), 9),
        e(Array("sub".utf8), 5, .directory), e(Array("a%2Fb".utf8), 11),
      ]
    case 5: return [e(Array("inner".utf8), 12)]
    default: throw VMDKError(.corruptFileSystem, "not a folder", file: "fake", offset: id)
    }
  }

  func stat(_ id: FileID) throws -> FileAttributes {
    FileAttributes(
      id: id, type: id == 1 || id == 5 ? .directory : .regular, size: id == 9 ? 100 : 5, mode: 0o640, uid: 7,
      gid: 8, linkCount: 1, modificationTime: FileTime(seconds: 1_700_000_000, nanoseconds: 5))
  }

  func read(_ id: FileID, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    if id == 9 { throw VMDKError(.corruptFileSystem, "extent beyond the volume", file: "fake", offset: 4096) }
    guard offset < 5 else { return 0 }
    // At most 2 bytes a call: the tree must keep reading until the buffer is full.
    let n = min(buffer.count, 5 - Int(offset), 2)
    for i in 0..<n { buffer[i] = UInt8(id) &+ UInt8(offset) &+ UInt8(i) }
    return n
  }

  func readlink(_ id: FileID) throws -> [UInt8] { throw VMDKError(.invalidArgument, "not a link") }
}

final class LogBox: @unchecked Sendable {
  let lines = Locked<[String]>([])
}

@Suite struct MountTreeTests {
  func tree() -> (MountTree, LogBox) {
    let box = LogBox()
    let t = MountTree(content: .fileSystem(FakeFileSystem(), volumeSize: 1 << 20)) { line in
      box.lines.withLock { $0.append(line) }
    }
    return (t, box)
  }

  @Test func hostileNamesAreEscapedOrHiddenAndFirstDuplicateWins() throws {
    let (t, _) = tree()
    let names = try t.list(Array("/".utf8)).map { String(decoding: $0, as: UTF8.self) }
    // "a%2Fb" is the escaped "a/b": the guest's own "a%2Fb" (later) is hidden, as is the
    // second "plain" and the empty name.
    #expect(names == ["plain", "a%2Fb", "n%00l", "%2E", "%2E%2E", "broken", "sub"])
    #expect(try t.resolve(Array("/a%2Fb".utf8)) == .file(3))
    #expect(try t.resolve(Array("/n%00l".utf8)) == .file(4))
    #expect(try t.resolve(Array("/%2E%2E".utf8)) == .file(7))
    #expect(try t.resolve(Array("/plain".utf8)) == .file(2))
    #expect(try t.resolve(Array("/sub/inner".utf8)) == .file(12))
    #expect(throws: MountErrno(ENOENT)) { try t.resolve(Array("/a/b".utf8)) }
    #expect(throws: MountErrno(ENOTDIR)) { try t.resolve(Array("/plain/x".utf8)) }
    #expect(throws: MountErrno(ENOENT)) { try t.resolve(Array("/nothing".utf8)) }
  }

  @Test func namesAreComparedAsBytesNotAsUnicode() {
    // é precomposed and decomposed are equal Swift Strings but different names on disk.
    #expect(MountNames.served(Array("é".utf8)) == Array("é".utf8))
    #expect(MountNames.served(Array("e\u{301}".utf8)) == Array("e\u{301}".utf8))
    #expect(MountNames.served([]) == nil)
    #expect(MountNames.served([0x2F]) == Array("%2F".utf8))
  }

  @Test func attributesAndReadsFillTheBuffer() throws {
    let (t, _) = tree()
    let a = try t.attributes(Array("/plain".utf8))
    #expect(a.inode == 2 && a.size == 5 && a.mode == 0o100640 && a.uid == 7 && a.gid == 8)
    #expect(a.modificationTime == FileTime(seconds: 1_700_000_000, nanoseconds: 5))
    #expect(try t.attributes(Array("/".utf8)).mode == 0o040640)
    let h = try t.open(Array("/plain".utf8))
    var buffer = [UInt8](repeating: 0xFF, count: 8)
    let n = try buffer.withUnsafeMutableBytes { try t.read(handle: h, path: "/plain", at: 1, into: $0) }
    #expect(n == 4 && Array(buffer[0..<4]) == [3, 4, 5, 6])
    #expect(throws: MountErrno(EISDIR)) { try t.open(Array("/sub".utf8)) }
  }

  @Test func readerErrorsAreEIOLoggedOnceWithFileAndOffset() throws {
    let (t, log) = tree()
    let h = try t.open(Array("/broken".utf8))
    var buffer = [UInt8](repeating: 0, count: 16)
    for _ in 0..<3 {
      #expect(throws: MountErrno(EIO)) {
        try buffer.withUnsafeMutableBytes { _ = try t.read(handle: h, path: "/broken", at: 0, into: $0) }
      }
    }
    let lines = log.lines.withLock { $0 }.filter { $0.contains("/broken") }
    // The names of the root folder are reported once, against the folder.
    let names = log.lines.withLock { $0 }.filter { $0.hasPrefix("vmdk-mount: /: ") }
    #expect(names.count == 7, "\(names)")
    #expect(lines.count == 1, "\(lines)")
    #expect(lines.first?.contains("extent beyond the volume") == true && lines.first?.contains("4096") == true)
  }

  @Test func mountOptionsAlwaysReadOnlyAndTheSourceCannotAddOptions() {
    var o = MountOptions(mountpoint: "/mnt")
    o.sourceName = "nbd://h/x,rw,allow_other"
    o.fuseOptions = ["allow_other"]
    #expect(o.optionString == "ro,fsname=nbd://h/x_rw_allow_other,subtype=vmdk,allow_other")
  }

  @Test func rawViewNamesDiskAndPartitions() throws {
    let t = MountTree(content: .raw([]), log: { _ in })
    #expect(try t.resolve(Array("/".utf8)) == .rawRoot)
    #expect(throws: MountErrno(ENOENT)) { try t.resolve(Array("/disk".utf8)) }
    #expect(try t.attributes(Array("/".utf8)).type == .directory)
  }
}
