// vmdk-disk rebase CHILD --parent NEW: give a snapshot another parent (qemu-img rebase).

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKTransport

struct Rebase: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "rebase", abstract: "Give a snapshot another parent, or none.",
    discussion: """
      Safe (default): every range where the old chain reads differently from the new parent \
      is copied into the child first, so the child reads the same afterwards; then its \
      descriptor names NEW (relative to the child's folder) with NEW's CID. --unsafe only \
      relinks (the capacities must be equal). --parent '' or --no-parent: no parent (safe: \
      everything the old parent provided is copied into the child). NEW is a path as usual \
      (relative to the current folder), not relative to the child as in qemu-img rebase -b.
      Exit status: 0 done; 1 failed (one line on stderr).
      """)

  @Argument(help: "The snapshot to rebase.") var child: String
  @Option(name: [.short, .long], help: "The new parent ('' for none).") var parent: String?
  @Flag(help: "Make the child a disk of its own.") var noParent = false
  @Flag(name: [.short, .long], help: "Only relink; do not copy (the content may change).") var unsafe = false
  @OptionGroup(title: "Opening the chains") var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      let newParent: String?
      switch (parent, noParent) {
      case (nil, false): throw VMDKError(.invalidArgument, "give --parent NEW, or --no-parent")
      case (let p?, true) where !p.isEmpty:
        throw VMDKError(.invalidArgument, "--parent and --no-parent together")
      case (let p?, false): newParent = p.isEmpty ? nil : p
      default: newParent = nil
      }
      try Disk.rebase(child, onto: newParent, unsafe: unsafe, options: open.resolvedOptions())
    }
  }
}
