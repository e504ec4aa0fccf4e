// Programs written for VDDK, built unchanged against an installed open VixDiskLib: the backup
// example in Examples/ (installed with Tools/install.sh into a temporary PREFIX, built with its
// Makefile through pkg-config) and the C example of the README, extracted from README.md. Their
// output is compared with qemu-img's and vmdk-inspect's.

import Foundation
import Testing
import VMDKBlock

@Suite(.timeLimit(.minutes(20))) struct VixExampleTests {
  static let images = [
    "vdiskmanager/monolithicSparse.vmdk", "stream/ovftool-export-1MiB.vmdk", "esxi/vmfs_thick.vmdk", "cowd/ext2.vmdk",
  ]

  /// Installs the library built for these tests into `prefix` with Tools/install.sh (no build:
  /// the configuration the test bundle was built in).
  static func install(into prefix: String) throws {
    let library = try builtToolPath("libvixDiskLib.so")
    let release = library.contains("/release/")
    try runChecked(
      try requireTool("bash"), ["\(packageRoot)/Tools/install.sh", prefix, "--no-build"] + (release ? [] : ["--debug"]))
  }

  /// A three-link chain made by qemu-img and qemu-io, with data in every link, a child's
  /// write over the base, zeros written over data, and ranges no link has.
  static func makeChain(in folder: String) throws -> String {
    let base = "\(folder)/chain-base.vmdk"
    let mid = "\(folder)/chain-mid.vmdk"
    let top = "\(folder)/chain-top.vmdk"
    try Qemu.create(base, size: 24 << 20, options: ["adapter_type=lsilogic"])
    try Qemu.io(base, ["write -P 0x11 0 4M", "write -P 0x12 8M 1M", "write -P 0x13 20M 4M"])
    try Qemu.img("create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", mid)
    try Qemu.io(mid, ["write -P 0x21 1M 64K", "write -z 2M 1M", "write -P 0x22 12M 3M"])
    try Qemu.img("create", "-q", "-f", "vmdk", "-b", mid, "-F", "vmdk", top)
    try Qemu.io(top, ["write -P 0x31 12M 4K", "write -P 0x32 23M 1M", "write -P 0x33 17M 512"])
    return top
  }

  /// The sample's "key: value" lines.
  static func fields(_ output: String) -> [String: String] {
    var d: [String: String] = [:]
    for line in output.split(separator: "\n") {
      guard let colon = line.firstIndex(of: ":") else { continue }
      d[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return d
  }

  @Test func sampleBuiltAgainstAnInstalledPrefixCopiesDisks() throws {
    try withTemporaryFolder { folder in
      let prefix = "\(folder)/prefix"
      try Self.install(into: prefix)
      #expect(FileManager.default.fileExists(atPath: "\(prefix)/lib64/libvixDiskLib.so.8"))
      #expect(FileManager.default.fileExists(atPath: "\(prefix)/include/vixDiskLib.h"))
      // Built out of the source tree with the Makefile: only PREFIX's header and library.
      let build = "\(folder)/build"
      try FileManager.default.createDirectory(atPath: build, withIntermediateDirectories: false)
      let make = try runChecked(
        try requireTool("make"), ["-f", "\(packageRoot)/Examples/Makefile", "-C", build, "PREFIX=\(prefix)"])
      #expect(make.output.contains("-I\(prefix)/include"), "\(make.output)")
      #expect(!make.output.contains("Sources/CVixDiskLib"), "\(make.output)")
      let sample = "\(build)/vixDiskLibSample"
      // The loader takes the library from PREFIX, not from the build folder.
      let ldd = try runChecked(try requireTool("ldd"), [sample]).output
      #expect(ldd.contains("\(prefix)/lib64/libvixDiskLib.so.8"), "\(ldd)")

      let usage = try runProcess(sample, [])
      #expect(usage.status == 2 && usage.errorOutput.contains("usage: vixDiskLibSample"))
      let missing = try runProcess(sample, ["-quiet", "\(folder)/missing.vmdk", "\(folder)/missing.raw"])
      #expect(missing.status == 1 && missing.errorOutput.contains("error 4:"), "\(missing.errorOutput)")

      let chain = try Self.makeChain(in: folder)
      var cases = Self.images.map { "\(testImagesFolder)/\($0)" }
      cases.append(chain)
      for image in cases {
        let raw = "\(folder)/out.raw"
        let r = try runChecked(sample, ["-quiet", image, raw])
        let reference = try Qemu.rawSHA256(image, scratch: folder)
        #expect(try fileDigest(raw, .sha256) == reference, "\(image): the raw copy differs from qemu-img's")
        // GetInfo as the sample prints it, against vmdk-inspect; -info prints the same.
        let info = Self.fields(r.output)
        let infoOnly = try runChecked(sample, ["-quiet", "-info", image])
        #expect(r.output.hasPrefix(infoOnly.output) && infoOnly.output.contains("capacity: "), "\(image)")
        let json =
          try JSONSerialization.jsonObject(with: try vmdkInspect("info", "--json", image).stdout) as? [String: Any]
          ?? [:]
        let sectors = json["capacitySectors"] as? Int ?? -1
        #expect(info["capacity"] == "\(sectors) sectors (\(sectors * 512) bytes)", "\(image)")
        #expect(info["adapter type"]?.hasPrefix((json["adapterType"] as? String ?? "?") + " ") == true, "\(image)")
        #expect(info["links"] == "\((json["chain"] as? [Any])?.count ?? -1)", "\(image)")
        #expect(info["uuid"] == (json["uuid"] as? String ?? "(none)"), "\(image)")
        // Sparse: only the allocated chunks were written.
        let attributes = try FileManager.default.attributesOfItem(atPath: raw)
        #expect((attributes[.size] as? Int) == sectors * 512, "\(image)")
        var st = stat()
        #expect(stat(raw, &st) == 0)
        if image == chain {
          // 24 MiB virtual, at most 14 MiB allocated somewhere in the chain.
          #expect(Int(st.st_blocks) * 512 <= 14 << 20, "\(image): \(st.st_blocks) blocks")
          #expect(info["links"] == "3")
          #expect(info["parent"]?.hasSuffix("chain-mid.vmdk") == true, "\(info)")
        }
        try FileManager.default.removeItem(atPath: raw)
      }
    }
  }

  /// The C between `<!-- vix-example -->` and `<!-- /vix-example -->` in README.md.
  static func readmeExample() throws -> String {
    let readme = try String(contentsOfFile: "\(packageRoot)/README.md", encoding: .utf8)
    guard let open = readme.range(of: "<!-- vix-example -->\n```c\n"),
      let close = readme.range(of: "```\n<!-- /vix-example -->", range: open.upperBound..<readme.endIndex)
    else { throw ToolFailure("README.md has no ```c block between <!-- vix-example --> markers") }
    return String(readme[open.upperBound..<close.lowerBound])
  }

  @Test func readmeExampleCompilesAndReadsTheDisk() throws {
    try withTemporaryFolder { folder in
      let source = "\(folder)/backup.c"
      try Self.readmeExample().write(toFile: source, atomically: true, encoding: .utf8)
      let library = try builtToolPath("libvixDiskLib.so")
      let program = "\(folder)/backup"
      let cc = try runChecked(
        try requireTool("cc"),
        [
          "-Wall", "-Werror", "-I", "\(packageRoot)/Sources/CVixDiskLib/include", source, "-o", program, library,
          "-Wl,-rpath,\(URL(fileURLWithPath: library).deletingLastPathComponent().path)",
        ])
      #expect(cc.errorOutput.isEmpty, "\(cc.errorOutput)")
      let chain = try Self.makeChain(in: folder)
      for image in ["\(testImagesFolder)/vdiskmanager/monolithicSparse.vmdk", chain] {
        let r = try runChecked(program, [image])
        let digest = String(decoding: try vmdkInspect("digest", image).stdout, as: UTF8.self).prefix(64)
        let context = DigestContext(.sha256)
        r.stdout.withUnsafeBytes { context.update($0) }
        let got = context.finalHex()
        #expect(got == digest, "\(image)")
        #expect(got == (try Qemu.rawSHA256(image, scratch: folder)), "\(image)")
      }
      let missing = try runProcess(program, ["\(folder)/missing.vmdk"])
      #expect(missing.status == 1 && missing.errorOutput.contains("error 4: "), "\(missing.errorOutput)")
      #expect(missing.errorOutput.contains("missing.vmdk"), "\(missing.errorOutput)")
    }
  }
}
