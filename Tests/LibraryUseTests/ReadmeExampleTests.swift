// The README's "library in 20 lines", its error example and its writing example, compiled and
// run on small images so that they stay true. This target depends on VMDKBlock alone and
// imports nothing else of the toolkit: `import VMDKBlock` is all an application needs, the
// error type included.

import Foundation
import Testing
import VMDKBlock

/// A folder under the temporary directory, removed with the value.
final class ScratchFolder {
  let path: String
  init() throws {
    path = FileManager.default.temporaryDirectory.appendingPathComponent("vmdk-readme-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }
  deinit { try? FileManager.default.removeItem(atPath: path) }
  func path(_ name: String) -> String { path + "/" + name }
}

/// A 2 MiB monolithicSparse made through the library, with data in `grains` (64 KiB each).
func makeSparse(_ path: String, grains: [Int]) throws {
  let writer = try ImageCreator.create(
    path: path, options: CreateOptions(type: .monolithicSparse, capacityBytes: 2 << 20))
  for g in grains.sorted() {
    let grain = [UInt8](repeating: UInt8(truncatingIfNeeded: g + 1), count: 1 << 16)
    try grain.withUnsafeBytes { try writer.write(at: UInt64(g) << 16, $0) }
  }
  try writer.commit()
}

@Suite struct ReadmeExampleTests {
  @Test func libraryIn20Lines() throws {
    let folder = try ScratchFolder()
    let path = folder.path("disk.vmdk")
    try makeSparse(path, grains: [1, 5])
    var lines: [String] = []

    // --- README begins (with the path and print replaced) ---
    var options = OpenOptions()
    options.allowExternalPaths = false  // extents and parents must stay in the disk's folder
    let disk = try Disk.open(path, options: options)  // the whole chain
    lines.append("\(disk.capacityBytes) \(disk.links.count)")

    // Read any range; unallocated ranges fall through to the parent, then read as zeros.
    let firstMiB = try disk.read(at: 0, count: 1 << 20)

    // What is allocated where, from the grain tables, without reading data.
    try disk.blockStatus { run in
      if run.data { lines.append("data at \(run.start), \(run.length) bytes, link \(run.depth)") }
    }

    // Digest of the whole disk, and a consistency check of the metadata.
    lines.append("\(try disk.digest(.sha256)) \(try disk.check().isClean)")
    // --- README ends ---

    let restore = folder.path("restore.vmdk")
    try makeSparse(restore, grains: [])
    let new = folder.path("new.vmdk")

    // --- README, writing (with the paths replaced) ---
    var create = CreateOptions(type: .streamOptimized, capacityBytes: 8 << 30)
    create.adapterType = .pvscsi
    let writer = try ImageCreator.create(path: new, options: create)
    _ = try disk.copy(to: writer)  // or writer.write(at:_:) in increasing offsets
    try writer.commit()  // flush, then rename into place; writer.abort() removes it all

    options.writable = true  // locks the top link against a second writer
    let rw = try Disk.open(restore, options: options)
    try rw.write(at: 1 << 20, firstMiB)
    try rw.close()
    // --- README ends ---

    let written = try Disk.open(new)
    #expect(written.capacityBytes == 8 << 30)
    #expect(try written.read(at: 0, count: 2 << 20) == disk.read(at: 0, count: 2 << 20))
    #expect(written.metadata("ddb.adapterType") == "pvscsi")
    #expect(try Disk.open(restore).read(at: 1 << 20, count: 1 << 20) == firstMiB)
    #expect(firstMiB.count == 1 << 20)
    #expect(lines[0] == "2097152 1")
    #expect(lines[1] == "data at 65536, 65536 bytes, link 0")
    #expect(lines[2] == "data at 327680, 65536 bytes, link 0")
    #expect(lines[3].hasSuffix(" true"))
  }

  @Test func errorsAreCaughtAsVMDKError() throws {
    let folder = try ScratchFolder()
    let path = folder.path("missing.vmdk")
    var lines: [String] = []

    // --- README, errors (with the path and print replaced) ---
    do {
      _ = try Disk.open(path)
    } catch let e as VMDKError where e.code == .fileNotFound {
      lines.append("no such disk: \(e.file ?? "")")
    } catch let e as VMDKError {
      lines.append("\(e.code.rawValue) retryable: \(e.isRetryable): \(e)")
    }
    // --- README ends ---

    #expect(lines == ["no such disk: \(path)"])
  }

  /// The Transports section's snippet names a host that does not exist here: compiled, not run.
  @Test func transportsSnippetCompiles() {
    let snippet: () throws -> Disk = {
      // --- README, transports ---
      var remote = OpenOptions()
      remote.transport.retries = 8
      remote.transport.tls.caFile = "/etc/pki/lab-ca.pem"
      let export = try Disk.open("nbds://backup-host/disk", options: remote)  // a raw disk
      // --- README ends ---
      return export
    }
    _ = snippet
  }
}
