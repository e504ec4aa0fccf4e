// vmdk-disk: changes disks in place (vmware-vdiskmanager's and qemu-img's jobs, in qemu-img's
// words). Each subcommand lives in its own file.

import ArgumentParser
import Foundation

@main
struct VMDKDisk: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vmdk-disk",
    abstract: "Create, snapshot, commit, rebase, resize, compact, repair and write VMDK disks in place.",
    discussion: "Exit status: 0 done; 1 failed (one line on stderr; the disk is left as it was).",
    subcommands: [
      Create.self, Snapshot.self, Commit.self, Rebase.self, Resize.self, Compact.self, Defragment.self,
      Repair.self, Metadata.self, Write.self, Rename.self, Delete.self, Cleanup.self, Track.self,
    ])

  static func main() {
    // Past a file-size limit, write() must fail with EFBIG (a "disk full" error that removes
    // the temporary files) rather than kill the process with SIGXFSZ.
    signal(SIGXFSZ, SIG_IGN)
    Self.main(nil)
  }
}
