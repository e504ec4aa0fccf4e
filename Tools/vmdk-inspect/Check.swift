// `vmdk-inspect check`: placeholder replaced below.
import ArgumentParser

struct Check: ParsableCommand {
  @Argument var image: String
  func run() throws { throw ExitCode(2) }
}
