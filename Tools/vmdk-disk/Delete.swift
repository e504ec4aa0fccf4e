// vmdk-disk delete: remove every file of a disk, unless a child in its folder needs it.

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Delete: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "delete", abstract: "Delete a disk: its descriptor, extent files and tracking sidecar.",
    discussion:
      "Refused when a disk in the same folder names it as parent, unless --force. "
      + "Exit status: 0 done; 1 failed or refused.")

  @Argument(help: "The disk.") var image: String
  @Flag(help: "Delete even when children name it as parent.") var force = false
  @OptionGroup var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      let r = try Disk.delete(image, force: force, options: open.resolvedOptions())
      for (p, _) in r.files { print("removed \(p)") }
      for c in r.children { print("warning: \(c) named it as parent and is now a partial chain") }
    }
  }
}
