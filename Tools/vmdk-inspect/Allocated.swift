// `vmdk-inspect allocated`: the allocated ranges in whole chunks, as VixDiskLib's
// QueryAllocatedBlocks reports them (in bytes here), from the grain tables alone.

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Allocated: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Allocated ranges in whole chunks (VixDiskLib's QueryAllocatedBlocks), without reading data.",
    discussion: """
      A range is allocated when the link that answers for it stores it (zeroed grains, ZERO
      extents and unallocated ranges are not). Ranges start on a chunk boundary and end on one
      or at the end of the disk; adjacent chunks are merged.
      """)

  @Argument(help: "The image.") var image: String
  @OptionGroup var open: OpenFlags
  @Flag(help: "Print JSON: chunkSectors, ranges [{start, length}] and allocatedBytes.") var json = false
  @Option(help: "Chunk size in sectors: a power of two, at least 128 (64 KiB).") var chunkSectors: UInt64 = 128
  @Flag(help: "Only the top link's allocation, not its parents'.") var top = false

  func validate() throws {
    guard chunkSectors >= Disk.minChunkSectors, chunkSectors <= Disk.maxChunkSectors,
      chunkSectors & (chunkSectors - 1) == 0
    else {
      throw ValidationError("--chunk-sectors must be a power of two of at least 128, not \(chunkSectors)")
    }
  }

  func run() throws {
    try runReporting {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      let ranges = try disk.allocatedBlocks(chunkSectors: chunkSectors, topOnly: top)
      let total = ranges.reduce(UInt64(0)) { $0 + $1.length }
      if json {
        printJSON(
          .object([
            ("chunkSectors", .uint(chunkSectors)),
            ("ranges", .array(ranges.map { .object([("start", .uint($0.start)), ("length", .uint($0.length))]) })),
            ("allocatedBytes", .uint(total)),
          ]))
        return
      }
      printRanges(ranges)
      print(
        "allocated: \(total) bytes (\(humanSize(total))) in \(ranges.count) range(s) of \(chunkSectors)-sector chunks")
    }
  }
}

/// The `start length` columns of `map`, in hex.
func printRanges(_ ranges: [ChangedArea]) {
  print("start".padding(18) + "length")
  for r in ranges {
    print("0x\(String(r.start, radix: 16))".padding(18) + "0x\(String(r.length, radix: 16))")
  }
}
