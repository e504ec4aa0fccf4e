// vmdk-disk repair: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Repair: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "repair", abstract: "Repair a damaged sparse disk. (not implemented yet)")

  func run() throws {
    printError("\(toolName) repair: not implemented yet")
    throw ExitCode(1)
  }
}
