// vmdk-disk compact: rewrite the sparse extents without all-zero grains and unreferenced space.

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Compact: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "compact", abstract: "Make a sparse disk's files smaller: drop zero grains and unused space.",
    discussion:
      "Zero grains of a snapshot that hide data of its parent are kept. The content, CID and descriptor do not "
      + "change. Exit status: 0 done; 1 failed (the disk is left as it was).")

  @Argument(help: "The disk.") var image: String
  @OptionGroup var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      let r = try Disk.compact(image, options: open.resolvedOptions())
      print(
        "\(image): \(r.bytesBefore) → \(r.bytesAfter) bytes, \(r.grainsStored) grains stored, \(r.zeroGrainsDropped) zero grains dropped"
      )
    }
  }
}
