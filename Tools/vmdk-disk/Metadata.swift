// vmdk-disk metadata IMAGE KEY [VALUE | --delete]: a disk database key of the top link's
// descriptor (VixDiskLib_ReadMetadata / WriteMetadata).

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKTransport

struct Metadata: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "metadata", abstract: "Print, set or delete a disk database (ddb) key of the top link.",
    discussion: """
      KEY with or without the ddb. prefix. Without VALUE, prints the top link's value (exit 1 \
      when it has none; vmdk-inspect metadata reads the whole chain). The descriptor is \
      rewritten in place (embedded) or through a temporary file renamed over it; the CID \
      does not change, so snapshots stay valid.
      Exit status: 0 done; 1 failed or key not found (one line on stderr).
      """)

  @Argument(help: "The image.") var image: String
  @Argument(help: "The key, e.g. ddb.adapterType or adapterType.") var key: String
  @Argument(help: "The new value.") var value: String?
  @Flag(help: "Delete the key.") var delete = false
  @OptionGroup(title: "Opening the image") var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      if delete && value != nil { throw VMDKError(.invalidArgument, "a VALUE and --delete together") }
      if delete {
        guard try Disk.setMetadata(path: image, key: key, value: nil, options: open.resolvedOptions()) else {
          throw VMDKError(.invalidArgument, "the key \(key) is not in the descriptor", file: image)
        }
      } else if let value {
        try Disk.setMetadata(path: image, key: key, value: value, options: open.resolvedOptions())
      } else {
        guard let v = try Disk.topMetadata(path: image, key: key, options: open.resolvedOptions()) else {
          throw VMDKError(.invalidArgument, "the key \(key) is not in the descriptor", file: image)
        }
        print(v)
      }
    }
  }
}
