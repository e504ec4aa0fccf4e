// The open VixDiskLib from C: the test programs in Tests/VixDiskLibTests/C are compiled with
// cc against the libvixDiskLib.so this build made, and their answers are compared with
// vmdk-inspect's and qemu-img's.

import Foundation
import Testing

@Suite(.timeLimit(.minutes(20))) struct VixCTests {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

  /// Compiles Tests/VixDiskLibTests/C/NAME.c into `folder` and returns the program's path.
  static func compile(_ name: String, into folder: String) throws -> String {
    let cc = try requireTool("cc")
    let library = try builtToolPath("libvixDiskLib.so")
    let libdir = URL(fileURLWithPath: library).deletingLastPathComponent().path
    let out = "\(folder)/\(name)"
    try runChecked(
      cc,
      [
        "-O1", "-Wall", "-I", "\(root)/Sources/CVixDiskLib/include", "\(root)/Tests/VixDiskLibTests/C/\(name).c",
        "-o", out, library, "-lcrypto", "-lpthread", "-Wl,-rpath,\(libdir)",
      ])
    return out
  }

  static func lines(_ r: ProcessResult) -> [String: String] {
    var d: [String: String] = [:]
    for line in String(decoding: r.stdout, as: UTF8.self).split(separator: "\n") {
      if let eq = line.firstIndex(of: "=") { d[String(line[..<eq])] = String(line[line.index(after: eq)...]) }
    }
    return d
  }

  static let images = [
    "vdiskmanager/monolithicSparse.vmdk", "stream/ovftool-export-1MiB.vmdk", "esxi/vmfs_thick.vmdk", "cowd/ext2.vmdk",
  ]

  @Test func structLayoutsAreVDDKs() throws {
    try withTemporaryFolder { folder in
      let abi = try Self.compile("abi", into: folder)
      let r = try runProcess(abi, [])
      #expect(r.status == 0, "\(String(decoding: r.stdout, as: UTF8.self))")
    }
  }

  @Test func readDigestAndInfoMatchVmdkInspect() throws {
    try withTemporaryFolder { folder in
      let check = try Self.compile("vixcheck", into: folder)
      for image in Self.images {
        let path = "\(Self.root)/TestImages/\(image)"
        let want = try vmdkInspect("digest", path).stdout
        let got = try runChecked(check, ["digest", path]).stdout
        #expect(
          String(decoding: got, as: UTF8.self).prefix(64) == String(decoding: want, as: UTF8.self).prefix(64),
          "\(image)")
        let info = Self.lines(try runChecked(check, ["info", path]))
        let json =
          try JSONSerialization.jsonObject(with: try vmdkInspect("info", "--json", path).stdout) as? [String: Any]
          ?? [:]
        #expect(info["capacity"] == "\(json["capacitySectors"] as? Int ?? -1)", "\(image)")
        #expect(info["uuid"] == (json["uuid"] as? String ?? "(null)"), "\(image)")
        #expect(info["numLinks"] == "1", "\(image)")
        // 64 ReadAsync requests in flight, compared byte for byte with Read by the program,
        // called back on worker threads: a pool of max(4, cores), not a thread per request.
        let r = try runProcess(check, ["async", path, "64"])
        #expect(r.status == 0, "\(image): \(String(decoding: r.stderr, as: UTF8.self))")
        let a = Self.lines(r)
        let threads = Int(a["threads"] ?? "") ?? -1
        #expect(threads >= 1 && threads <= max(4, ProcessInfo.processInfo.activeProcessorCount), "\(image): \(a)")
        #expect(a["foreign"] == a["requests"], "\(image): \(a)")
      }
    }
  }

  @Test func errorCodesAreVixDiskLibs() throws {
    try withTemporaryFolder { folder in
      let check = try Self.compile("vixcheck", into: folder)
      let missing = Self.lines(try runChecked(check, ["open", "\(folder)/missing.vmdk", "4"]))
      #expect(missing["code"] == "4")
      #expect(missing["text"]?.contains("missing.vmdk") == true)
      let disk = "\(folder)/locked.vmdk"
      try Qemu.create(disk, size: 1 << 20)
      let locked = Self.lines(try runChecked(check, ["lock", disk]))
      #expect(locked["code"] == "15")
      // A child whose parent is gone: a partial chain (or the parent's file not found).
      let base = "\(folder)/base.vmdk"
      let child = "\(folder)/child.vmdk"
      try Qemu.create(base, size: 1 << 20)
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", child)
      try FileManager.default.removeItem(atPath: base)
      let partial = Self.lines(try runChecked(check, ["open", child, "4"]))
      #expect(["16003", "4"].contains(partial["code"] ?? ""), "\(partial)")
    }
  }

  @Test func writeThenQemuReadsItBack() throws {
    try withTemporaryFolder { folder in
      let check = try Self.compile("vixcheck", into: folder)
      let disk = "\(folder)/w.vmdk"
      try Qemu.create(disk, size: 8 << 20)
      try runChecked(check, ["write", disk, "2048", "16", "171"])  // 8 KiB of 0xab at 1 MiB
      let raw = "\(folder)/w.raw"
      try Qemu.img("convert", "-O", "raw", disk, raw)
      let bytes = try Data(contentsOf: URL(fileURLWithPath: raw))
      #expect(bytes[(1 << 20)..<((1 << 20) + 8192)].allSatisfy { $0 == 0xab })
      #expect(bytes[0..<(1 << 20)].allSatisfy { $0 == 0 })
      try Qemu.img("check", disk)
    }
  }
}
