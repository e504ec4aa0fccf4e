// `vmdk-inspect check`: metadata consistency. Exit 0 clean, 1 problems found, 2 not readable.

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Check: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Check the grain directories and tables: redundant copy, entries inside the file, overlaps, leaks.",
    discussion: "Exit status: 0 clean, 1 problems found, 2 the image cannot be read.")

  @Argument(help: "The image.") var image: String
  @OptionGroup var open: OpenFlags
  @Flag(help: "Print JSON.") var json = false

  func run() throws {
    var clean = true
    try runReporting {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      let report = try disk.check()
      clean = report.isClean
      if json {
        printJSON(
          .object([
            ("image", .string(image)),
            ("clean", .bool(report.isClean)),
            ("allocatedGrains", .uint(report.allocatedGrains)),
            ("leakedBytes", .uint(report.leakedBytes)),
            (
              "problems",
              .array(
                report.problems.map {
                  .object([
                    ("kind", .string($0.kind)), ("file", .string($0.file)), ("offset", .opt($0.offset)),
                    ("message", .string($0.message)),
                  ])
                })
            ),
          ]))
        return
      }
      for p in report.problems {
        print("\(p.file): \(p.offset.map { "offset \($0): " } ?? "")\(p.message) [\(p.kind)]")
      }
      if report.leakedBytes > 0 {
        print("\(report.leakedBytes) bytes leaked (in the file but not referenced by any grain table)")
      }
      print(report.isClean ? "No errors were found on the image." : "\(report.problems.count) problem(s) found.")
      print("\(report.allocatedGrains) grains allocated.")
    }
    if !clean { throw ExitCode(1) }
  }
}
