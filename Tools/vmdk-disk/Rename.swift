// vmdk-disk rename: every file of a disk gets the new name; children in its folder follow.

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Rename: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "rename", abstract: "Rename a disk: its extent files, descriptor and tracking sidecar.",
    discussion:
      "Children in the disk's folder that name it as parent are pointed at the new name. "
      + "Exit status: 0 done; 1 failed (nothing renamed).")

  @Argument(help: "The disk.") var old: String
  @Argument(help: "The new name.") var new: String
  @OptionGroup var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      let r = try Disk.rename(old, to: new, options: open.resolvedOptions())
      for (a, b) in r.files { print("\(a) → \(b)") }
      for c in r.children { print("updated parentFileNameHint of \(c)") }
    }
  }
}
