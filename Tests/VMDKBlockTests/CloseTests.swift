// close() releases everything at once: a program that opens thousands of disks (a C caller,
// a server) gets every file descriptor back when it closes them, whether or not it still
// holds the objects. Reads after close are a typed error; close is idempotent.

import Foundation
import Testing
import VMDKBlock

/// The process's open descriptors on files in `folder` (other suites run in parallel in this
/// process and open files of their own: only ours count).
private func openDescriptors(in folder: TempFolder) throws -> Int {
  let real = (try? FileManager.default.destinationOfSymbolicLink(atPath: folder.path)) ?? folder.path
  let prefixes = [
    folder.path + "/", real + "/", URL(fileURLWithPath: folder.path).resolvingSymlinksInPath().path + "/",
  ]
  return try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").filter { fd in
    guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd) else {
      return false
    }
    return prefixes.contains { target.hasPrefix($0) }
  }.count
}

@Suite(.serialized) struct CloseTests {
  /// A sparse disk, a stream, a two-link chain and a split (twoGbMaxExtentSparse) disk.
  static func images(in folder: TempFolder) throws -> [String] {
    var sparse = SparseImage()
    sparse.fill([0, 3])
    let a = try folder.write("sparse.vmdk", sparse.build().bytes)

    var stream = StreamImage()
    stream.fill([1])
    let b = try folder.write("stream.vmdk", stream.build().bytes)

    var base = SparseImage()
    base.descriptor = descriptorText(
      createType: "monolithicSparse", cid: "12345678", extents: [#"RW 4096 SPARSE "base.vmdk""#])
    base.fill([2])
    try folder.write("base.vmdk", base.build().bytes)
    var child = SparseImage()
    child.descriptor = descriptorText(
      createType: "monolithicSparse", parentCID: "12345678", parentHint: "base.vmdk",
      extents: [#"RW 4096 SPARSE "child.vmdk""#])
    child.fill([5])
    let c = try folder.write("child.vmdk", child.build().bytes)

    var piece = SparseImage()
    piece.descriptor = nil
    piece.fill([1])
    try folder.write("split-s001.vmdk", piece.build().bytes)
    try folder.write("split-s002.vmdk", piece.build().bytes)
    let d = try folder.write(
      "split.vmdk",
      text: descriptorText(
        createType: "twoGbMaxExtentSparse",
        extents: [#"RW 4096 SPARSE "split-s001.vmdk""#, #"RW 4096 SPARSE "split-s002.vmdk""#]))
    return [a, b, c, d]
  }

  @Test func tenThousandOpensAndClosesGiveEveryDescriptorBack() throws {
    let folder = try TempFolder()
    let paths = try Self.images(in: folder)
    let before = try openDescriptors(in: folder)
    var kept: [Disk] = []  // the objects stay alive: only close() may release their files
    var highest = before
    for i in 0..<10_000 {
      let disk = try Disk.open(paths[i % paths.count])
      _ = try disk.read(at: 0, count: 65536)
      if i % 1000 == 0 { highest = max(highest, try openDescriptors(in: folder)) }
      try disk.close()
      kept.append(disk)
    }
    let after = try openDescriptors(in: folder)
    #expect(after == before, "descriptors before: \(before), after: \(after)")
    #expect(before == 0)
    #expect(highest >= 1, "the count sees an open disk's files")
    #expect(highest <= 3, "at most one disk's files are open at a time: \(highest)")
    #expect(kept.count == 10_000)
  }

  @Test func aClosedDiskRefusesReadsAndClosesAgainQuietly() throws {
    let folder = try TempFolder()
    for path in try Self.images(in: folder) {
      let disk = try Disk.open(path)
      try disk.close()
      try disk.close()
      let e = try #require(throws: VMDKError.self) { _ = try disk.read(at: 0, count: 512) }
      #expect(e.code == .invalidArgument && e.message.contains("closed"), "\(e)")
      // Everything else that reads the files gives a typed error too, never a trap.
      #expect(throws: VMDKError.self) { _ = try disk.digest() }
    }
  }

  @Test func aWritableDiskIsFlushedUnlockedAndReleased() throws {
    let folder = try TempFolder()
    let path = try folder.write("w.vmdk", SparseImage().build().bytes)
    let before = try openDescriptors(in: folder)
    var options = OpenOptions()
    options.writable = true
    let disk = try Disk.open(path, options: options)
    try disk.write(at: 65536, [UInt8](repeating: 7, count: 4096))
    try disk.close()
    #expect(try openDescriptors(in: folder) == before)
    #expect(throws: VMDKError.self) { try disk.write(at: 0, [UInt8](repeating: 1, count: 512)) }
    // The lock went with the close: a second writer may open it, and sees the write.
    let again = try Disk.open(path, options: options)
    #expect(try again.read(at: 65536, count: 4096) == [UInt8](repeating: 7, count: 4096))
    try again.close()
  }

  @Test func closeWaitsForReadsOnOtherThreads() throws {
    let folder = try TempFolder()
    let path = try Self.images(in: folder)[2]
    for _ in 0..<50 {
      let disk = try Disk.open(path)
      DispatchQueue.concurrentPerform(iterations: 4) { i in
        if i == 0 {
          try? disk.close()
        } else {
          for _ in 0..<20 {
            do { _ = try disk.read(at: 0, count: 1 << 16) } catch let e as VMDKError {
              #expect(e.code == .invalidArgument, "\(e)")
            } catch { Issue.record("\(error)") }
          }
        }
      }
    }
  }
}
