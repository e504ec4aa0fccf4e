// vmdk-inspect: read-only facts about a VMDK (or raw) image and its snapshot chain.
// Exit status: 0 success; 1 problems found (check), key not found (metadata) or images differ
// (compare); 2 the image cannot be opened or read (one line on stderr naming the file, the
// offset and the problem).

import ArgumentParser
import ToolSupport
import VMDKBlock

@main
struct VMDKInspect: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vmdk-inspect",
    abstract: "Read-only facts about VMDK images and snapshot chains.",
    discussion: """
      Exit status: 0 success; 1 problems found (check), key not found (metadata) or images
      differ (compare); 2 the image cannot be opened or read.
      """,
    subcommands: [
      Info.self, MapCommand.self, Chain.self, Metadata.self, Check.self, Cat.self, Digest.self, Allocated.self,
      Changed.self, Compare.self, Transports.self, Partitions.self,
    ]
  )
}
