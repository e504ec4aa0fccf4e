// `vmdk-inspect compare` and `Disk.compare(with:strict:)` against `qemu-img compare` on pairs
// of qemu-made images in different formats: identical, one byte apart (the same offset
// reported), different sizes with and without --strict, errors (exit 2), and a large sparse
// pair whose holes compare without being read.

import Foundation
import Testing
import VMDKBlock

private let mib: UInt64 = 1 << 20
private let gib: UInt64 = 1 << 30

/// The formats a test image is converted to.
enum CompareFormat: String, CaseIterable, CustomStringConvertible {
  case raw, monolithicSparse, streamOptimized, monolithicFlat

  var description: String { rawValue }
  var qemuFormat: String { self == .raw ? "raw" : "vmdk" }

  /// `qemu-img convert` of the raw `source` into `path` in this format.
  func convert(_ source: String, to path: String) throws {
    let target = self == .raw ? ["-O", "raw"] : ["-O", "vmdk", "-o", "subformat=\(rawValue)"]
    try Qemu.img(["convert", "-f", "raw"] + target + [source, path])
  }
}

/// A raw image of `size` bytes, with data that leaves holes: 3 MiB at 1 MiB, 1000 bytes at
/// an odd offset past 9 MiB, and 64 KiB at 13 MiB.
private func makeRaw(_ path: String, size: UInt64, extra: [String] = []) throws {
  try Qemu.img("create", "-q", "-f", "raw", path, String(size))
  try runChecked(
    try requireTool("qemu-io"),
    ["-f", "raw"]
      + (["write -P 0x11 1M 3M", "write -P 0x22 9437191 1000", "write -P 0x33 13M 64k"] + extra).flatMap {
        ["-c", $0]
      } + [path])
}

/// What both tools say about a pair: exit status and the last line of standard output (qemu
/// prints "Warning: Image size mismatch!" before it on stdout; vmdk-inspect on stderr).
private struct Verdict: Equatable, CustomStringConvertible {
  var status: Int32
  var line: String
  var description: String { "exit \(status): \(line)" }

  init(status: Int32, line: String) {
    self.status = status
    self.line = line
  }

  init(_ r: ProcessResult) {
    status = r.status
    line = r.output.split(separator: "\n").last.map(String.init) ?? ""
  }
}

private func qemuCompare(_ a: String, _ fa: CompareFormat, _ b: String, _ fb: CompareFormat, strict: Bool = false)
  throws -> Verdict
{
  Verdict(
    try runProcess(
      try requireTool("qemu-img"),
      ["compare"] + (strict ? ["-s"] : []) + ["-f", fa.qemuFormat, "-F", fb.qemuFormat, a, b]))
}

private func ourCompare(_ arguments: [String]) throws -> ProcessResult {
  try runProcess(try vmdkInspectPath(), ["compare"] + arguments)
}

/// Pairs of different formats, each format on the left and on the right once.
private let formatPairs: [(CompareFormat, CompareFormat)] = [
  (.raw, .monolithicSparse), (.monolithicSparse, .streamOptimized), (.streamOptimized, .raw),
  (.monolithicFlat, .monolithicSparse), (.streamOptimized, .monolithicFlat),
]

@Suite(.timeLimit(.minutes(20))) struct CompareTests {
  @Test(arguments: formatPairs)
  func identicalImagesInDifferentFormats(_ fa: CompareFormat, _ fb: CompareFormat) throws {
    try withTemporaryFolder { folder in
      let raw = "\(folder)/base.raw"
      try makeRaw(raw, size: 16 * mib)
      let a = "\(folder)/a.\(fa)"
      let b = "\(folder)/b.\(fb)"
      try fa.convert(raw, to: a)
      try fb.convert(raw, to: b)
      let qemu = try qemuCompare(a, fa, b, fb)
      #expect(qemu == Verdict(status: 0, line: "Images are identical."))
      for (x, y) in [(a, b), (b, a)] {
        let ours = try ourCompare([x, y])
        #expect(Verdict(ours) == qemu, "\(x) vs \(y): \(ours.errorOutput)")
        #expect(ours.errorOutput.isEmpty)
      }
      let result = try Disk.open(a).compare(with: Disk.open(b))
      #expect(result.outcome == .identical)
      // Only the data is read: 3 MiB + 64 KiB + the grain or block around the 1000 bytes, on
      // each side; never the holes of the 16 MiB.
      #expect(result.bytesRead <= 2 * (3 * mib + 64 << 10 + mib), "read \(result.bytesRead) bytes")
    }
  }

  /// One byte changed at `offset` (not grain- or sector-aligned): in a hole of the original
  /// (read on one side only), inside its data (read on both sides), next to the odd-offset
  /// data. Both tools exit 1 and print the same offset (qemu-img's: the start of the
  /// differing 512-byte sector); the library and `--exact` give the byte itself.
  @Test(arguments: [5 * mib + 123, 2 * mib + 77, 9_437_191 + 1000 + 3, 16 * mib - 1] as [UInt64])
  func oneByteApart(offset: UInt64) throws {
    try withTemporaryFolder { folder in
      let raw = "\(folder)/base.raw"
      let changed = "\(folder)/changed.raw"
      try makeRaw(raw, size: 16 * mib)
      try makeRaw(changed, size: 16 * mib, extra: ["write -P 0x55 \(offset) 1"])
      for (fa, fb) in formatPairs {
        let a = "\(folder)/a-\(fa)-\(fb).\(fa)"
        let b = "\(folder)/b-\(fa)-\(fb).\(fb)"
        try fa.convert(raw, to: a)
        try fb.convert(changed, to: b)
        let qemu = try qemuCompare(a, fa, b, fb)
        #expect(qemu == Verdict(status: 1, line: "Content mismatch at offset \(offset / 512 * 512)!"))
        for (x, y) in [(a, b), (b, a)] {
          let ours = try ourCompare([x, y])
          #expect(Verdict(ours) == qemu, "\(fa) vs \(fb): \(ours.errorOutput)")
          let exact = try ourCompare(["--exact", x, y])
          #expect(Verdict(exact) == Verdict(status: 1, line: "Content mismatch at offset \(offset)!"))
        }
        #expect(try Disk.open(a).compare(with: Disk.open(b)).outcome == .contentMismatch(offset: offset))
        let json = try ourCompare(["--json", a, b])
        #expect(json.status == 1)
        let object = try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any]
        #expect(object?["result"] as? String == "content-mismatch")
        #expect((object?["offset"] as? NSNumber)?.uint64Value == offset / 512 * 512)
        #expect((object?["byteOffset"] as? NSNumber)?.uint64Value == offset)
        // Small chunks: the difference is found across many reads, at the same byte.
        #expect(
          try Disk.open(b).compare(with: Disk.open(a), chunkBytes: 4096).outcome == .contentMismatch(offset: offset))
      }
    }
  }

  /// One image 1 MiB larger than the other, its tail zero or with one non-zero byte; each
  /// order, with and without --strict: our exit status and line equal qemu-img compare's
  /// (`-s` is its strict mode).
  @Test(arguments: [false, true])
  func differentSizes(tailData: Bool) throws {
    try withTemporaryFolder { folder in
      let small = "\(folder)/small.raw"
      let large = "\(folder)/large.raw"
      let tailByte = 16 * mib + 300
      try makeRaw(small, size: 16 * mib)
      try makeRaw(large, size: 17 * mib, extra: tailData ? ["write -P 0x66 \(tailByte) 1"] : [])
      for (fa, fb) in formatPairs {
        let a = "\(folder)/small-\(fa)-\(fb).\(fa)"
        let b = "\(folder)/large-\(fa)-\(fb).\(fb)"
        try fa.convert(small, to: a)
        try fb.convert(large, to: b)
        for strict in [false, true] {
          for ((x, fx), (y, fy)) in [((a, fa), (b, fb)), ((b, fb), (a, fa))] {
            let qemu = try qemuCompare(x, fx, y, fy, strict: strict)
            let expected =
              strict
              ? Verdict(status: 1, line: "Strict mode: Image size mismatch!")
              : tailData
                ? Verdict(status: 1, line: "Content mismatch at offset \(tailByte / 512 * 512)!")
                : Verdict(status: 0, line: "Images are identical.")
            #expect(qemu == expected, "qemu-img, \(fx) vs \(fy), strict \(strict)")
            let ours = try ourCompare((strict ? ["--strict"] : []) + [x, y])
            #expect(Verdict(ours) == qemu, "\(fx) vs \(fy), strict \(strict): \(ours.errorOutput)")
            #expect(strict || ours.errorOutput == "Warning: Image size mismatch!\n")
          }
        }
        let result = try Disk.open(a).compare(with: Disk.open(b))
        #expect(result.outcome == (tailData ? .contentMismatch(offset: tailByte) : .identical))
        #expect(try Disk.open(b).compare(with: Disk.open(a), strict: true).outcome == .sizeMismatch)
      }
    }
  }

  /// A missing file and one whose data cannot be read: exit 2 with one line on stderr naming
  /// the file, as qemu-img compare exits 2.
  @Test func errorsExitTwo() throws {
    try withTemporaryFolder { folder in
      let raw = "\(folder)/base.raw"
      try makeRaw(raw, size: 16 * mib)
      let sparse = "\(folder)/sparse.vmdk"
      try CompareFormat.monolithicSparse.convert(raw, to: sparse)
      let missing = "\(folder)/missing.vmdk"
      let qemu = try runProcess(try requireTool("qemu-img"), ["compare", sparse, missing])
      #expect(qemu.status == 2)
      for arguments in [[sparse, missing], [missing, sparse]] {
        let ours = try ourCompare(arguments)
        #expect(ours.status == 2)
        #expect(ours.output.isEmpty)
        #expect(ours.errorOutput.contains(missing), "\(ours.errorOutput)")
        #expect(ours.errorOutput.split(separator: "\n").count == 1)
      }
      // The grains are cut off: the grain tables point past the end of the file.
      let truncated = "\(folder)/truncated.vmdk"
      try FileManager.default.copyItem(atPath: sparse, toPath: truncated)
      let size = try #require(try FileManager.default.attributesOfItem(atPath: truncated)[.size] as? UInt64)
      try #require(truncate(truncated, off_t(size - 2 * mib)) == 0)
      // The failing side first (read on this thread) and second (read on the other one).
      for arguments in [[raw, truncated], [truncated, raw]] {
        let ours = try ourCompare(arguments)
        #expect(ours.status == 2, "\(ours.output) \(ours.errorOutput)")
        #expect(ours.output.isEmpty)
        #expect(ours.errorOutput.contains(truncated), "\(ours.errorOutput)")
      }
      #expect(throws: VMDKError.self) { try Disk.open(truncated).compare(with: Disk.open(raw)) }
    }
  }

  /// 8 GiB virtual, almost empty, as a sparse raw file and a monolithicSparse: identical,
  /// then one byte apart near the end; the holes are never read, so it takes well under a
  /// second of reading and reads only the data.
  @Test func largeSparsePairReadsOnlyData() throws {
    try withTemporaryFolder { folder in
      let size = 8 * gib
      let writes = ["write -P 0x44 3G 1M", "write -P 0x45 7G 64k"]
      let raw = "\(folder)/big.raw"
      try Qemu.img("create", "-q", "-f", "raw", raw, String(size))
      try runChecked(try requireTool("qemu-io"), ["-f", "raw"] + writes.flatMap { ["-c", $0] } + [raw])
      let sparse = "\(folder)/big.vmdk"
      try Qemu.create(sparse, size: size)
      try Qemu.io(sparse, writes)
      let qemu = try qemuCompare(raw, .raw, sparse, .monolithicSparse)
      #expect(qemu == Verdict(status: 0, line: "Images are identical."))

      let started = Date()
      let result = try Disk.open(raw).compare(with: Disk.open(sparse))
      let seconds = Date().timeIntervalSince(started)
      #expect(result.outcome == .identical)
      #expect(result.bytesRead <= 2 * (2 * mib), "read \(result.bytesRead) bytes")
      #expect(seconds < 5, "took \(seconds) s")
      print("compare of an 8 GiB sparse pair: \(seconds) s, \(result.bytesRead) bytes read")

      let ours = try ourCompare([raw, sparse])
      #expect(Verdict(ours) == qemu)

      let near = size - 4096 + 17
      try Qemu.io(sparse, ["write -P 0x01 \(near) 1"])
      let qemuApart = try qemuCompare(raw, .raw, sparse, .monolithicSparse)
      #expect(qemuApart == Verdict(status: 1, line: "Content mismatch at offset \(near / 512 * 512)!"))
      #expect(Verdict(try ourCompare([raw, sparse])) == qemuApart)
      #expect(Verdict(try ourCompare([sparse, raw])) == qemuApart)
    }
  }

  /// A snapshot chain (a child over a monolithicSparse parent) against its flattened copy and
  /// against the parent's raw original: what the chain reads, holes of the child included.
  @Test func chainAgainstFlattenedCopy() throws {
    try withTemporaryFolder { folder in
      let raw = "\(folder)/base.raw"
      try makeRaw(raw, size: 16 * mib)
      let parent = "\(folder)/parent.vmdk"
      try CompareFormat.monolithicSparse.convert(raw, to: parent)
      let child = "\(folder)/child.vmdk"
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk", child)
      try Qemu.io(child, ["write -P 0x55 \(5 * mib + 123) 1", "write -P 0 \(2 * mib + 4096) 4096"])
      let flat = "\(folder)/flat.raw"
      try Qemu.img("convert", "-f", "vmdk", "-O", "raw", child, flat)
      for (other, format) in [(flat, CompareFormat.raw), (raw, .raw)] {
        let qemu = try qemuCompare(child, .monolithicSparse, other, format)
        #expect(
          qemu
            == (other == flat
              ? Verdict(status: 0, line: "Images are identical.")
              : Verdict(status: 1, line: "Content mismatch at offset \(2 * mib + 4096)!")))
        #expect(Verdict(try ourCompare([child, other])) == qemu)
        #expect(Verdict(try ourCompare([other, child])) == qemu)
      }
    }
  }

  /// Locations that are not paths: an NBD export and an HTTP URL against files, and against
  /// each other.
  @Test func nbdAndHTTPLocations() throws {
    try withTemporaryFolder { folder in
      let raw = "\(folder)/base.raw"
      let changed = "\(folder)/changed.raw"
      try makeRaw(raw, size: 16 * mib)
      try makeRaw(changed, size: 16 * mib, extra: ["write -P 0x55 \(5 * mib + 123) 1"])
      let sparse = "\(folder)/changed.vmdk"
      try CompareFormat.monolithicSparse.convert(changed, to: sparse)
      let server = try QemuNBDServer(file: raw, format: "raw", readOnly: true)
      defer { server.stop() }
      let uri = server.uri(export: "disk")
      let ours = try ourCompare([uri, sparse])
      #expect(
        Verdict(ours) == Verdict(status: 1, line: "Content mismatch at offset \(5 * mib)!"), "\(ours.errorOutput)")
      let same = try ourCompare([uri, raw])
      #expect(Verdict(same) == Verdict(status: 0, line: "Images are identical."), "\(same.errorOutput)")

      let nginx = try NginxServer(prefix: "\(folder)/nginx")
      defer { nginx.stop() }
      try CompareFormat.streamOptimized.convert(raw, to: "\(nginx.root)/base.vmdk")
      try CompareFormat.streamOptimized.convert(changed, to: "\(nginx.root)/changed.vmdk")
      let url = "\(nginx.baseURL)/base.vmdk"
      let identical = try ourCompare([url, uri])
      #expect(Verdict(identical) == Verdict(status: 0, line: "Images are identical."), "\(identical.errorOutput)")
      let apart = try ourCompare(["--exact", sparse, url])
      #expect(
        Verdict(apart) == Verdict(status: 1, line: "Content mismatch at offset \(5 * mib + 123)!"),
        "\(apart.errorOutput)")
      let changedURL = "\(nginx.baseURL)/changed.vmdk"
      #expect(Verdict(try ourCompare([changedURL, sparse])) == Verdict(status: 0, line: "Images are identical."))
    }
  }
}
