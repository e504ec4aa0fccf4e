// Pipelines that fail half-way (issue 10, point 4). A grain table entry that points past the
// end of the file makes one chunk of a sequential read fail; the read-ahead, the copy and the
// compression pipelines must then end cleanly and hand that first error to their caller,
// wherever the bad grain lies (the first, a middle or the last chunk) and whichever side
// fails (the reading thread or the consumer). The old read-ahead freed a DispatchSemaphore
// below its start value here, and libdispatch killed the process with SIGILL.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat

/// A 32 MiB monolithicSparse with every fourth grain written and grain `bad`'s table entry
/// pointing 1 MiB past the end of the file.
func pastEndImage(badGrain bad: UInt64) -> [UInt8] {
  var image = SparseImage()
  image.capacitySectors = 65536
  image.grainSectors = 128
  image.descriptor = descriptorText(createType: "monolithicSparse", extents: [#"RW 65536 SPARSE "disk.vmdk""#])
  image.fill(Array(stride(from: 0, to: 512, by: 4)) + [bad])
  var built = image.build()
  let past = UInt32(built.bytes.count / 512 + 2048)
  built.bytes.put32(past, at: built.gteOffset(bad))
  return built.bytes
}

/// The consumer's own error, told apart from the library's.
struct ConsumerStop: Error, Equatable { let chunk: Int }

@Suite(.timeLimit(.minutes(20))) struct PipelineFailureTests {
  /// Grains in the first, a middle and the last 4 MiB chunk (64 grains of 64 KiB per chunk).
  static let badGrains: [UInt64] = [0, 1, 257, 446, 511]

  @Test(arguments: badGrains) func digestGivesTheReadError(bad: UInt64) throws {
    let folder = try TempFolder()
    let path = try folder.write("bad.vmdk", pastEndImage(badGrain: bad))
    let disk = try Disk.open(path)
    expectCode(.offsetPastEnd) { _ = try disk.digest() }
    // The disk stays usable: the same error again, and the good grains still read.
    expectCode(.offsetPastEnd) { _ = try disk.digest(.md5) }
    let good = bad == 0 ? UInt64(4) : 0
    #expect(try disk.read(at: good * 65536, count: 512) == Pattern.bytes(startingAt: good * 65536, count: 512))
  }

  /// Every chunk size and failure point: the reading thread fails, the consumer fails, or
  /// both (then the earlier chunk's error wins, which is the consumer's).
  @Test(arguments: badGrains) func readSequentiallyEndsCleanly(bad: UInt64) throws {
    let folder = try TempFolder()
    let path = try folder.write("bad.vmdk", pastEndImage(badGrain: bad))
    let disk = try Disk.open(path)
    for chunk in [64 << 10, 192 << 10, 4 << 20] {
      let badChunk = Int(bad * 65536) / chunk
      var seen = 0
      expectCode(.offsetPastEnd) { try disk.readSequentially(chunkBytes: chunk) { _ in seen += 1 } }
      #expect(seen == badChunk, "chunks before the bad one are all handed out, chunk \(chunk)")
      for stopAt in [0, 1, badChunk - 1, badChunk, badChunk + 1] where stopAt >= 0 {
        var n = 0
        do {
          try disk.readSequentially(chunkBytes: chunk) { _ in
            if n == stopAt { throw ConsumerStop(chunk: n) }
            n += 1
          }
          Issue.record("no error, chunk \(chunk), stop at \(stopAt)")
        } catch let e as ConsumerStop {
          #expect(stopAt < badChunk && e.chunk == stopAt, "chunk \(chunk), stop at \(stopAt)")
        } catch let e as VMDKError {
          #expect(stopAt >= badChunk && e.code == .offsetPastEnd, "chunk \(chunk), stop at \(stopAt): \(e)")
        }
      }
    }
  }

  @Test(arguments: badGrains) func readDataRangesEndsCleanly(bad: UInt64) throws {
    let folder = try TempFolder()
    let path = try folder.write("bad.vmdk", pastEndImage(badGrain: bad))
    let disk = try Disk.open(path)
    expectCode(.offsetPastEnd) { try disk.readDataRanges(chunkBytes: 64 << 10) { _, _ in } }
    // Stopping at the first chunk: the consumer's error wins when that chunk is good. When the
    // bad entry is grain 0's or 1's, block status meets it while it still extends the first
    // data run (grains 0-1 are one run), so it fails before any chunk is handed out.
    var n = 0
    do {
      try disk.readDataRanges(chunkBytes: 64 << 10) { _, _ in
        n += 1
        throw ConsumerStop(chunk: n)
      }
      Issue.record("no error, bad grain \(bad)")
    } catch let e as ConsumerStop {
      #expect(bad > 1 && e.chunk == 1)
    } catch let e as VMDKError {
      #expect(bad <= 1 && n == 0 && e.code == .offsetPastEnd, "\(e)")
    }
  }

  /// The copy pipeline into each writer, the stream writer's compression threads included:
  /// the read error comes back, and no file (final or temporary) is left.
  @Test(arguments: [DiskType.streamOptimized, .monolithicSparse, .monolithicFlat])
  func copyEndsCleanly(type: DiskType) throws {
    let folder = try TempFolder()
    for bad in Self.badGrains {
      let path = try folder.write("bad.vmdk", pastEndImage(badGrain: bad))
      let disk = try Disk.open(path)
      let out = folder.path("out.vmdk")
      let options = CreateOptions(type: type, capacityBytes: disk.capacityBytes)
      let writer = try ImageCreator.create(path: out, options: options)
      expectCode(.offsetPastEnd) { _ = try disk.copy(to: writer) }
      writer.abort()
      let left = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0 != "bad.vmdk" }
      #expect(left.isEmpty, "bad grain \(bad), \(type): \(left)")
    }
  }

  /// The tools: one line naming the file and exit status 2 (never a signal). `map` checks each
  /// entry against the file's end, so it too refuses the bad entry rather than mapping it.
  @Test(arguments: ["digest", "cat", "map"]) func inspectExitsWithTwo(command: String) throws {
    let tool = try #require(InspectTool.path, "vmdk-inspect is not next to \(CommandLine.arguments[0])")
    let folder = try TempFolder()
    for bad in Self.badGrains {
      let path = try folder.write("bad.vmdk", pastEndImage(badGrain: bad))
      let r = try run(tool, [command, path])
      #expect(r.status == 2, "bad grain \(bad): \(r.status) \(r.stderr)")
      #expect(r.stderr.contains(path) && r.stderr.contains("20006"), "\(r.stderr)")
    }
  }

  @Test func convertExitsCleanly() throws {
    let inspect = try #require(InspectTool.path, "vmdk-inspect is not next to \(CommandLine.arguments[0])")
    let convert = URL(fileURLWithPath: inspect).deletingLastPathComponent().appendingPathComponent("vmdk-convert").path
    let folder = try TempFolder()
    for bad in Self.badGrains {
      let path = try folder.write("bad.vmdk", pastEndImage(badGrain: bad))
      for type in ["streamOptimized", "monolithicSparse"] {
        let r = try run(convert, ["-t", type, path, folder.path("out.vmdk")])
        #expect(r.status == 1, "bad grain \(bad), \(type): \(r.status) \(r.stderr)")
        #expect(r.stderr.contains(path), "\(r.stderr)")
        let left = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0 != "bad.vmdk" }
        #expect(left.isEmpty, "bad grain \(bad), \(type): \(left)")
      }
    }
  }
}
