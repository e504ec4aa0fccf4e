// The open VixDiskLib's configuration file and log (InitEx's configFile and callbacks), from C:
// Tests/VixDiskLibTests/C/config.c is compiled against the built libvixDiskLib.so and run.
// Each case is built so that the bug it looks for would show: a line on stderr, an info line
// that gets through a level meant to silence it, a warning twice or not at all, a default
// log file that is not in tmpDirectory.

import Foundation
import Testing

@Suite(.timeLimit(.minutes(10))) struct VixConfigTests {
  /// Runs config.c with `configText` (nil: no file) on a qemu-made disk; the program's
  /// result, its `key=value` lines and its log/warn lines.
  struct Run {
    let result: ProcessResult
    let values: [String: String]
    let logs: [String]
    let warns: [String]
    var stderr: String { String(decoding: result.stderr, as: UTF8.self) }
  }

  static func run(
    _ folder: String, _ configText: String?, callbacks: Bool = true, disk: String? = nil
  ) throws -> Run {
    let program = "\(folder)/config"
    if !FileManager.default.fileExists(atPath: program) { _ = try VixCTests.compile("config", into: folder) }
    let image = disk ?? "\(folder)/disk.vmdk"
    if disk == nil && !FileManager.default.fileExists(atPath: image) { try Qemu.create(image, size: 4 << 20) }
    var configPath = "-"
    if let configText {
      configPath = "\(folder)/vddk-\(UUID().uuidString).conf"
      try configText.write(toFile: configPath, atomically: true, encoding: .utf8)
    }
    let r = try runProcess(program, [configPath, image, callbacks ? "callbacks" : "none"])
    #expect(r.status == 0, "config.c: \(String(decoding: r.stderr, as: UTF8.self))")
    let out = String(decoding: r.stdout, as: UTF8.self).split(separator: "\n").map(String.init)
    var values: [String: String] = [:]
    for line in out where !line.hasPrefix("log: ") && !line.hasPrefix("warn: ") {
      if let eq = line.firstIndex(of: "=") { values[String(line[..<eq])] = String(line[line.index(after: eq)...]) }
    }
    return Run(
      result: r, values: values, logs: out.filter { $0.hasPrefix("log: ") }.map { String($0.dropFirst(5)) },
      warns: out.filter { $0.hasPrefix("warn: ") }.map { String($0.dropFirst(6)) })
  }

  @Test func logLevelSelectsTheLinesDelivered() throws {
    try withTemporaryFolder { folder in
      // 4 (info): the Open line arrives through the log callback, nothing on stderr.
      let info = try Self.run(folder, "vixDiskLib.transport.LogLevel = 4\n")
      #expect(info.values["initEx"] == "0" && info.values["open"] == "0" && info.values["read"] == "0")
      #expect(info.logs.contains { $0.contains("opened") && $0.contains("disk.vmdk") }, "\(info.logs)")
      #expect(!info.logs.contains { $0.contains("error ") }, "debug lines at level 4: \(info.logs)")
      #expect(info.values["logLines"] == "\(info.logs.count)")
      #expect(info.stderr.isEmpty, "stderr: \(info.stderr)")
      // 3 (audit, VDDK's default) silences info; and so does having no file at all.
      for config in ["vixDiskLib.transport.LogLevel = 3\n", nil] {
        let quiet = try Self.run(folder, config)
        #expect(quiet.values["open"] == "0")
        #expect(quiet.logs.isEmpty && quiet.warns.isEmpty, "\(config ?? "no file"): \(quiet.logs) \(quiet.warns)")
        #expect(quiet.stderr.isEmpty, "stderr: \(quiet.stderr)")
      }
      // 5 (verbose): debug lines too, among them the recorded error of the read past the end.
      let verbose = try Self.run(folder, "vixDiskLib.transport.LogLevel = 5\n")
      #expect(verbose.values["readPastEnd"] == "16007")
      #expect(verbose.logs.contains { $0.contains("error 16007") }, "\(verbose.logs)")
      #expect(verbose.stderr.isEmpty)
      // Our own key works too; a value out of range is an error naming the line.
      let ours = try Self.run(folder, "# ours\nlog.level = info\n")
      #expect(ours.logs.contains { $0.contains("opened") }, "\(ours.logs)")
      let bad = try Self.run(folder, "\n\nvixDiskLib.transport.LogLevel = 9\n")
      #expect(bad.values["initEx"] == "20025")
      #expect(bad.values["text"]?.contains(":3: 'vixDiskLib.transport.LogLevel'") == true, "\(bad.values)")
    }
  }

  @Test func everyOtherKeyIsWarnedOnce() throws {
    try withTemporaryFolder { folder in
      let config = """
        vixDiskLib.nfc.ReadTimeoutMs = 60000
        vixDiskLib.phoneHome.EnablePhoneHome = 1
        notAKeyAnywhere = 3
        vixDiskLib.nfc.ReadTimeoutMs = 1000
        vixDiskLib.nfcAio.SocketOption.NoSuchOption = 1
        readTimeout = 30

        """
      let r = try Self.run(folder, config)
      #expect(r.values["initEx"] == "0", "\(r.values)")
      #expect(r.values["open"] == "0")
      // One warning per key, the repeated one included: 4 keys, 4 lines, each naming its line.
      #expect(r.warns.count == 4, "\(r.warns)")
      #expect(r.warns.filter { $0.contains("'vixDiskLib.nfc.ReadTimeoutMs'") }.count == 1)
      #expect(r.warns.contains { $0.contains(".conf:1:") && $0.contains("ReadTimeoutMs") })
      #expect(r.warns.contains { $0.contains(".conf:2:") && $0.contains("EnablePhoneHome") })
      #expect(r.warns.contains { $0.contains(".conf:3:") && $0.contains("'notAKeyAnywhere'") })
      #expect(r.warns.contains { $0.contains(".conf:5:") && $0.contains("NoSuchOption") })
      #expect(!r.warns.contains { $0.contains("readTimeout'") }, "our own key was warned about")
      #expect(r.values["warnLines"] == "4")
      #expect(r.stderr.isEmpty, "stderr: \(r.stderr)")
      // Level 1 (errors only) silences the warnings as well.
      let silent = try Self.run(folder, "vixDiskLib.transport.LogLevel = 1\nnotAKeyAnywhere = 3\n")
      #expect(silent.warns.isEmpty && silent.values["initEx"] == "0", "\(silent.warns)")
    }
  }

  @Test func socketAndSessionKeysAreCheckedAsOurs() throws {
    try withTemporaryFolder { folder in
      let good = """
        vixDiskLib.nfcAio.Session.BufSizeIn64KB = 16
        vixDiskLib.nfcAio.Session.BufCount = 8
        vixDiskLib.nfcAio.SocketOption.SendBufferSize = 1M
        vixDiskLib.nfcAio.SocketOption.ReceiveBufferSize = 2M

        """
      let ok = try Self.run(folder, good)
      #expect(ok.values["initEx"] == "0" && ok.values["open"] == "0", "\(ok.values)")
      #expect(ok.warns.isEmpty, "accepted keys were warned about: \(ok.warns)")
      // They reach the toolkit's parser: its limits and its messages, with the right line.
      let cases: [(String, String)] = [
        ("\nvixDiskLib.nfcAio.SocketOption.ReceiveBufferSize = 1\n", ":2: 'socketReceiveBuffer'"),
        ("vixDiskLib.nfcAio.SocketOption.SendBufferSize = lots\n", ":1: 'socketSendBuffer'"),
        ("vixDiskLib.nfcAio.Session.BufSizeIn64KB = 1000\n", ":1: 'vixDiskLib.nfcAio.Session.BufSizeIn64KB'"),
        ("vixDiskLib.nfcAio.Session.BufCount = 0\n", ":1: 'vixDiskLib.nfcAio.Session.BufCount'"),
        ("vixDiskLib.nfcAio.Session.BufCount = 4\nrequestsInFlight = 4\n", "duplicate key 'requestsInFlight'"),
      ]
      for (text, want) in cases {
        let r = try Self.run(folder, text)
        #expect(r.values["initEx"] == "20025", "\(text): \(r.values)")
        #expect(r.values["text"]?.contains(want) == true, "\(text): \(r.values["text"] ?? "")")
      }
    }
  }

  /// The SocketOption keys reach the NBD socket: strace sees SO_SNDBUF/SO_RCVBUF set to the
  /// configured sizes on the connection to qemu-nbd, and not set at all without them.
  @Test func socketBuffersAreSetOnNBDSockets() throws {
    try withTemporaryFolder { folder in
      let strace = try requireTool("strace")
      let raw = "\(folder)/disk.raw"
      FileManager.default.createFile(atPath: raw, contents: Data(repeating: 0x5a, count: 1 << 20))
      let server = try QemuNBDServer(file: raw, format: "raw", readOnly: true)
      defer { server.stop() }
      _ = try Self.run(folder, nil)  // compiles config.c
      let config = "\(folder)/sock.conf"
      try """
      vixDiskLib.nfcAio.SocketOption.SendBufferSize = 256K
      vixDiskLib.nfcAio.SocketOption.ReceiveBufferSize = 3M

      """.write(toFile: config, atomically: true, encoding: .utf8)
      let location = "nbd://127.0.0.1:\(server.port)/disk"
      func traced(_ configPath: String) throws -> (String, String) {
        let trace = "\(folder)/trace-\(UUID().uuidString)"
        let r = try runProcess(
          strace, ["-f", "-e", "trace=setsockopt", "-o", trace, "\(folder)/config", configPath, location, "callbacks"])
        return (String(decoding: r.stdout, as: UTF8.self), (try? String(contentsOfFile: trace, encoding: .utf8)) ?? "")
      }
      let (out, trace) = try traced(config)
      #expect(out.contains("open=0\n") && out.contains("read=0\n"), "\(out)")
      #expect(trace.contains("SO_SNDBUF, [262144]"), "\(trace)")
      #expect(trace.contains("SO_RCVBUF, [3145728]"), "\(trace)")
      let (plainOut, plain) = try traced("-")
      #expect(plainOut.contains("open=0\n"), "\(plainOut)")
      #expect(!plain.contains("SO_SNDBUF") && !plain.contains("SO_RCVBUF"), "\(plain)")
    }
  }

  @Test func withoutCallbacksLinesGoToTmpDirectoryNotTheTerminal() throws {
    try withTemporaryFolder { folder in
      let tmp = "\(folder)/vddk-tmp"  // missing: InitEx makes it
      let r = try Self.run(
        folder, "tmpDirectory = \"\(tmp)\"\nvixDiskLib.transport.LogLevel = 5\nnotAKeyAnywhere = 1\n", callbacks: false)
      #expect(r.values["initEx"] == "0" && r.values["open"] == "0", "\(r.values)")
      #expect(r.stderr.isEmpty, "stderr: \(r.stderr)")
      #expect(!String(decoding: r.result.stdout, as: UTF8.self).contains("VixDiskLib:"))
      let log = (try? String(contentsOfFile: "\(tmp)/vixDiskLib.log", encoding: .utf8)) ?? ""
      let lines = log.split(separator: "\n")
      #expect(lines.contains { $0.contains("VixDiskLib: opened") && $0.contains("disk.vmdk") }, "\(log)")
      #expect(lines.contains { $0.contains("error 16007") }, "\(log)")
      #expect(lines.filter { $0.contains("'notAKeyAnywhere'") }.count == 1, "\(log)")
      #expect(lines.allSatisfy { $0.contains("[") && $0.contains("] VixDiskLib: ") }, "\(log)")
      var st = stat()
      #expect(stat("\(tmp)/vixDiskLib.log", &st) == 0 && st.st_mode & 0o077 == 0, "the log file is readable by others")
      // A failed Open with callbacks given: its message is kept for GetErrorText, and nothing
      // reaches stderr or the default log.
      try FileManager.default.removeItem(atPath: "\(tmp)/vixDiskLib.log")
      let failed = try Self.run(
        folder, "tmpDirectory = \(tmp)\nvixDiskLib.transport.LogLevel = 6\n", disk: "\(folder)/missing.vmdk")
      #expect(failed.values["open"] == "4" && failed.values["text"]?.contains("missing.vmdk") == true)
      #expect(failed.logs.contains { $0.contains("error 4") }, "\(failed.logs)")
      #expect(failed.stderr.isEmpty, "stderr: \(failed.stderr)")
      #expect(!FileManager.default.fileExists(atPath: "\(tmp)/vixDiskLib.log"))
      // The default logger at the default level writes nothing, so it makes no file.
      let quiet = try Self.run(folder, "tmpDirectory = \(tmp)\n", callbacks: false)
      #expect(quiet.values["open"] == "0" && quiet.stderr.isEmpty)
      #expect(!FileManager.default.fileExists(atPath: "\(tmp)/vixDiskLib.log"))
      // A tmpDirectory that cannot be made is an error naming the line.
      let bad = try Self.run(folder, "\ntmpDirectory = \(folder)/no/such/deep/folder\n", callbacks: false)
      #expect(bad.values["initEx"] == "20025" && bad.values["text"]?.contains(":2: 'tmpDirectory'") == true)
      #expect(bad.stderr.isEmpty)
    }
  }
}
