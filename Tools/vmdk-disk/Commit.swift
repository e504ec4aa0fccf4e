// vmdk-disk commit: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Commit: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "commit", abstract: "Merge a child's grains into its parent. (not implemented yet)")

  func run() throws {
    printError("\(toolName) commit: not implemented yet")
    throw ExitCode(1)
  }
}
