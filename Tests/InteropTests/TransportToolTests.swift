// The transports end to end, through the tools and a configuration file: https from nginx and
// nbds from qemu-nbd with certificates made at test time; the transport order (TLS upgrade and
// fallback); a convert from an NBD export that survives a server restart with the identical
// output; a server that stays down giving the typed error within the configured time; a
// source that fails (nbdkit's error filter) leaving no destination behind; configuration
// errors naming the line; a log file that cannot be written reported once.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#endif

/// A configuration file in `folder` with `lines`; its path.
private func writeConfig(_ folder: String, _ lines: [String], name: String = "toolkit.conf") throws -> String {
  let path = "\(folder)/\(name)"
  try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
  return path
}

/// A raw file of `size` bytes with a pattern written every `stride` bytes (qemu-io), so that a
/// convert has data to move but the file stays quick to make.
private func makePatternedRaw(_ path: String, size: UInt64, stride: UInt64, piece: UInt64) throws {
  try Qemu.img(["create", "-q", "-f", "raw", path, String(size)])
  var commands: [String] = []
  var at: UInt64 = 0
  var n = 0
  while at + piece <= size {
    commands.append("write -P 0x\(String(0x21 + n % 90, radix: 16)) \(at) \(piece)")
    at += stride
    n += 1
  }
  try runChecked(try requireTool("qemu-io"), ["-f", "raw"] + commands.flatMap { ["-c", $0] } + [path])
}

/// Files in `folder` whose names start with `prefix` or with `.prefix` (temporary outputs).
private func leftovers(_ folder: String, _ prefix: String) throws -> [String] {
  try FileManager.default.contentsOfDirectory(atPath: folder).filter {
    $0.hasPrefix(prefix) || $0.hasPrefix(".\(prefix)")
  }
}

/// Starts `tool` with `arguments` and returns the running process and its stderr pipe.
private func launch(_ tool: String, _ arguments: [String]) throws -> (Process, Pipe) {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: tool)
  p.arguments = arguments
  let err = Pipe()
  p.standardError = err
  p.standardOutput = FileHandle.nullDevice
  p.standardInput = FileHandle.nullDevice
  try p.run()
  return (p, err)
}

@Suite(.serialized) struct TransportToolTests {
  @Test func httpsServesADiskLikeTheLocalFileAndAWrongCAIsRefused() throws {
    try withTestPKI { pki in
      try withTemporaryFolder { folder in
        let nginx = try NginxServer(prefix: "\(folder)/nginx", tls: (pki.serverCert, pki.serverKey))
        defer { nginx.stop() }
        let local = "TestImages/vdiskmanager/monolithicSparse.vmdk"
        try FileManager.default.copyItem(atPath: local, toPath: "\(nginx.root)/disk.vmdk")
        let url = "\(nginx.baseURL)/disk.vmdk"
        var o = OpenOptions()
        o.transport.tls.caFile = pki.caCert
        let disk = try Disk.open(url, options: o)
        #expect(disk.transport == .https)
        #expect(try disk.digest() == (try Disk.open(local).digest()))
        o.transport.tls.caFile = pki.otherCACert
        o.transport.retries = 0
        #expect {
          try Disk.open(url, options: o)
        } throws: { ($0 as? VMDKError)?.code == .tlsFailure && !(($0 as? VMDKError)?.isRetryable ?? true) }
        // The tools, with the CA from a configuration file.
        let conf = try writeConfig(folder, ["tls.caFile = \(pki.caCert)"])
        let info = try vmdkInspect("info", "--config", conf, url).output
        #expect(info.contains("transport: https"))
        let refused = try runProcess(try vmdkInspectPath(), ["info", url])
        #expect(refused.status == 2)
        #expect(refused.errorOutput.contains("20024"), "\(refused.errorOutput)")
      }
    }
  }

  @Test func nbdsThroughTheToolsAndTheTransportOrder() throws {
    try withTestPKI { pki in
      try withTemporaryFolder { folder in
        let raw = "\(folder)/disk.raw"
        try makePatternedRaw(raw, size: 24 << 20, stride: 3 << 20, piece: 65536)
        let want = try fileDigest(raw, .sha256)
        let tlsServer = try QemuNBDServer(
          file: raw, format: "raw", readOnly: true,
          extra: [
            "--object", "tls-creds-x509,id=tls0,endpoint=server,verify-peer=off,dir=\(pki.folder)", "--tls-creds",
            "tls0",
          ])
        defer { tlsServer.stop() }
        let plainServer = try QemuNBDServer(file: raw, format: "raw", readOnly: true)
        defer { plainServer.stop() }
        let base = ["tls.caFile = \(pki.caCert)", "retries = 0"]
        let conf = try writeConfig(folder, base)
        let tlsURL = "nbds://127.0.0.1:\(tlsServer.port)/disk"
        let convert = try builtToolPath("vmdk-convert")
        try runChecked(convert, ["--config", conf, tlsURL, "\(folder)/backup.vmdk", "-t", "streamOptimized", "-q"])
        #expect(try Disk.open("\(folder)/backup.vmdk").digest() == want)
        #expect(try vmdkInspect("info", "--config", conf, tlsURL).output.contains("transport: nbds"))

        // Only nbds enabled: nbd:// is opened with TLS.
        let tlsOnly = try writeConfig(folder, base + ["transports = file:nbds"], name: "tls-only.conf")
        let upgraded = try vmdkInspect("info", "--config", tlsOnly, "nbd://127.0.0.1:\(tlsServer.port)/disk").output
        #expect(upgraded.contains("transport: nbds"))
        // nbds before nbd: TLS where offered, plain NBD where the server has no TLS at all.
        let preferTLS = try writeConfig(folder, base + ["transports = file:nbds:nbd"], name: "prefer.conf")
        let preferred = try vmdkInspect("info", "--config", preferTLS, "nbd://127.0.0.1:\(tlsServer.port)/disk")
        #expect(preferred.output.contains("transport: nbds"))
        let fellBack = try vmdkInspect("info", "--config", preferTLS, "nbd://127.0.0.1:\(plainServer.port)/disk")
        #expect(fellBack.output.contains("transport: nbd\n"))
        // Plain NBD to the TLS-only server, and a certificate that does not verify: errors.
        let plain = try runProcess(
          try vmdkInspectPath(), ["info", "--config", conf, "nbd://127.0.0.1:\(tlsServer.port)/disk"])
        #expect(plain.status == 2 && plain.errorOutput.contains("requires TLS"), "\(plain.errorOutput)")
        let wrongCA = try writeConfig(folder, ["tls.caFile = \(pki.otherCACert)", "retries = 0"], name: "wrong.conf")
        let refused = try runProcess(try vmdkInspectPath(), ["info", "--config", wrongCA, tlsURL])
        #expect(refused.status == 2 && refused.errorOutput.contains("20024"), "\(refused.errorOutput)")
      }
    }
  }

  /// Waits until the tool `p` is under way (its temporary output `.OUTPUT.tmp-*` exists in
  /// `folder`) and a little longer; true when it is still running then. A fixed wait is not
  /// enough: on a quiet machine 384 MiB of the test pattern convert in under 0.4 s.
  static func waitUntilUnderWay(_ p: Process, folder: String, output: String) -> Bool {
    let started = Date()
    func underWay() -> Bool {
      let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
      return names.contains { $0.hasPrefix(".\(output).tmp-") }
    }
    while p.isRunning && !underWay() && Date().timeIntervalSince(started) < 30 { usleep(2_000) }
    usleep(20_000)
    return p.isRunning
  }

  @Test func aConvertSurvivesAServerRestartWithTheIdenticalOutput() throws {
    try withTemporaryFolder { folder in
      let raw = "\(folder)/disk.raw"
      try makePatternedRaw(raw, size: 384 << 20, stride: 1 << 20, piece: 768 << 10)
      let want = try fileDigest(raw, .sha256)
      let server = try QemuNBDServer(file: raw, format: "raw", readOnly: true)
      defer { server.stop() }
      let log = "\(folder)/transport.log"
      let conf = try writeConfig(
        folder,
        [
          "retries = 20", "retryBackoff = 0.1", "retryBackoffMax = 0.5", "connectTimeout = 5", "readTimeout = 5",
          "log.level = warning", "log.file = \(log)",
        ])
      let out = "\(folder)/backup.vmdk"
      let (p, _) = try launch(
        try builtToolPath("vmdk-convert"),
        ["--config", conf, "nbd://127.0.0.1:\(server.port)/disk", out, "-t", "streamOptimized", "-q"])
      let wasRunning = Self.waitUntilUnderWay(p, folder: folder, output: "backup.vmdk")
      server.stop()
      usleep(700_000)
      try server.restart()
      p.waitUntilExit()
      #expect(wasRunning, "the convert ended before the server was killed: make the disk bigger")
      #expect(p.terminationStatus == 0)
      #expect(try Disk.open(out).digest() == want)
      #expect(try Qemu.rawSHA256(out, scratch: folder) == want)
      let logged = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
      #expect(logged.contains("retry") || logged.contains("reconnect"), "no retry logged: \(logged)")
    }
  }

  @Test func aServerThatStaysDownFailsWithinTheConfiguredTimeAndLeavesNoOutput() throws {
    try withTemporaryFolder { folder in
      let raw = "\(folder)/disk.raw"
      try makePatternedRaw(raw, size: 384 << 20, stride: 1 << 20, piece: 768 << 10)
      let server = try QemuNBDServer(file: raw, format: "raw", readOnly: true)
      defer { server.stop() }
      // Three retries, 0.2 + 0.4 + 0.4 s apart, each connect refused at once: about a second.
      let conf = try writeConfig(
        folder, ["retries = 3", "retryBackoff = 0.2", "retryBackoffMax = 0.4", "connectTimeout = 2", "readTimeout = 2"])
      let out = "\(folder)/backup.vmdk"
      let (p, err) = try launch(
        try builtToolPath("vmdk-convert"),
        ["--config", conf, "nbd://127.0.0.1:\(server.port)/disk", out, "-t", "streamOptimized", "-q"])
      let wasRunning = Self.waitUntilUnderWay(p, folder: folder, output: "backup.vmdk")
      let killed = Date()
      server.stop()
      p.waitUntilExit()
      let elapsed = Date().timeIntervalSince(killed)
      let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
      #expect(wasRunning)
      #expect(p.terminationStatus == 1)
      #expect(message.contains("14009") || message.contains("14011"), "\(message)")
      #expect(!message.contains("file not found") && !message.contains("file access"), "\(message)")
      let bound: Double = 10  // 1.0 s of backoff, up to 4 failed connects, a read timeout, slack
      #expect(elapsed < bound, "took \(elapsed) s")
      #expect(try leftovers(folder, "backup").isEmpty)
    }
  }

  @Test func aSourceThatFailsLeavesNoDestination() throws {
    try withTemporaryFolder { folder in
      let raw = "\(folder)/disk.raw"
      try makePatternedRaw(raw, size: 64 << 20, stride: 1 << 20, piece: 512 << 10)
      // Reads fail with EIO once the trigger file exists: a disk that breaks half-way.
      let trigger = "\(folder)/break-now"
      let server = try Nbdkit(
        plugin: "file", ["file=\(raw)", "error=EIO", "error-pread-rate=100%", "error-file=\(trigger)"],
        filters: ["error"], readOnly: true)
      defer { server.stop() }
      let out = "\(folder)/backup.raw"
      try Data().write(to: URL(fileURLWithPath: trigger))
      let r = try runProcess(
        try builtToolPath("vmdk-convert"), ["nbd://127.0.0.1:\(server.port)/", out, "-t", "raw", "-q"])
      #expect(r.status == 1)
      #expect(r.errorOutput.contains("EIO"), "\(r.errorOutput)")
      #expect(try leftovers(folder, "backup").isEmpty)
      // With the trigger gone, the same convert gives the file's bytes.
      try FileManager.default.removeItem(atPath: trigger)
      try runChecked(try builtToolPath("vmdk-convert"), ["nbd://127.0.0.1:\(server.port)/", out, "-t", "raw", "-q"])
      #expect(try fileDigest(out, .sha256) == (try fileDigest(raw, .sha256)))
    }
  }

  @Test func configurationErrorsNameTheLineAndAnUnwritableLogIsReportedOnce() throws {
    try withTemporaryFolder { folder in
      let bad = try writeConfig(folder, ["# a comment", "retries = 3", "readTimout = 5"], name: "bad.conf")
      let local = "TestImages/vdiskmanager/monolithicSparse.vmdk"
      let r = try runProcess(try vmdkInspectPath(), ["info", "--config", bad, local])
      #expect(r.status == 2)
      #expect(r.errorOutput.contains("bad.conf:3") && r.errorOutput.contains("readTimout"), "\(r.errorOutput)")
      #expect(r.errorOutput.contains("20025"))
      let badValue = try writeConfig(folder, ["requestSize = 3000"], name: "value.conf")
      let v = try runProcess(try vmdkInspectPath(), ["info", "--config", badValue, local])
      #expect(v.status == 2 && v.errorOutput.contains("value.conf:1"), "\(v.errorOutput)")

      // The log file's folder does not exist: the digest still works, and the problem is
      // reported on one line however many lines were logged.
      let raw = "\(folder)/disk.raw"
      try makePatternedRaw(raw, size: 8 << 20, stride: 1 << 20, piece: 65536)
      let server = try QemuNBDServer(file: raw, format: "raw", readOnly: true)
      defer { server.stop() }
      let conf = try writeConfig(
        folder, ["log.level = debug", "log.file = \(folder)/no/such/folder/log"], name: "log.conf")
      let d = try runProcess(
        try vmdkInspectPath(), ["digest", "--config", conf, "nbd://127.0.0.1:\(server.port)/disk"])
      #expect(d.status == 0, "\(d.errorOutput)")
      #expect(d.output.hasPrefix(try fileDigest(raw, .sha256)))
      let reports = d.errorOutput.split(separator: "\n").filter { $0.contains("log file") }
      #expect(reports.count == 1, "\(d.errorOutput)")
    }
  }
}
