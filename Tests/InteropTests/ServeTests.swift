// vmdk-serve against real NBD clients on loopback: nbdinfo (size, flags, contexts), nbdcopy
// (digests of every TestImages image and of a qemu-made chain, also over four connections),
// qemu-img map and compare (the same answers as qemu-nbd serving the same image), qemu-io
// writes through an overlay, and our own client.

import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

/// vmdk-serve as a child process on 127.0.0.1 (or a Unix socket).
final class VMDKServeProcess: NBDServerProcess {
  init(_ arguments: [String], socketPath: String? = nil) throws {
    let port = socketPath == nil ? try freeLoopbackPort() : 0
    let listen = socketPath.map { ["--socket", $0] } ?? ["--tcp", "127.0.0.1:\(port)"]
    try super.init(
      tool: try builtToolPath("vmdk-serve"), arguments: listen + arguments, port: port, socketPath: socketPath)
  }
}

@Suite(.serialized) struct ServeTests {
  static func nbdcopyDigest(_ uri: String, in folder: String, connections: Int = 1) throws -> String {
    let out = "\(folder)/copy-\(UUID().uuidString).raw"
    defer { try? FileManager.default.removeItem(atPath: out) }
    try runChecked(try requireTool("nbdcopy"), ["--connections=\(connections)", uri, out])
    return try fileDigest(out, .sha256)
  }

  static func inspectDigest(_ image: String) throws -> String {
    let r = try vmdkInspect("digest", image)
    guard r.status == 0, let hex = r.output.split(separator: " ").first else {
      throw ToolFailure("vmdk-inspect digest \(image): \(r.errorOutput)")
    }
    return String(hex)
  }

  /// A qemu-made 3-link chain with data, zeros and holes in every link: base <- mid <- top.
  static func makeChain(in folder: String) throws -> String {
    let base = "\(folder)/base.vmdk"
    let mid = "\(folder)/mid.vmdk"
    let top = "\(folder)/top.vmdk"
    try Qemu.create(base, size: 64 << 20)
    try Qemu.io(base, ["write -P 0x11 0 4M", "write -P 0x12 20M 3M", "write -P 0x13 60M 64k"])
    try Qemu.img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", mid)
    try Qemu.io(mid, ["write -P 0x21 1M 1M", "write -z 20M 1M", "write -P 0x22 40M 128k"])
    try Qemu.img("create", "-q", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk", top)
    try Qemu.io(top, ["write -P 0x31 2M 64k", "write -P 0x32 41M 4k", "write -z 60M 64k"])
    return top
  }

  @Test func nbdinfoShowsSizeFlagsAndContexts() throws {
    let image = "\(testImagesFolder)/vdiskmanager/monolithicSparse.vmdk"
    let server = try VMDKServeProcess([image, "--export-name", "disk"])
    defer { server.stop() }
    let out = try runChecked(try requireTool("nbdinfo"), ["--json", server.uri(export: "disk")]).stdout
    let json = try #require(try JSONSerialization.jsonObject(with: out) as? [String: Any])
    let export = try #require((json["exports"] as? [[String: Any]])?.first)
    #expect(export["export-size"] as? Int == 10_485_760)
    #expect(export["is_read_only"] as? Bool == true)
    #expect(export["can_flush"] as? Bool == true)
    #expect(export["can_multi_conn"] as? Bool == true)
    #expect(export["can_trim"] as? Bool == false)
    #expect(export["block_size_maximum"] as? Int == 32 << 20)
    #expect(export["contexts"] as? [String] == ["base:allocation", "qemu:allocation-depth"])
    #expect(json["structured"] as? Bool == true)
  }

  @Test func nbdinfoReadWriteFlagsAndList() throws {
    try withTemporaryFolder { folder in
      let a = "\(folder)/a.vmdk"
      let b = "\(folder)/b.vmdk"
      try Qemu.create(a, size: 1 << 20)
      try Qemu.create(b, size: 2 << 20)
      let server = try VMDKServeProcess(["--read-write", "\(a)=first", "\(b)=second"])
      defer { server.stop() }
      let list = try runChecked(try requireTool("nbdinfo"), ["--list", "--json", server.uri(export: "")]).stdout
      let json = try #require(try JSONSerialization.jsonObject(with: list) as? [String: Any])
      let exports = try #require(json["exports"] as? [[String: Any]])
      #expect(exports.map { $0["export-name"] as? String } == ["first", "second"])
      #expect(exports.map { $0["export-size"] as? Int } == [1 << 20, 2 << 20])
      #expect(exports.allSatisfy { $0["is_read_only"] as? Bool == false && $0["can_fua"] as? Bool == true })
      #expect(exports.allSatisfy { $0["can_zero"] as? Bool == true && $0["can_trim"] as? Bool == true })
    }
  }

  @Test("nbdcopy from vmdk-serve gives vmdk-inspect's digest", arguments: try CorpusEntry.load())
  func nbdcopyCorpus(entry: CorpusEntry) throws {
    guard entry.expectError == nil, let sha = entry.sha256 else { return }
    try withTemporaryFolder { folder in
      let image = try CorpusTests.prepare(entry, in: folder)
      #expect(try Self.inspectDigest(image) == sha)
      let server = try VMDKServeProcess([image, "--allow-external-paths"])
      defer { server.stop() }
      #expect(try Self.nbdcopyDigest(server.uri(export: ""), in: folder) == sha, "\(entry.image)")
    }
  }

  @Test func chainDigestOverOneAndFourConnectionsAndUnixSocket() throws {
    try withTemporaryFolder { folder in
      let top = try Self.makeChain(in: folder)
      let expected = try Self.inspectDigest(top)
      #expect(expected == (try Qemu.rawSHA256(top, scratch: folder)))
      let server = try VMDKServeProcess([top])
      defer { server.stop() }
      #expect(try Self.nbdcopyDigest(server.uri(export: ""), in: folder) == expected)
      #expect(try Self.nbdcopyDigest(server.uri(export: ""), in: folder, connections: 4) == expected)
      // Our own client, through Disk.open("nbd://…").
      let disk = try Disk.open("nbd://127.0.0.1:\(server.port)/")
      #expect(try disk.digest(.sha256) == expected)
      try disk.close()
      let unix = try VMDKServeProcess([top], socketPath: "\(folder)/s.sock")
      defer { unix.stop() }
      #expect(try Self.nbdcopyDigest(unix.uri(export: ""), in: folder) == expected)
    }
  }

  @Test func qemuImgMapAndCompareEqualQemuNBD() throws {
    try withTemporaryFolder { folder in
      let top = try Self.makeChain(in: folder)
      let ours = try VMDKServeProcess([top, "--export-name", "disk"])
      defer { ours.stop() }
      let theirs = try QemuNBDServer(
        file: top, format: "vmdk", export: "disk", readOnly: true, extra: ["--allocation-depth"])
      defer { theirs.stop() }
      let oursMap = try Qemu.img("map", "--output=json", ours.uri(export: "disk")).output
      let theirsMap = try Qemu.img("map", "--output=json", theirs.uri(export: "disk")).output
      #expect(oursMap == theirsMap)
      #expect(oursMap.contains("\"zero\": true") && oursMap.contains("\"data\": true"))
      // The allocation depth of every range, as qemu-nbd reports it.
      let nbdinfo = try requireTool("nbdinfo")
      let depthOurs = try runChecked(nbdinfo, ["--map=qemu:allocation-depth", ours.uri(export: "disk")]).output
      let depthTheirs = try runChecked(nbdinfo, ["--map=qemu:allocation-depth", theirs.uri(export: "disk")]).output
      #expect(depthOurs == depthTheirs)
      #expect(depthOurs.contains("local") && depthOurs.contains("backing depth 3"), "\(depthOurs)")
      let baseOurs = try runChecked(nbdinfo, ["--map", ours.uri(export: "disk")]).output
      let baseTheirs = try runChecked(nbdinfo, ["--map", theirs.uri(export: "disk")]).output
      #expect(baseOurs == baseTheirs)
      let compare = try Qemu.img("compare", "-f", "vmdk", top, ours.uri(export: "disk")).output
      #expect(compare.contains("Images are identical."))
    }
  }

  @Test func qemuIOWritesGoIntoTheOverlayOnly() throws {
    try withTemporaryFolder { folder in
      let top = try Self.makeChain(in: folder)
      let before = try ["base", "mid", "top"].map { try fileDigest("\(folder)/\($0).vmdk", .sha256) }
      let child = "\(folder)/restore.vmdk"
      let server = try VMDKServeProcess([top, "--overlay", child, "--export-name", "disk"])
      try runChecked(
        try requireTool("qemu-io"),
        [
          "-f", "raw", "-c", "write -P 0x77 0 128k", "-c", "write -f -P 0x78 30M 4k", "-c", "write -z 41M 4k",
          "-c", "flush", server.uri(export: "disk"),
        ])
      server.stop(signal: SIGTERM)
      let after = try ["base", "mid", "top"].map { try fileDigest("\(folder)/\($0).vmdk", .sha256) }
      #expect(before == after)
      let check = try runProcess(try requireTool("qemu-img"), ["check", "-f", "vmdk", child])
      #expect(check.status == 0, "\(check.output) \(check.errorOutput)")
      try Qemu.io(child, ["read -P 0x77 0 128k", "read -P 0x78 30M 4k", "read -P 0 41M 4k", "read -P 0x31 2M 64k"])
      // The child holds the writes and nothing else (a single link: only its own grains).
      let only = try Qemu.img("map", "--output=json", "-f", "vmdk", child).output
      #expect(only.contains("\"depth\": 0"))
      // Served again: the child is reused, the writes are there.
      let again = try VMDKServeProcess([top, "--overlay", child, "--discard-overlay"])
      try runChecked(try requireTool("qemu-io"), ["-f", "raw", "-c", "read -P 0x77 0 128k", again.uri(export: "")])
      again.stop(signal: SIGTERM)
      #expect(!FileManager.default.fileExists(atPath: child))
    }
  }

  @Test func writeZeroesOverHolesAllocatesNothing() throws {
    try withTemporaryFolder { folder in
      let image = "\(folder)/e.vmdk"
      try Qemu.create(image, size: 64 << 20)
      let server = try VMDKServeProcess([image, "--read-write"])
      try runChecked(
        try requireTool("qemu-io"),
        ["-f", "raw", "-c", "write -P 1 0 1M", "-c", "write -z -u 512k 8M", "-c", "flush", server.uri(export: "")])
      server.stop(signal: SIGTERM)
      let map = try Qemu.map(image)
      // Only the first MiB is stored: the zeroed range over holes got no grains.
      #expect(map.filter(\.data).map(\.length).reduce(0, +) == 1 << 20, "\(map)")
      try Qemu.io(image, ["read -P 1 0 512k", "read -P 0 512k 8M"])
      #expect(try runProcess(try requireTool("qemu-img"), ["check", image]).status == 0)
    }
  }

  @Test func sigtermRemovesThePidFileAndExits() throws {
    try withTemporaryFolder { folder in
      let pid = "\(folder)/serve.pid"
      let server = try VMDKServeProcess(["\(testImagesFolder)/vdiskmanager/monolithicSparse.vmdk", "--pid-file", pid])
      // Written right after listen(); the readiness probe may be a moment earlier.
      for _ in 0..<100 where !FileManager.default.fileExists(atPath: pid) { usleep(10_000) }
      let text = try String(contentsOfFile: pid, encoding: .utf8)
      #expect(Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) != nil)
      server.stop(signal: SIGTERM)
      #expect(!FileManager.default.fileExists(atPath: pid))
    }
  }
}
