// `vmdk-inspect map`: which link holds each range, from the grain tables; JSON in qemu-img
// map's shape.

import ArgumentParser
import ToolSupport
import VMDKBlock

struct MapCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "map",
    abstract: "Ranges of the virtual disk with their status (allocated, zero, unallocated) and link.")

  @Argument(help: "The image.") var image: String
  @OptionGroup var open: OpenFlags
  @Flag(help: "Print JSON in qemu-img map --output=json's shape.") var json = false
  @Option(help: "First byte to map.") var offset: UInt64 = 0
  @Option(help: "Bytes to map (default: to the end).") var length: UInt64?

  func run() throws {
    try runReporting {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      if json {
        print("[", terminator: "")
        var first = true
        try disk.blockStatus(offset: offset, length: length) { s in
          var fields =
            "{ \"start\": \(s.start), \"length\": \(s.length), \"depth\": \(s.depth), \"present\": \(s.present), \"zero\": \(s.zero), \"data\": \(s.data)"
          if s.compressed { fields += ", \"compressed\": true" }
          if let o = s.offset { fields += ", \"offset\": \(o)" }
          fields += "}"
          print((first ? "" : ",\n") + fields, terminator: "")
          first = false
        }
        print("]")
        return
      }
      print(
        "start".padding(18) + "length".padding(18) + "depth  " + "status".padding(16) + "offset".padding(16) + "file")
      try disk.blockStatus(offset: offset, length: length) { s in
        print(
          "0x\(String(s.start, radix: 16))".padding(18) + "0x\(String(s.length, radix: 16))".padding(18)
            + "\(s.depth)".padding(7) + (s.kind.rawValue + (s.compressed ? "(z)" : "")).padding(16)
            + (s.offset.map { "0x\(String($0, radix: 16))" } ?? "-").padding(16) + (s.file ?? "-"))
      }
    }
  }
}

extension String {
  func padding(_ n: Int) -> String { count >= n ? self + " " : self + String(repeating: " ", count: n - count) }
}
