// vmdk-disk create: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Create: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "create", abstract: "Create a new disk. (not implemented yet)")

  func run() throws {
    printError("\(toolName) create: not implemented yet")
    throw ExitCode(1)
  }
}
