// vmdk-disk snapshot: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Snapshot: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "snapshot", abstract: "Create a sparse child of a disk. (not implemented yet)")

  func run() throws {
    printError("\(toolName) snapshot: not implemented yet")
    throw ExitCode(1)
  }
}
