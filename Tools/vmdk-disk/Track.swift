// vmdk-disk track on|off IMAGE: turns change tracking on (a new NAME-changes.vtrack sidecar,
// whose epoch starts now) or off (the sidecar is deleted). See
// Sources/VMDKBlock/ChangeTracking/FORMAT.md.

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Track: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "track", abstract: "Turn change tracking on or off.",
    discussion: """
      While on, every write through this toolkit records the changed blocks in NAME-changes.vtrack \
      next to the descriptor; `vmdk-inspect info` shows the current change ID. Exit status: 0 done, \
      1 failed (one line on stderr).
      """)

  enum Mode: String, ExpressibleByArgument, CaseIterable {
    case on
    case off
  }

  @Argument(help: "on or off.") var mode: Mode
  @Argument(help: "The disk (its top link).") var image: String
  @OptionGroup var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      try ChangeTracking.setEnabled(mode == .on, path: image, options: open.resolvedOptions())
      if mode == .on {
        let disk = try Disk.open(image, options: open.resolvedOptions())
        if let id = try disk.currentChangeID() { print("change tracking: on, change ID: \(id)") }
      } else {
        print("change tracking: off")
      }
    }
  }
}
