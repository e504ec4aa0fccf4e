// vmdk-disk rebase: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Rebase: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "rebase", abstract: "Give a child a new parent. (not implemented yet)")

  func run() throws {
    printError("\(toolName) rebase: not implemented yet")
    throw ExitCode(1)
  }
}
