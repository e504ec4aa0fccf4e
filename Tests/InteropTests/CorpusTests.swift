// Real images made by VMware tools (TestImages/, described in its README): each must decode
// to the digests recorded in TestImages/digests.json and have qemu-img's block map, or fail
// with the error recorded there.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

/// One entry of TestImages/digests.json.
struct CorpusEntry: Decodable, Sendable, CustomTestStringConvertible {
  struct Materialize: Decodable, Sendable {
    /// Path relative to TestImages of a gzipped file.
    var gunzip: String
    /// The name to decompress it to, next to the copied image.
    var `as`: String
  }

  var image: String
  var sha256: String?
  var sha1: String?
  var md5: String?
  var virtualSize: UInt64?
  var materialize: [Materialize]?
  var expectError: String?
  /// The file qemu-img opens instead of `image`, which it cannot open itself.
  var verifiedVia: String?

  var testDescription: String { image }

  /// The digests recorded for the entry.
  var digests: [(DigestContext.Algorithm, String)] {
    [(.sha256, sha256), (.sha1, sha1), (.md5, md5)].compactMap { algorithm, hex in hex.map { (algorithm, $0) } }
  }

  static func load() throws -> [CorpusEntry] {
    let data = try Data(contentsOf: URL(fileURLWithPath: "\(testImagesFolder)/digests.json"))
    return try JSONDecoder().decode([CorpusEntry].self, from: data)
  }

  /// The error code an `expectError` text stands for, and a file name the error must mention.
  /// digests.json words these for people; an unknown wording fails the test rather than
  /// passing unchecked.
  static func expectedFailure(_ text: String) -> (code: VMDKError.Code, mentions: String?)? {
    let missingExtent = "missing extent naming "
    if text.hasPrefix(missingExtent) { return (.fileNotFound, String(text.dropFirst(missingExtent.count))) }
    if text == "invalid descriptor" { return (.invalidDescriptor, nil) }
    return nil
  }
}

@Suite struct CorpusTests {
  @Test("Real images: recorded digests and qemu-img's block map", arguments: try CorpusEntry.load())
  func corpusImage(entry: CorpusEntry) throws {
    try withTemporaryFolder { folder in
      let image = try Self.prepare(entry, in: folder)
      if let text = entry.expectError {
        let expected = try #require(CorpusEntry.expectedFailure(text), "unknown expectError wording: \(text)")
        let error = expectVMDKError(expected.code) { _ = try Disk.open(image) }
        if let name = expected.mentions {
          #expect(error?.description.contains(name) == true, "\(String(describing: error)) does not name \(name)")
        }
        return
      }
      let disk = try Disk.open(image)
      if let size = entry.virtualSize { #expect(disk.capacityBytes == size) }
      #expect(!entry.digests.isEmpty, "an openable entry needs a digest")
      for (algorithm, hex) in entry.digests {
        #expect(try disk.digest(algorithm) == hex, "\(algorithm)")
      }
      // The block map must be qemu's too (for a bare COWD extent, its wrapper's: same file,
      // same offsets).
      let qemuImage = entry.verifiedVia.map { "\(testImagesFolder)/\($0)" } ?? image
      expectSameMap(try disk.blockStatus().map(MapRecord.init), try Qemu.map(qemuImage), entry.image)
      // Images made by VMware and qemu are consistent: check finds nothing.
      let report = try disk.check()
      #expect(report.isClean, "\(entry.image): \(report.problems), \(report.leakedBytes) bytes leaked")
    }
  }

  /// vmdk-inspect's contract for images it cannot open: exit status 2 and one line on stderr
  /// that names the problem file.
  @Test(
    "vmdk-inspect refuses broken images with exit status 2 and one line",
    arguments: try CorpusEntry.load().filter { $0.expectError != nil })
  func cliRefuses(entry: CorpusEntry) throws {
    let image = "\(testImagesFolder)/\(entry.image)"
    let result = try runProcess(try vmdkInspectPath(), ["digest", image])
    #expect(result.status == 2)
    #expect(result.stdout.isEmpty)
    let lines = result.errorOutput.split(separator: "\n")
    #expect(lines.count == 1, "stderr: \(result.errorOutput)")
    let named =
      CorpusEntry.expectedFailure(entry.expectError!)?.mentions ?? URL(fileURLWithPath: image).lastPathComponent
    #expect(result.errorOutput.contains(named), "stderr: \(result.errorOutput)")
  }

  /// The path to open: the image in TestImages, or, when the entry has extents stored
  /// gzipped, a copy of it in `folder` with those extents decompressed next to it.
  static func prepare(_ entry: CorpusEntry, in folder: String) throws -> String {
    let source = "\(testImagesFolder)/\(entry.image)"
    guard let materialize = entry.materialize else { return source }
    let copy = "\(folder)/\(URL(fileURLWithPath: source).lastPathComponent)"
    try FileManager.default.copyItem(atPath: source, toPath: copy)
    let gzip = try requireTool("gzip")
    for item in materialize {
      let bytes = try runChecked(gzip, ["-dc", "\(testImagesFolder)/\(item.gunzip)"]).stdout
      try bytes.write(to: URL(fileURLWithPath: "\(folder)/\(item.as)"))
    }
    return copy
  }
}
