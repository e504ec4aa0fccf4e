// vmdk-disk commit CHILD: merge a snapshot into its parent (qemu-img commit).

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Commit: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "commit", abstract: "Merge a child's grains into its parent.",
    discussion: """
      Every range the child holds is written into its parent, so that the parent alone \
      reads what the chain read. As with qemu-img commit, the child is left as it is; the \
      parent gets a new CID when anything was written, so the child no longer opens on top \
      of it (CID mismatch) and can be deleted. Refused when other snapshots sit on the parent.
      Exit status: 0 done; 1 failed (one line on stderr).
      """)

  @Argument(help: "The snapshot to commit.") var child: String
  @Flag(name: [.short, .long], help: "Print nothing.") var quiet = false
  @OptionGroup(title: "Opening the chain") var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      let result = try Disk.commit(child, options: open.resolvedOptions())
      if !quiet {
        print(
          "committed \(humanSize(result.dataBytes)) of data and \(humanSize(result.zeroBytes)) of zeros into \(result.parentPath)"
        )
      }
    }
  }
}
