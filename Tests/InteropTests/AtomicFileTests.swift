// The one temp-file-then-rename (AtomicFile) under failure (issue 10.3): every writer and
// rewrite is run by its tool with a file-size limit (`ulimit -f`, what a full disk looks like
// to a writer) or a source that breaks half-way. Each must exit 1, leave no temporary file
// (`.NAME.tmp-...`, and the old `.NAME.cid-....tmp`) and leave the original untouched.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

/// Runs `tool ARGS` under `ulimit -f kib` (1024-byte blocks).
func runLimited(_ tool: String, _ arguments: [String], kib: Int) throws -> ProcessResult {
  try runProcess(
    "/bin/bash", ["-c", "ulimit -f \(kib); exec \"$0\" \"$@\"", try builtToolPath(tool)] + arguments)
}

/// Temporary files anywhere under `folder`.
func temporaryFiles(_ folder: String) -> [String] {
  let all = (FileManager.default.enumerator(atPath: folder)?.allObjects as? [String]) ?? []
  return all.filter { ($0 as NSString).lastPathComponent.contains(".tmp") }
}

/// SHA-256 of every file in `folder`, by name: "the original untouched".
func folderDigests(_ folder: String) throws -> [String: String] {
  var out: [String: String] = [:]
  for name in try FileManager.default.contentsOfDirectory(atPath: folder) {
    out[name] = try fileDigest("\(folder)/\(name)", .sha256)
  }
  return out
}

/// A monolithicFlat disk of `capacity` zero bytes whose descriptor is over 4 KiB.
func makeFlatWithLargeDescriptor(_ folder: String, capacity: UInt64 = 1 << 20) throws -> String {
  try Data(count: Int(capacity)).write(to: URL(fileURLWithPath: "\(folder)/flat-flat.vmdk"))
  var text = """
    # Disk DescriptorFile
    version=1
    encoding="UTF-8"
    CID=1234abcd
    parentCID=ffffffff
    createType="monolithicFlat"

    # Extent description
    RW \(capacity / 512) FLAT "flat-flat.vmdk" 0

    # The Disk Data Base
    #DDB

    ddb.adapterType = "lsilogic"
    ddb.virtualHWVersion = "4"

    """
  for i in 0..<60 { text += "ddb.custom.n\(i) = \"\(String(repeating: "x", count: 80))\"\n" }
  let path = "\(folder)/flat.vmdk"
  try Data(text.utf8).write(to: URL(fileURLWithPath: path))
  return path
}

@Suite struct AtomicFileTests {
  func expectCleanFailure(
    _ r: ProcessResult, folder: String, before: [String: String], sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    #expect(r.status == 1, "status \(r.status): \(r.errorOutput)", sourceLocation: sourceLocation)
    #expect(
      r.errorOutput.split(separator: "\n").count == 1, "one line: \(r.errorOutput)", sourceLocation: sourceLocation)
    #expect(temporaryFiles(folder).isEmpty, "left: \(temporaryFiles(folder))", sourceLocation: sourceLocation)
    #expect(try folderDigests(folder) == before, "the original changed", sourceLocation: sourceLocation)
  }

  /// Disk+Write's descriptor replacement (a metadata change): the temporary descriptor
  /// cannot be written; it used to stay behind as `.flat.vmdk.cid-N.tmp`.
  @Test func descriptorRewrite() throws {
    try withTemporaryFolder { folder in
      let image = try makeFlatWithLargeDescriptor(folder)
      let before = try folderDigests(folder)
      let r = try runLimited("vmdk-disk", ["metadata", image, "ddb.custom.new", "value"], kib: 2)
      try expectCleanFailure(r, folder: folder, before: before)
      // Without the limit the same change succeeds.
      _ = try runChecked(try builtToolPath("vmdk-disk"), ["metadata", image, "ddb.custom.new", "value"])
      #expect(temporaryFiles(folder).isEmpty)
    }
  }

  /// A shrink of a flat disk: the descriptor's replacement (Maintenance.replaceFile) fails.
  @Test func resizeDescriptorReplacement() throws {
    try withTemporaryFolder { folder in
      let image = try makeFlatWithLargeDescriptor(folder)
      let before = try folderDigests(folder)
      let r = try runLimited("vmdk-disk", ["resize", image, "512K", "--shrink"], kib: 2)
      try expectCleanFailure(r, folder: folder, before: before)
    }
  }

  /// compact's sparse rewrite (SparseExtentRewriter) passes the limit half-way.
  @Test func compactRewrite() throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/sparse.vmdk"
      try Qemu.create(src, size: 64 << 20)
      try Qemu.io(src, ["write -P 0x11 0 16M", "write -z 20M 1M", "write -P 0x22 40M 8M"])
      let before = try folderDigests(folder)
      let r = try runLimited("vmdk-disk", ["compact", src], kib: 8192)
      try expectCleanFailure(r, folder: folder, before: before)
    }
  }

  /// A resize that cannot grow in place rewrites the extent; the rewrite fails.
  @Test func resizeRewrite() throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/sparse.vmdk"
      try Qemu.create(src, size: 64 << 20)
      try Qemu.io(src, ["write -P 0x11 0 24M"])
      let before = try folderDigests(folder)
      let r = try runLimited("vmdk-disk", ["resize", src, "64G"], kib: 16384)
      try expectCleanFailure(r, folder: folder, before: before)
    }
  }

  /// Every writer, full: nothing but the source is left.
  @Test(arguments: DiskType.allCases)
  func convertFull(type: DiskType) throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: 96 << 20)
      try Qemu.io(src, ["write -P 0x5a 0 40M", "write -P 0x5b 60M 30M"])
      let before = try folderDigests(folder)
      // Patterns compress well: a streamOptimized output of them is about 600 KiB.
      let r = try runLimited(
        "vmdk-convert", [src, "\(folder)/out.vmdk", "--type", type.rawValue, "--split-size", "16M", "-q"],
        kib: type == .streamOptimized ? 256 : 8192)
      try expectCleanFailure(r, folder: folder, before: before)
    }
  }

  /// A source that breaks half-way (a grain table entry past the end of the file), for
  /// each writer: nothing left, the source untouched.
  @Test(arguments: [DiskType.monolithicSparse, .streamOptimized, .monolithicFlat, .twoGbMaxExtentSparse])
  func convertBadSource(type: DiskType) throws {
    try withTemporaryFolder { folder in
      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: 64 << 20)
      try Qemu.io(src, ["write -P 0x11 0 16M", "write -P 0x22 40M 1M"])
      let file = try LocalFile(path: src, writable: true)
      let gd = try file.readExactly(at: 30 * 512, count: 4, what: "gd")
      let gt0 = UInt64(gd[0]) | UInt64(gd[1]) << 8 | UInt64(gd[2]) << 16 | UInt64(gd[3]) << 24
      try [UInt8](arrayLiteral: 0, 0, 0, 0x40).withUnsafeBytes { try file.write(at: gt0 * 512 + 400 * 4, from: $0) }
      let before = try folderDigests(folder)
      let r = try Convert.run([src, "\(folder)/out.vmdk", "--type", type.rawValue, "--split-size", "16M", "-q"])
      try expectCleanFailure(r, folder: folder, before: before)
    }
  }

  /// vmdk-disk create of a preallocated (vmfs) disk larger than the limit.
  @Test func createPreallocatedFull() throws {
    try withTemporaryFolder { folder in
      let r = try runLimited(
        "vmdk-disk", ["create", "\(folder)/new.vmdk", "--type", "vmfs", "--capacity", "64M"], kib: 1024)
      try expectCleanFailure(r, folder: folder, before: [:])
    }
  }
}
