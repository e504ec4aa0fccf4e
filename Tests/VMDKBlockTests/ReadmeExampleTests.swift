// The README's "library in 20 lines" and its writing example, compiled and run on small
// images so that they stay true.

import Testing
import VMDKBlock

@Suite struct ReadmeExampleTests {
  @Test func libraryIn20Lines() throws {
    var image = SparseImage()
    image.fill([1, 5])
    let folder = try TempFolder()
    let path = try folder.write("disk.vmdk", image.build().bytes)
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

    let restore = try folder.write("restore.vmdk", SparseImage().build().bytes)
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
