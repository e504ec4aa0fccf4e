// vmdk-disk compact: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Compact: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "compact", abstract: "Drop all-zero grains and unreferenced space. (not implemented yet)")

  func run() throws {
    printError("\(toolName) compact: not implemented yet")
    throw ExitCode(1)
  }
}
