// vmdk-disk track: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Track: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "track", abstract: "Turn change tracking on or off. (not implemented yet)")

  func run() throws {
    printError("\(toolName) track: not implemented yet")
    throw ExitCode(1)
  }
}
