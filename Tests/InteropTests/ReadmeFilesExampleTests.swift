// The README's files example (between `<!-- files-example begin -->` and `end -->`), cut out
// of README.md as it stands, compiled with swiftc against the modules and objects `swift build`
// left next to the test binary, and run on a GPT disk holding an ext4 made by `mke2fs -d`.
// Only the image path is replaced; the output must list the partition, walk /etc (twice: walk
// and walkPaths) and print /etc/hostname.
import Foundation
import Testing
import VMDKBlock

@Suite struct ReadmeFilesExampleTests {
  /// The example's Swift source: the fenced block between the markers.
  static func example() throws -> String {
    let text = try String(contentsOfFile: "\(packageRoot)/README.md", encoding: .utf8)
    guard let begin = text.range(of: "<!-- files-example begin -->"),
      let end = text.range(of: "<!-- files-example end -->", range: begin.upperBound..<text.endIndex)
    else { throw ToolFailure("README.md has no files-example markers") }
    var block = String(text[begin.upperBound..<end.lowerBound])
    guard let open = block.range(of: "```swift\n"),
      let close = block.range(of: "```", options: String.CompareOptions.backwards),
      open.upperBound <= close.lowerBound
    else { throw ToolFailure("the files example is not one ```swift block") }
    block = String(block[open.upperBound..<close.lowerBound])
    return block
  }

  /// swiftc arguments that import and link the package's library modules from `build`
  /// (.build/debug): their .swiftmodule files, the C module maps, and every object file.
  static func compileArguments(build: String) throws -> [String] {
    let root = packageRoot
    var args = [
      "-I", "\(build)/Modules", "-Xcc", "-fmodule-map-file=\(build)/CPlatform.build/module.modulemap",
      "-Xcc", "-I", "-Xcc", "\(root)/Sources/CPlatform/include",
    ]
    for c in ["CZlib", "CSSL", "CCrypto", "CDeflate"] {
      args += ["-Xcc", "-fmodule-map-file=\(root)/Sources/\(c)/module.modulemap"]
    }
    let fm = FileManager.default
    for module in ["VMDKFiles", "VMDKBlock", "VMDKCore", "VMDKFormat", "VMDKTransport", "CPlatform", "Logging"] {
      let folder = "\(build)/\(module).build"
      let objects = try fm.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".o") }.sorted()
      guard !objects.isEmpty else { throw ToolFailure("no objects in \(folder): run swift build first") }
      args += objects.map { "\(folder)/\($0)" }
    }
    return args + ["-lz", "-lssl", "-lcrypto", "-ldeflate"]
  }

  @Test func compilesAndRunsOnAnExt4InAGPTDisk() throws {
    _ = try requireTool("mke2fs")
    _ = try requireTool("sgdisk")
    let swiftc = try requireTool("swiftc")
    let source = try Self.example()
    #expect(source.contains("import VMDKFiles") && source.contains("backup/disk.vmdk"))
    try withTemporaryFolder { dir in
      try shell(
        """
        cd \(dir); umask 022; mkdir -p src/etc/nginx
        printf 'backup-host\\n' > src/etc/hostname
        printf 'worker_processes 4;\\n' > src/etc/nginx/nginx.conf
        chmod 640 src/etc/nginx/nginx.conf
        mke2fs -q -F -t ext4 -b 4096 -d src fs.img 16M
        truncate -s 20M disk.img
        sgdisk -o -n 1:2048:+16M -t 1:8300 disk.img >/dev/null
        dd if=fs.img of=disk.img bs=1M seek=1 conv=notrunc status=none
        """)
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", "\(dir)/disk.img", "\(dir)/disk.vmdk")
      let main = "\(dir)/main.swift"
      try source.replacingOccurrences(of: "backup/disk.vmdk", with: "\(dir)/disk.vmdk")
        .write(toFile: main, atomically: true, encoding: .utf8)
      let build = URL(fileURLWithPath: try builtToolPath("vmdk-files")).deletingLastPathComponent().path
      let arguments = [main, "-o", "\(dir)/example"] + (try Self.compileArguments(build: build))
      let compiled = try runProcess(swiftc, arguments)
      #expect(compiled.status == 0, "swiftc: \(compiled.errorOutput)")
      guard compiled.status == 0 else { return }
      let run = try runProcess("\(dir)/example", [])
      #expect(run.status == 0, "\(run.errorOutput)")
      var lines = run.output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
      #expect(lines.first == "1 1048576 16777216 ext4", "\(run.output)")
      #expect(lines.last == "")
      lines = Array(lines.dropFirst().dropLast())
      #expect(lines.last == "backup-host", "\(run.output)")
      #expect(
        Set(lines.dropLast()) == [
          "hostname regular 12 644", "nginx directory 4096 755", "nginx/nginx.conf regular 20 640",
          "hostname 1", "nginx 1", "nginx/nginx.conf 2",
        ], "\(run.output)")
    }
  }
}
