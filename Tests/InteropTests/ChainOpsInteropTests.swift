// vmdk-disk's chain operations against qemu-img: our snapshots read through qemu-img as
// through us and qemu accepts them (info --backing-chain, check, qemu-io writes); our commit
// and rebase give the content qemu-img's commit and rebase give on a copy of the same
// qemu-made chain; qemu-img check passes after every operation; write from a file and from
// standard input; the restore guard through vmdk-disk write and vmdk-convert --force.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

enum DiskTool {
  static func path() throws -> String { try builtToolPath("vmdk-disk") }

  /// Runs vmdk-disk; returns the result whatever the exit status. `stdin`: a file to feed.
  static func run(_ arguments: [String], stdin: String? = nil) throws -> ProcessResult {
    guard let stdin else { return try runProcess(try path(), arguments) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try path())
    process.arguments = arguments
    let err = Pipe()
    let out = Pipe()
    process.standardOutput = out
    process.standardError = err
    guard let input = FileHandle(forReadingAtPath: stdin) else { throw ToolFailure("cannot open \(stdin)") }
    process.standardInput = input
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ProcessResult(status: process.terminationStatus, stdout: stdout, stderr: stderr)
  }

  /// Runs vmdk-disk, which must succeed.
  @discardableResult
  static func checked(_ arguments: [String], stdin: String? = nil) throws -> ProcessResult {
    let r = try run(arguments, stdin: stdin)
    guard r.status == 0 else {
      throw ToolFailure("`vmdk-disk \(arguments.joined(separator: " "))` exited \(r.status): \(r.errorOutput)")
    }
    return r
  }
}

/// `qemu-img check` must pass (exit 0, no leaks) on `image`.
func expectQemuCheck(_ image: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
  let r = try runProcess(try requireTool("qemu-img"), ["check", image])
  #expect(r.status == 0, "qemu-img check \(image): \(r.output) \(r.errorOutput)", sourceLocation: sourceLocation)
  #expect(!r.output.contains("leaked"), "qemu-img check \(image): \(r.output)", sourceLocation: sourceLocation)
}

/// Copies every file of `from` into the new folder `to`.
func copyFolder(_ from: String, _ to: String) throws {
  try FileManager.default.createDirectory(atPath: to, withIntermediateDirectories: true)
  for name in try FileManager.default.contentsOfDirectory(atPath: from) where !name.hasPrefix("reference-") {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: "\(from)/\(name)", isDirectory: &isDir), !isDir.boolValue else {
      continue
    }
    try FileManager.default.copyItem(atPath: "\(from)/\(name)", toPath: "\(to)/\(name)")
  }
}

/// The standard three-link chain (ChainTests) in `folder/chain`, with zeroed grains in the
/// middle link; paths top first.
func makeStandardChain(_ folder: String) throws -> Chain {
  let dir = "\(folder)/chain"
  try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  return try Chain.make(in: dir, Chain.standard())
}

/// The standard chain again, as qcow2 (`folder/qcow/link0.qcow2` ...), with the same writes,
/// and `newbase.qcow2` beside it; returns the top's path.
func makeQcow2Twin(_ folder: String, newBaseWrites: [String]) throws -> String {
  let dir = "\(folder)/qcow"
  try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  let links = Chain.standard()
  var top = ""
  for (n, link) in links.enumerated() {
    top = "\(dir)/link\(n).qcow2"
    let parent = n == 0 ? [] : ["-b", "link\(n - 1).qcow2", "-F", "qcow2"]
    try Qemu.img(["create", "-q", "-f", "qcow2", "-o", "cluster_size=65536"] + parent + [top, "\(link.capacity)"])
    try runChecked(try requireTool("qemu-io"), ["-f", "qcow2"] + link.writes.flatMap { ["-c", $0] } + [top])
  }
  let newBase = "\(dir)/newbase.qcow2"
  try Qemu.img("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", newBase, "\(4 << 20)")
  try runChecked(try requireTool("qemu-io"), ["-f", "qcow2"] + newBaseWrites.flatMap { ["-c", $0] } + [newBase])
  return top
}

/// Which operation a rebase case runs: ours and qemu-img's arguments.
struct RebaseCase: Sendable, CustomTestStringConvertible {
  var testDescription: String
  var ours: [String]
  var qemu: [String]

  static let all = [
    RebaseCase(testDescription: "safe", ours: ["--parent", "NEW"], qemu: ["-b", "newbase.vmdk", "-F", "vmdk"]),
    RebaseCase(
      testDescription: "unsafe", ours: ["--parent", "NEW", "--unsafe"],
      qemu: ["-u", "-b", "newbase.vmdk", "-F", "vmdk"]
    ),
    RebaseCase(testDescription: "no parent", ours: ["--no-parent"], qemu: ["-b", ""]),
  ]
}

@Suite struct ChainOpsInteropTests {
  /// Our snapshots on a qemu-made base: qemu-img reads the chain as we do, accepts the child
  /// (info --backing-chain, check) and writes into it with qemu-io; a second snapshot on top.
  @Test(arguments: [false, true])
  func ourSnapshotsReadAsQemu(split: Bool) throws {
    try withTemporaryFolder { folder in
      let base = "\(folder)/base.vmdk"
      try Qemu.create(base, size: 6 << 20, options: ["adapter_type=lsilogic"])
      try Qemu.io(base, ["write -P 0x11 0 1048576", "write -P 0x12 3145728 65536"])
      let child = "\(folder)/child.vmdk"
      try DiskTool.checked(["snapshot", base, child] + (split ? ["--split"] : []))
      #expect(try descriptorValue("parentFileNameHint", inFile: child) == "base.vmdk")
      // qemu writes the CID without zero padding (%x), we with: compare the numbers.
      let parentCID = try descriptorValue("parentCID", inFile: child).flatMap { UInt32($0, radix: 16) }
      #expect(
        try parentCID != nil && parentCID == descriptorValue("CID", inFile: base).flatMap { UInt32($0, radix: 16) })
      let info = try Qemu.img("info", "--backing-chain", child).output
      #expect(info.contains("backing file: base.vmdk"), "\(info)")
      #expect(info.contains("virtual size: 6 MiB"), "\(info)")
      try expectQemuCheck(child)
      try expectAgreesWithQemu(child, scratch: folder)
      #expect(try Qemu.rawSHA256(child, scratch: folder) == Qemu.rawSHA256(base, scratch: folder))

      // qemu writes into our child; we write too; then a snapshot of the child.
      try Qemu.io(child, ["write -P 0x21 524288 1048576", "write -z 3145728 4096"])
      var rw = OpenOptions()
      rw.writable = true
      let disk = try Disk.open(child, options: rw)
      try disk.write(at: 5 << 20 + 100, [UInt8](repeating: 0x22, count: 3000))
      try disk.close()
      try expectQemuCheck(child)
      try expectAgreesWithQemu(child, scratch: folder)
      let top = "\(folder)/top.vmdk"
      try DiskTool.checked(["snapshot", child, top])
      try Qemu.io(top, ["write -P 0x31 1000000 200000"])
      try expectQemuCheck(top)
      let chain = try Qemu.img("info", "--backing-chain", top).output
      #expect(chain.contains("/child.vmdk\n") && chain.contains("/base.vmdk\n"), "\(chain)")
      try expectAgreesWithQemu(top, scratch: folder)
      // An existing child is refused, and nothing changes.
      let again = try DiskTool.run(["snapshot", base, child])
      #expect(again.status == 1)
      #expect(again.errorOutput.contains("exists"), "\(again.errorOutput)")
    }
  }

  /// Commit of the top link and of the middle link (its zeroed grains hide base data): our
  /// parent reads as qemu-img commit's; the child is left byte for byte; check passes.
  @Test(arguments: [0, 1])
  func commitMatchesQemu(link: Int) throws {
    try withTemporaryFolder { folder in
      let chain = try makeStandardChain(folder)
      let chainDigest = try Qemu.rawSHA256(chain.paths[link], scratch: folder)
      try copyFolder("\(folder)/chain", "\(folder)/ours")
      try copyFolder("\(folder)/chain", "\(folder)/qemu")
      let name = (chain.paths[link] as NSString).lastPathComponent
      let parentName = (chain.paths[link + 1] as NSString).lastPathComponent
      let childBefore = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/ours/\(name)"))

      try DiskTool.checked(["commit", "\(folder)/ours/\(name)", "--quiet"])
      try Qemu.img("commit", "-q", "\(folder)/qemu/\(name)")

      let ours = try Qemu.rawSHA256("\(folder)/ours/\(parentName)", scratch: folder)
      #expect(try ours == Qemu.rawSHA256("\(folder)/qemu/\(parentName)", scratch: folder), "parent after commit")
      #expect(ours == chainDigest, "the parent reads what the chain read")
      try expectQemuCheck("\(folder)/ours/\(parentName)")
      try expectAgreesWithQemu("\(folder)/ours/\(parentName)", scratch: folder)
      #expect(
        try Data(contentsOf: URL(fileURLWithPath: "\(folder)/ours/\(name)")) == childBefore,
        "the child is left as it was")
      #expect(
        try Data(contentsOf: URL(fileURLWithPath: "\(folder)/qemu/\(name)")) == childBefore,
        "qemu-img commit leaves a VMDK child as it was too")
      try expectQemuCheck("\(folder)/ours/\(name)")
    }
  }

  /// Rebase onto a new qemu-made base (safe and unsafe) and onto nothing: the child reads as
  /// after qemu-img rebase; safe modes keep the content; check passes. qemu-img 7.2 cannot
  /// rebase a VMDK ("Could not change the backing file ...: Operation not supported": the
  /// driver cannot rewrite the backing name), so the reference is qemu-img rebase on a qcow2
  /// twin of the chain made with the same qemu-io writes (64 KiB clusters, as our grains, so
  /// partial writes copy the same ranges up from the parent).
  @Test(arguments: RebaseCase.all)
  func rebaseMatchesQemu(c: RebaseCase) throws {
    try withTemporaryFolder { folder in
      let chain = try makeStandardChain(folder)
      let newBaseWrites = ["write -P 0x11 0 524288", "write -P 0x55 1048576 2097152"]
      let newBase = "\(folder)/chain/newbase.vmdk"
      try Qemu.create(newBase, size: 4 << 20)
      try Qemu.io(newBase, newBaseWrites)
      let before = try Qemu.rawSHA256(chain.top, scratch: folder)
      try copyFolder("\(folder)/chain", "\(folder)/ours")
      try copyFolder("\(folder)/chain", "\(folder)/qemu")
      let top = (chain.top as NSString).lastPathComponent

      let args = c.ours.map { $0 == "NEW" ? "\(folder)/ours/newbase.vmdk" : $0 }
      try DiskTool.checked(["rebase", "\(folder)/ours/\(top)"] + args)
      let refused = try runProcess(
        try requireTool("qemu-img"), ["rebase", "-f", "vmdk"] + c.qemu + ["\(folder)/qemu/\(top)"])
      #expect(refused.status != 0, "qemu-img rebases VMDK now: compare with it directly")

      let twin = try makeQcow2Twin(folder, newBaseWrites: newBaseWrites)
      #expect(try Qemu.rawSHA256(twin, scratch: folder) == before, "the twin reads as the VMDK chain")
      let qemuArgs = c.qemu.map { $0 == "newbase.vmdk" ? "newbase.qcow2" : ($0 == "vmdk" ? "qcow2" : $0) }
      try Qemu.img(["rebase", "-f", "qcow2"] + qemuArgs + [twin])

      let ours = try Qemu.rawSHA256("\(folder)/ours/\(top)", scratch: folder)
      #expect(try ours == Qemu.rawSHA256(twin, scratch: folder), "\(c.testDescription)")
      if c.testDescription != "unsafe" { #expect(ours == before, "a safe rebase keeps the content") }
      try expectQemuCheck("\(folder)/ours/\(top)")
      try expectAgreesWithQemu("\(folder)/ours/\(top)", scratch: folder)
      let info = try Qemu.img("info", "--backing-chain", "\(folder)/ours/\(top)").output
      if c.testDescription == "no parent" {
        #expect(!info.contains("backing file"), "\(info)")
      } else {
        #expect(info.contains("backing file: newbase.vmdk"), "\(info)")
      }
    }
  }

  /// --unsafe refuses a parent of another capacity and changes nothing.
  @Test func unsafeRebaseRefusesOtherCapacity() throws {
    try withTemporaryFolder { folder in
      let chain = try makeStandardChain(folder)
      let other = "\(folder)/chain/other.vmdk"
      try Qemu.create(other, size: 8 << 20)
      let before = try Data(contentsOf: URL(fileURLWithPath: chain.top))
      let r = try DiskTool.run(["rebase", chain.top, "--parent", other, "--unsafe"])
      #expect(r.status == 1)
      #expect(r.errorOutput.contains("[invalid argument 3]"), "\(r.errorOutput)")
      #expect(r.errorOutput.split(separator: "\n").count == 1)
      #expect(try Data(contentsOf: URL(fileURLWithPath: chain.top)) == before)
    }
  }

  /// vmdk-disk write from a file and from standard input: qemu-img reads the bytes there.
  @Test(arguments: [false, true])
  func writeFromFileAndStdin(stdin: Bool) throws {
    try withTemporaryFolder { folder in
      let image = "\(folder)/disk.vmdk"
      try Qemu.create(image, size: 8 << 20)
      try Qemu.io(image, ["write -P 0x11 0 8388608"])
      let data = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
      let input = "\(folder)/input.bin"
      try Data(data).write(to: URL(fileURLWithPath: input))
      let offset = 1_000_001
      if stdin {
        try DiskTool.checked(["write", image, "--offset", "\(offset)"], stdin: input)
      } else {
        try DiskTool.checked(["write", image, "--offset", "\(offset)", "--input", input])
      }
      try expectQemuCheck(image)
      let raw = "\(folder)/out.raw"
      try Qemu.img("convert", "-O", "raw", image, raw)
      let bytes = try Data(contentsOf: URL(fileURLWithPath: raw))
      var want = [UInt8](repeating: 0x11, count: 8 << 20)
      want.replaceSubrange(offset..<(offset + data.count), with: data)
      #expect(Array(bytes) == want)
      // Past the end: refused before anything is written.
      let tooFar = try DiskTool.run(["write", image, "--offset", "\((8 << 20) - 1000)", "--input", input])
      #expect(tooFar.status == 1)
      #expect(tooFar.errorOutput.contains("out of range"), "\(tooFar.errorOutput)")
    }
  }

  /// The restore guard through vmdk-disk write and vmdk-convert --force, for our snapshots
  /// and qemu's: exit 1, one line naming the count and what to do, the disk unchanged.
  @Test(arguments: [false, true])
  func restoreGuardThroughTools(qemuSnapshot: Bool) throws {
    try withTemporaryFolder { folder in
      let base = "\(folder)/base.vmdk"
      try Qemu.create(base, size: 4 << 20)
      try Qemu.io(base, ["write -P 0x11 0 65536"])
      if qemuSnapshot {
        try Qemu.img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "\(folder)/snap.vmdk")
      } else {
        try DiskTool.checked(["snapshot", base, "\(folder)/snap.vmdk"])
      }
      let input = "\(folder)/input.bin"
      try Data(repeating: 0x99, count: 4096).write(to: URL(fileURLWithPath: input))
      let before = try Data(contentsOf: URL(fileURLWithPath: base))

      let w = try DiskTool.run(["write", base, "--offset", "0", "--input", input])
      #expect(w.status == 1)
      #expect(w.errorOutput.contains("1 snapshot on top of it (snap.vmdk)"), "\(w.errorOutput)")
      #expect(w.errorOutput.contains("commit or delete them, or restore to another place"))
      #expect(w.errorOutput.contains("20021"))
      #expect(w.errorOutput.split(separator: "\n").count == 1)
      let w2 = try DiskTool.run(["write", base, "--offset", "0"], stdin: input)
      #expect(w2.status == 1)

      let src = "\(folder)/src.vmdk"
      try Qemu.create(src, size: 4 << 20)
      let c = try Convert.run([src, base, "--force", "--quiet"])
      #expect(c.status == 1)
      #expect(c.errorOutput.contains("snapshot"), "\(c.errorOutput)")
      #expect(try Data(contentsOf: URL(fileURLWithPath: base)) == before, "the disk is unchanged")
      #expect(try leftovers(folder, keeping: ["base.vmdk", "snap.vmdk", "input.bin", "src.vmdk"]).isEmpty)
      try expectQemuCheck("\(folder)/snap.vmdk")

      // Into the snapshot itself, writes go.
      try DiskTool.checked(["write", "\(folder)/snap.vmdk", "--offset", "0", "--input", input])
      try expectQemuCheck("\(folder)/snap.vmdk")
      try expectAgreesWithQemu("\(folder)/snap.vmdk", scratch: folder)
      // Once committed, the snapshot is stale and the base takes writes again.
      try DiskTool.checked(["commit", "\(folder)/snap.vmdk", "--quiet"])
      try DiskTool.checked(["write", base, "--offset", "0", "--input", input])
      try expectQemuCheck(base)
    }
  }

  /// create for every type qemu reads; metadata set, print and delete.
  @Test(arguments: [DiskType.monolithicSparse, .twoGbMaxExtentSparse, .monolithicFlat, .streamOptimized])
  func createAndMetadata(type: DiskType) throws {
    try withTemporaryFolder { folder in
      let image = "\(folder)/new.vmdk"
      try DiskTool.checked([
        "create", image, "--type", type.rawValue, "--capacity", "5M", "--adapter-type", "buslogic",
        "--hardware-version", "13", "--split-size", "2M",
      ])
      let info = try Qemu.img("info", image).output
      #expect(info.contains("virtual size: 5 MiB"), "\(info)")
      if type.isSparse { try expectQemuCheck(image) }
      #expect(try Qemu.rawSHA256(image, scratch: folder) == Disk.open(image).digest())
      #expect(try DiskTool.checked(["metadata", image, "ddb.adapterType"]).output == "buslogic\n")
      #expect(try DiskTool.checked(["metadata", image, "virtualHWVersion"]).output == "13\n")
      let again = try DiskTool.run(["create", image, "--capacity", "1M"])
      #expect(again.status == 1, "an existing image is refused")

      if type == .streamOptimized {
        // VMware's stream layout leaves one sector for the embedded descriptor: a key that
        // does not fit is refused and the image is left as it was.
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        let r = try DiskTool.run(["metadata", image, "comment", "nightly backup"])
        #expect(r.status == 1)
        #expect(r.errorOutput.contains("has room for"), "\(r.errorOutput)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before)
      } else {
        try DiskTool.checked(["metadata", image, "comment", "nightly backup"])
        #expect(try DiskTool.checked(["metadata", image, "ddb.comment"]).output == "nightly backup\n")
        try DiskTool.checked(["metadata", image, "comment", "--delete"])
        let missing = try DiskTool.run(["metadata", image, "comment"])
        #expect(missing.status == 1)
        if type.isSparse { try expectQemuCheck(image) }
        _ = try Qemu.img("info", image)
      }
    }
  }
}
