// vmdk-disk write: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Write: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "write", abstract: "Write bytes into the virtual disk. (not implemented yet)")

  func run() throws {
    printError("\(toolName) write: not implemented yet")
    throw ExitCode(1)
  }
}
