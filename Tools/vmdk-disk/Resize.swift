// vmdk-disk resize: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Resize: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "resize", abstract: "Grow (or shrink) a disk. (not implemented yet)")

  func run() throws {
    printError("\(toolName) resize: not implemented yet")
    throw ExitCode(1)
  }
}
