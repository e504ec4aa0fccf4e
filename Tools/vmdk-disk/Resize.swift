// vmdk-disk resize: grow a disk (or shrink it with --shrink when nothing is stored past the new
// end). The top link only: a child's parent keeps its size, and shrinking a child is refused.

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Resize: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "resize", abstract: "Grow (or shrink) a disk.",
    discussion:
      "SIZE is the new virtual size (K/M/G/T suffixes, powers of 1024), or +SIZE to grow by that much. "
      + "Sparse extents are rewritten through a temporary file; flat extent files grow or are cut; split types "
      + "get extents added or removed. The CID changes. Only the top link is resized. "
      + "Exit status: 0 done; 1 failed (the disk is left as it was).")

  @Argument(help: "The disk.") var image: String
  @Argument(help: "New size, or +SIZE.") var size: String
  @Flag(help: "Allow a smaller size (refused when data is stored past the new end).") var shrink = false
  @OptionGroup var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      let relative = size.hasPrefix("+")
      guard let n = parseSize(relative ? String(size.dropFirst()) : size) else {
        throw ValidationError("cannot read the size \(size)")
      }
      var bytes = n
      if relative { bytes += try Disk.open(image, options: open.resolvedOptions()).capacityBytes }
      let r = try Disk.resize(image, to: bytes, allowShrink: shrink, options: open.resolvedOptions())
      print("\(image): \(r.oldCapacitySectors * 512) → \(r.newCapacitySectors * 512) bytes")
      for p in r.extentsAdded { print("  added \(p)") }
      for p in r.extentsRemoved { print("  removed \(p)") }
    }
  }
}
