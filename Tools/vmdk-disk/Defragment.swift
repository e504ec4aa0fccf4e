// vmdk-disk defragment: not written yet (placeholder so that the tool builds; see issue 4).

import ArgumentParser
import ToolSupport

struct Defragment: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "defragment", abstract: "Put grains in disk order. (not implemented yet)")

  func run() throws {
    printError("\(toolName) defragment: not implemented yet")
    throw ExitCode(1)
  }
}
