// `vmdk-inspect changed`: what changed, either since an ancestor link of the chain (the
// ranges the links above it hold) or since a change ID (vSphere's QueryChangedDiskAreas,
// through the library's change tracking). Both print vSphere's DiskChangeInfo shape.

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Changed: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Ranges changed since an ancestor link (--base) or a change ID (--since).",
    discussion: """
      --base ANCESTOR: the ranges written in the links above ANCESTOR, a link of IMAGE's chain,
      from the grain tables. --since CHANGE_ID: change tracking's answer from --start-offset to
      the end of the disk ('*': every allocated area). JSON has vSphere's DiskChangeInfo shape:
      startOffset, length, changedArea [{start, length}].
      """)

  @Argument(help: "The image (the top of the chain).") var image: String
  @Option(help: "An ancestor link of IMAGE: the ranges written above it.") var base: String?
  @Option(help: "A change ID from an earlier backup, or '*' for every allocated area.") var since: String?
  @Option(help: "With --since: the first byte asked about.") var startOffset: UInt64?
  @OptionGroup var open: OpenFlags
  @Flag(help: "Print JSON: startOffset, length, changedArea [{start, length}].") var json = false

  func validate() throws {
    switch (base, since) {
    case (nil, nil): throw ValidationError("give --base ANCESTOR or --since CHANGE_ID")
    case (.some, .some): throw ValidationError("--base and --since cannot be used together")
    default: break
    }
    if base != nil && startOffset != nil { throw ValidationError("--start-offset goes with --since only") }
  }

  func run() throws {
    try runReporting {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      let info: DiskChangeInfo
      if let base {
        let areas = try disk.changedBlocks(sinceAncestor: base)
        info = DiskChangeInfo(startOffset: 0, length: disk.capacityBytes, changedArea: areas)
      } else {
        info = try disk.queryChangedDiskAreas(since: since ?? "*", startOffset: startOffset ?? 0)
      }
      let total = info.changedArea.reduce(UInt64(0)) { $0 + $1.length }
      if json {
        printJSON(
          .object([
            ("startOffset", .uint(info.startOffset)),
            ("length", .uint(info.length)),
            (
              "changedArea",
              .array(info.changedArea.map { .object([("start", .uint($0.start)), ("length", .uint($0.length))]) })
            ),
          ]))
        return
      }
      printRanges(info.changedArea)
      print(
        "changed: \(total) bytes (\(humanSize(total))) in \(info.changedArea.count) range(s) of [\(info.startOffset), \(info.startOffset + info.length))"
      )
    }
  }
}
