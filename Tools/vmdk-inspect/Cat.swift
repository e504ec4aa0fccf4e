// `vmdk-inspect cat` and `vmdk-inspect digest`: the virtual disk's bytes.

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKTransport

extension DigestContext.Algorithm: ExpressibleByArgument {}

struct Cat: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Write the virtual disk's bytes to standard output.")

  @Argument(help: "The image.") var image: String
  @OptionGroup var open: OpenFlags
  @Option(help: "First byte.") var offset: UInt64 = 0
  @Option(help: "Bytes to write (default: to the end).") var length: UInt64?

  func run() throws {
    try runReporting {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      let end = length.map { offset + $0 } ?? disk.capacityBytes
      guard offset <= disk.capacityBytes, end <= disk.capacityBytes, end >= offset else {
        throw VMDKError(
          .outOfRange, "range \(offset)..<\(end) is outside the disk (\(disk.capacityBytes) bytes)", file: image)
      }
      try disk.readSequentially(offset: offset, length: end - offset) { try writeStdout($0) }
    }
  }
}

struct Digest: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Digest of the whole virtual disk; the hex comes first on the line.")

  @Argument(help: "The image.") var image: String
  @OptionGroup var open: OpenFlags
  @Option(help: "sha256, sha1 or md5.") var algorithm: DigestContext.Algorithm = .sha256
  @Flag(help: "Print JSON.") var json = false

  func run() throws {
    try runReporting {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      let hex = try disk.digest(algorithm)
      if json {
        printJSON(
          .object([
            ("algorithm", .string(algorithm.rawValue)), ("digest", .string(hex)),
            ("virtualSize", .uint(disk.capacityBytes)), ("image", .string(image)),
          ]))
      } else {
        print("\(hex)  \(image)")
      }
    }
  }
}
