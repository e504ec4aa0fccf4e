// vmdk-disk rename: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Rename: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "rename", abstract: "Rename a disk and all its files. (not implemented yet)")

  func run() throws {
    printError("\(toolName) rename: not implemented yet")
    throw ExitCode(1)
  }
}
