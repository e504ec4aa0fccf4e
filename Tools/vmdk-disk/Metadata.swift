// vmdk-disk metadata: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Metadata: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "metadata", abstract: "Read or change the disk database. (not implemented yet)")

  func run() throws {
    printError("\(toolName) metadata: not implemented yet")
    throw ExitCode(1)
  }
}
