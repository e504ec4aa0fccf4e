// vmdk-disk cleanup: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Cleanup: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cleanup", abstract: "Remove temporary files and locks left by dead processes. (not implemented yet)")

  func run() throws {
    printError("\(toolName) cleanup: not implemented yet")
    throw ExitCode(1)
  }
}
