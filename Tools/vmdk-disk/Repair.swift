// vmdk-disk repair: fix what `vmdk-inspect check` finds in the top link's sparse extents.

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKTransport

struct Repair: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "repair", abstract: "Repair grain directories and tables, drop entries past the end, reclaim leaks.",
    discussion:
      "Prints each change and each range whose data became unreadable. Exit status: 0 the disk is clean; "
      + "1 something could not be repaired (it is left as it was and reported) or the repair failed.")

  @Argument(help: "The disk.") var image: String
  @OptionGroup var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      var o = try open.resolvedOptions()
      o.singleLink = true
      let r = try Disk.repair(image, options: o)
      for f in r.fixed { print("fixed: \(f)") }
      for l in r.lost { print("unreadable: \(l)") }
      for u in r.unrepaired { print("not repaired: \(u)") }
      if r.fixed.isEmpty && r.isClean { print("\(image): nothing to repair") }
      guard r.isClean else {
        throw VMDKError(.needsRepair, "\(r.unrepaired.count) problem(s) could not be repaired", file: image)
      }
    }
  }
}
