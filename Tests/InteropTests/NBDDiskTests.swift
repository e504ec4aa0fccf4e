// An NBD export as a whole virtual disk, through the block layer and the tools: qemu-nbd
// serves a qemu-made VMDK (its virtual disk) and raw files on loopback. The same digest and
// allocation as the local image; a backup (`vmdk-convert nbd://… backup.vmdk`) and a restore
// (`vmdk-convert backup.vmdk nbd://…`) that the file holds after the server stops; writes
// through `vmdk-disk write`; `info` naming the transport.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

/// A qemu-made monolithicSparse image with data at odd places, 64 MiB plus a bit.
private func makeImage(_ folder: String) throws -> String {
  let image = "\(folder)/disk.vmdk"
  try Qemu.create(image, size: 64 << 20 + 7 * 512)
  try Qemu.io(
    image, ["write -P 0x5a 1048576 3145728", "write -P 0xc3 41943040 65536", "write -P 0x11 67108352 512"])
  return image
}

/// A raw file of `size` bytes, with qemu-io commands run on it.
private func makeRaw(_ path: String, size: UInt64, _ commands: [String] = []) throws {
  try Qemu.img(["create", "-q", "-f", "raw", path, String(size)])
  guard !commands.isEmpty else { return }
  try runChecked(try requireTool("qemu-io"), ["-f", "raw"] + commands.flatMap { ["-c", $0] } + [path])
}

private func url(_ server: QemuNBDServer, _ export: String = "disk") -> String {
  "nbd://127.0.0.1:\(server.port)/\(export)"
}

@Suite struct NBDDiskTests {
  @Test func anExportReadsAsTheDiskItServes() throws {
    try withTemporaryFolder { folder in
      let image = try makeImage(folder)
      let local = try Disk.open(image)
      let want = try local.digest()
      let server = try QemuNBDServer(file: image, format: "vmdk", readOnly: true)
      defer { server.stop() }
      let disk = try Disk.open(url(server))
      #expect(disk.transport == .nbd)
      #expect(disk.top.kind == .raw)
      #expect(disk.capacityBytes == local.capacityBytes)
      #expect(try disk.digest() == want)
      // Block status over NBD is qemu-img map's over the same export, holes and all, and the
      // data the export holds is where the local image has it.
      let qemuMap = try MapRecord.parse(try Qemu.img("map", "--output=json", "-f", "raw", url(server)).stdout)
      expectSameMap(try disk.blockStatus().map(MapRecord.init), qemuMap, "map over NBD")
      let json = try vmdkInspect("map", "--json", url(server)).stdout
      expectSameMap(try MapRecord.parse(json), qemuMap, "vmdk-inspect map --json over NBD")
      let remoteData = try disk.blockStatus().filter { $0.data && !$0.zero }.map { ($0.start, $0.length) }
      for b in try local.blockStatus() where b.data && !b.zero {
        #expect(
          remoteData.contains { $0.0 <= b.start && b.start + b.length <= $0.0 + $0.1 },
          "local data \(b.start)+\(b.length) is not data over NBD")
      }
      // Holes are not allocated (VixDiskLib's QueryAllocatedBlocks).
      let allocated = try disk.allocatedBlocks().reduce(UInt64(0)) { $0 + $1.length }
      #expect(allocated < disk.capacityBytes / 4, "\(allocated) bytes allocated")
      // Through the CLI: digest and the transport line.
      let digest = try vmdkInspect("digest", url(server)).output
      #expect(digest.hasPrefix(want))
      let info = try vmdkInspect("info", url(server)).output
      #expect(info.contains("transport: nbd"))
      #expect(info.contains("create type: raw"))
    }
  }

  @Test func aUnixSocketExportReadsTheSame() throws {
    try withTemporaryFolder { folder in
      let image = try makeImage(folder)
      let want = try Disk.open(image).digest()
      let socket = "\(folder)/nbd.sock"
      let server = try QemuNBDServer(file: image, format: "vmdk", readOnly: true, socketPath: socket)
      defer { server.stop() }
      let disk = try Disk.open("nbd+unix:///disk?socket=\(socket)")
      #expect(try disk.digest() == want)
    }
  }

  @Test func backupToStreamOptimizedAndRestoreIntoAnExport() throws {
    try withTemporaryFolder { folder in
      let image = try makeImage(folder)
      let want = try Disk.open(image).digest()
      let convert = try builtToolPath("vmdk-convert")
      let backup = "\(folder)/backup.vmdk"
      do {
        let server = try QemuNBDServer(file: image, format: "vmdk", readOnly: true)
        defer { server.stop() }
        try runChecked(convert, [url(server), backup, "--type", "streamOptimized", "--quiet", "--verify"])
      }
      #expect(try Disk.open(backup).digest() == want)
      #expect(try Qemu.rawSHA256(backup, scratch: folder) == want)

      // The restore target already holds other bytes everywhere: what the backup does not
      // have must come back as zeros.
      let target = "\(folder)/target.raw"
      try makeRaw(target, size: 64 << 20 + 7 * 512, ["write -P 0x77 0 67108864"])
      do {
        let server = try QemuNBDServer(file: target, format: "raw")
        defer { server.stop() }
        try runChecked(convert, [backup, url(server), "--quiet", "--verify"])
      }
      #expect(try fileDigest(target, .sha256) == want)
    }
  }

  @Test func aRestoreRefusesAnOutputTypeAndASmallerExport() throws {
    try withTemporaryFolder { folder in
      let image = try makeImage(folder)
      let small = "\(folder)/small.raw"
      try makeRaw(small, size: 1 << 20)
      let server = try QemuNBDServer(file: small, format: "raw")
      defer { server.stop() }
      let convert = try builtToolPath("vmdk-convert")
      let typed = try runProcess(convert, [image, url(server), "--type", "streamOptimized", "--quiet"])
      #expect(typed.status == 1)
      #expect(typed.errorOutput.contains("an NBD export is a raw disk"))
      let tooSmall = try runProcess(convert, [image, url(server), "--quiet"])
      #expect(tooSmall.status == 1)
      #expect(tooSmall.errorOutput.contains("the target holds 1048576 bytes"))

      // --verify on a larger export is refused before anything is written into it.
      let large = "\(folder)/large.raw"
      try makeRaw(large, size: 128 << 20, ["write -P 0x77 0 1048576"])
      let before = try fileDigest(large, .sha256)
      let largeServer = try QemuNBDServer(file: large, format: "raw")
      defer { largeServer.stop() }
      let verified = try runProcess(convert, [image, url(largeServer), "--quiet", "--verify"])
      #expect(verified.status == 1)
      #expect(verified.errorOutput.contains("--verify needs an export of the source's size"), "\(verified.errorOutput)")
      largeServer.stop()
      #expect(try fileDigest(large, .sha256) == before)
    }
  }

  @Test func writesThroughTheBlockLayerLandInTheFile() throws {
    try withTemporaryFolder { folder in
      let target = "\(folder)/target.raw"
      try makeRaw(target, size: 8 << 20)
      let payload = "\(folder)/payload"
      try Data(repeating: 0xE1, count: 70_000).write(to: URL(fileURLWithPath: payload))
      do {
        let server = try QemuNBDServer(file: target, format: "raw")
        defer { server.stop() }
        var o = OpenOptions()
        o.writable = true
        let disk = try Disk.open(url(server), options: o)
        try disk.write(at: 1000, [UInt8](repeating: 0x3C, count: 5000))
        try disk.writeZeroes(at: 2000, count: 100)
        try disk.close()
        disk.disconnect()
        try runChecked(
          try builtToolPath("vmdk-disk"), ["write", url(server), "--offset", "4194305", "--input", payload])
      }
      let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: target)))
      #expect(bytes[999] == 0 && bytes[1000] == 0x3C && bytes[1999] == 0x3C && bytes[2000] == 0)
      #expect(bytes[2099] == 0 && bytes[2100] == 0x3C && bytes[5999] == 0x3C && bytes[6000] == 0)
      #expect(bytes[4_194_304] == 0 && bytes[4_194_305] == 0xE1 && bytes[4_194_305 + 69_999] == 0xE1)
      #expect(bytes[4_194_305 + 70_000] == 0)
    }
  }

  @Test func aNetworkFailureIsNeverReportedAsAFileError() throws {
    let port = try freeLoopbackPort()
    var o = OpenOptions()
    o.transport.retries = 0
    #expect {
      try Disk.open("nbd://127.0.0.1:\(port)/disk", options: o)
    } throws: { error in
      guard let e = error as? VMDKError else { return false }
      return e.code == .connectionRefused && e.isRetryable && e.file == "nbd://127.0.0.1:\(port)/disk"
    }
    let r = try runProcess(try vmdkInspectPath(), ["info", "nbd://127.0.0.1:\(port)/disk"])
    #expect(r.status == 2)
    #expect(r.errorOutput.contains("14009"))
  }

  @Test func aDisabledTransportIsRefused() throws {
    var o = OpenOptions()
    o.transports = [.file]
    #expect {
      try Disk.open("nbd://127.0.0.1:1/disk", options: o)
    } throws: { error in
      (error as? VMDKError)?.code == .notSupported && "\(error)".contains("nbd transport is not enabled")
    }
  }

  @Test func fileOperationsRefuseANetworkLocation() throws {
    let tool = try builtToolPath("vmdk-disk")
    let u = "nbd://127.0.0.1:1/disk"
    for args in [
      ["delete", u], ["rename", u, "/tmp/never.vmdk"], ["compact", u], ["resize", u, "1G"], ["cleanup", u],
      ["create", u, "--capacity", "1M"], ["snapshot", u, "/tmp/never.vmdk"], ["metadata", u, "ddb.x", "1"],
    ] {
      let r = try runProcess(tool, args)
      #expect(r.status == 1, "\(args)")
      #expect(
        r.errorOutput.contains("works on local disk files, not on a disk reached over nbd"), "\(args): \(r.errorOutput)"
      )
    }
  }

  @Test func transportsListsEveryTransport() throws {
    let out = try vmdkInspect("transports").output
    for name in ["file", "nbd", "nbds", "http", "https"] {
      #expect(out.contains("\n\(name)\t") || out.hasPrefix("\(name)\t"), "\(name) missing from: \(out)")
    }
    #expect(out.contains("http\tenabled\tread-only"))
  }
}
