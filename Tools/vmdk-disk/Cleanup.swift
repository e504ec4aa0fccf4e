// vmdk-disk cleanup: remove the temporary files of writers that died before committing.

import ArgumentParser
import Foundation
import ToolSupport
import VMDKBlock

struct Cleanup: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cleanup", abstract: "Remove temporary files (.NAME.tmp-PID-RANDOM) left by dead writers.",
    discussion:
      "A file is removed only when its PID no longer exists; a live writer's file is kept. "
      + "There are no lock files to remove: the toolkit's locks are open-file-description locks on the disk "
      + "files, which vanish with the process. Exit status: 0 done; 1 failed.")

  @Option(help: "Another folder to clean (a converter's --temp-dir).") var tempDir: String?
  @Argument(help: "Folders to clean (the current folder when none).") var folders: [String] = []

  func run() throws {
    try runReporting(status: 1) {
      var list = folders.isEmpty && tempDir == nil ? ["."] : folders
      if let tempDir { list.append(tempDir) }
      let r = try VMDKBlock.Cleanup.run(folders: list)
      for p in r.removed { print("removed \(p)") }
      for p in r.keptLive { print("kept \(p) (its writer is running)") }
      for p in r.unknown { print("left \(p) (no PID in the name)") }
      print("\(r.removed.count) file(s) removed; no lock files to remove (OFD locks end with their process)")
    }
  }
}
