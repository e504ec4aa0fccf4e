// vmdk-disk defragment: rewrite the sparse extents with their grains in virtual disk order.

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Defragment: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "defragment", abstract: "Store a sparse disk's grains in virtual disk order.",
    discussion:
      "Rewrites each sparse extent through a temporary file; zero grains are kept (see compact). "
      + "Exit status: 0 done; 1 failed (the disk is left as it was).")

  @Argument(help: "The disk.") var image: String
  @OptionGroup var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      let r = try Disk.defragment(image, options: open.resolvedOptions())
      print("\(image): \(r.bytesBefore) → \(r.bytesAfter) bytes, \(r.grainsStored) grains in order")
    }
  }
}
