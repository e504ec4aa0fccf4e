// The command-line contract on hostile input: `vmdk-inspect` exits with status 2 and writes
// exactly one line on stderr, naming the file, and nothing on stdout.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat

/// The `vmdk-inspect` built with this test bundle: SwiftPM puts it next to the bundle, so
/// walk up from the test binary's path.
enum InspectTool {
  static let path: String? = {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.deletingLastPathComponent()
    for _ in 0..<4 {
      let candidate = dir.appendingPathComponent("vmdk-inspect").path
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
      dir = dir.deletingLastPathComponent()
    }
    return nil
  }()
}

@Suite(.timeLimit(.minutes(20))) struct InspectToolTests {
  /// Hostile files: one failing in the header, one in the descriptor's paths, one in the
  /// chain, and one only when the data is read.
  static let cases: [Named<(command: String, setUp: @Sendable (TempFolder) throws -> String)>] = [
    Named(
      "info on a grain size of 0",
      (
        "info",
        { folder in
          var image = SparseImage().build()
          image.header { $0.grainSectors = 0 }
          return try folder.write("grain0.vmdk", image.bytes)
        }
      )),
    Named(
      "info on an extent in ../",
      (
        "info",
        { folder in
          try folder.write("outside-flat.vmdk", flat(8))
          return try flatDescriptor(folder, "inner/escape.vmdk", extent: "../outside-flat.vmdk")
        }
      )),
    Named(
      "info on a chain loop",
      (
        "info",
        { folder in
          try ChainFiles.link(folder, "b.vmdk", cid: "0000000b", parentCID: "0000000a", parent: "a.vmdk")
          return try ChainFiles.link(folder, "a.vmdk", cid: "0000000a", parentCID: "0000000b", parent: "b.vmdk")
        }
      )),
    Named(
      "digest of corrupt zlib data",
      (
        "digest",
        { folder in
          var image = StreamImage()
          image.fill([0, 1])
          var built = image.build()
          let data = built.markerOffsets[1]! + 12
          for i in 10..<30 { built.bytes[data + i] ^= 0xA5 }
          return try folder.write("corrupt.vmdk", built.bytes)
        }
      )),
  ]

  @Test(arguments: cases)
  func exitsWithTwoAndOneLine(_ c: Named<(command: String, setUp: @Sendable (TempFolder) throws -> String)>) throws {
    let tool = try #require(InspectTool.path, "vmdk-inspect is not next to \(CommandLine.arguments[0])")
    let folder = try TempFolder()
    let image = try c.value.setUp(folder)
    let r = try run(tool, [c.value.command, image])
    #expect(r.status == 2)
    #expect(r.stdout.isEmpty, "\(r.stdout)")
    let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: false)
    #expect(lines.count == 2 && lines[1].isEmpty, "one line ending in a newline: \(r.stderr)")
    // The line names a file of the image (the one at fault, which is in the test's folder).
    #expect(lines.first?.contains(folder.path) == true, "\(r.stderr)")
  }
}
