// `partitions`: the partition table and the file system found in each partition. One command
// shared by `vmdk-files partitions` and `vmdk-inspect partitions`, so that both print the same.

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKFiles

public struct PartitionsCommand: ParsableCommand {
  public static let configuration = CommandConfiguration(
    commandName: "partitions",
    abstract: "List the partitions: table type, index, start, size, type, name, file system, label, UUID.")

  @Argument(help: "The image (any location).") var image: String
  @OptionGroup var open: OpenFlags
  @Flag(help: "Print JSON.") var json = false

  public init() {}

  public func run() throws {
    try runReporting {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      let layout = try DiskLayout(disk: disk, name: image)
      let t = layout.table
      if json {
        let parts: [JSON] = layout.entries.map { e in
          let p = e.partition
          var kv: [(String, JSON)] = [
            ("index", .int(Int64(p.index))), ("start", .uint(p.startBytes)), ("size", .uint(p.sizeBytes)),
            ("type", .string(p.type)), ("typeName", .opt(p.typeName)), ("name", .opt(p.name)), ("guid", .opt(p.guid)),
            ("logical", .bool(p.isLogical)), ("bootable", .bool(p.isBootable)),
            ("fileSystem", .opt(e.fileSystem?.kind)), ("label", .opt(e.fileSystem?.label)),
            ("uuid", .opt(e.fileSystem?.uuid)),
          ]
          if let err = e.error { kv.append(("error", .string("\(err)"))) }
          return .object(kv)
        }
        printJSON(
          .object([
            ("image", .string(image)), ("table", .string(t.scheme.rawValue)),
            ("sectorSize", .int(Int64(t.sectorSize))), ("diskID", .opt(t.diskID)),
            ("partitions", .array(parts)), ("warnings", .array(t.warnings.map { .string($0) })),
          ]))
        return
      }
      for w in t.warnings { printError("\(toolName): warning: \(w)") }
      print("table: \(t.scheme.rawValue)" + (t.diskID.map { "  id: \($0)" } ?? ""))
      print("index  start         size          type        file system  label / name")
      for e in layout.entries {
        let p = e.partition
        let fs = e.fileSystem?.kind ?? (e.error != nil ? "broken" : "-")
        let what = [e.fileSystem?.label, p.name, p.typeName].compactMap { $0 }.joined(separator: "  ")
        func pad(_ s: String, _ n: Int) -> String {
          s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
        }
        print(
          pad(String(p.index), 7) + pad(String(p.startBytes), 14) + pad(humanSize(p.sizeBytes), 14)
            + pad(p.type.count > 10 ? String(p.type.prefix(8)) + "…" : p.type, 12) + pad(fs, 13) + what)
        if let err = e.error { printError("\(toolName): partition \(p.index): \(err)") }
      }
    }
  }
}
