// vmdk-disk snapshot PARENT CHILD: a new, empty sparse child on top of PARENT
// (VixDiskLib_CreateChild, qemu-img create -b).

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Snapshot: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "snapshot", abstract: "Create a snapshot (a sparse child) on top of a disk.",
    discussion: """
      The child is monolithicSparse (twoGbMaxExtentSparse with --split), has the parent's \
      capacity and disk database, names the parent relative to its own folder and carries the \
      parent's CID as parentCID. An existing CHILD is refused. From then on, writes into PARENT \
      are refused until the snapshot is committed or deleted.
      Exit status: 0 done; 1 failed (one line on stderr, nothing left behind).
      """)

  @Argument(help: "The disk to snapshot (its chain must open).") var parent: String
  @Argument(help: "The new child.") var child: String
  @Flag(help: "Make a twoGbMaxExtentSparse child (a descriptor and 2 GiB extents).") var split = false
  @OptionGroup(title: "Opening the parent") var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      try Disk.createSnapshot(of: parent, at: child, split: split, options: open.resolvedOptions())
    }
  }
}
