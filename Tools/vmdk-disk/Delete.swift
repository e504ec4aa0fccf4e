// vmdk-disk delete: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Delete: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "delete", abstract: "Delete a disk and all its files. (not implemented yet)")

  func run() throws {
    printError("\(toolName) delete: not implemented yet")
    throw ExitCode(1)
  }
}
