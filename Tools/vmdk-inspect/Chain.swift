// `vmdk-inspect chain` and `vmdk-inspect metadata`.

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKFormat

struct Chain: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "The snapshot chain, top link first.")

  @Argument(help: "The image.") var image: String
  @OptionGroup var open: OpenFlags
  @Flag(help: "Print JSON.") var json = false

  func run() throws {
    try runReporting {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      if json {
        printJSON(.array(disk.links.enumerated().map { linkJSON($0.offset, $0.element) }))
        return
      }
      for (i, l) in disk.links.enumerated() {
        let cid = l.hasDescriptor ? (l.descriptor.cid.map(Descriptor.formatCID) ?? "none") : "-"
        let pcid = l.hasDescriptor ? (l.descriptor.parentCID.map(Descriptor.formatCID) ?? "none") : "-"
        print("\(i)  \(l.path)  \(l.createType)  CID \(cid)  parentCID \(pcid)  \(humanSize(l.capacitySectors * 512))")
      }
    }
  }
}

struct Metadata: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "The disk database (ddb.* keys), or one value.")

  @Argument(help: "The image.") var image: String
  @Argument(help: "A key, with or without the ddb. prefix.") var key: String?
  @OptionGroup var open: OpenFlags
  @Flag(help: "Print JSON.") var json = false

  func run() throws {
    var missing = false
    try runReporting {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      if let key {
        guard let v = disk.metadata(key) else {
          printError("\(toolName): \(image): no key \(key) in the disk database")
          missing = true
          return
        }
        print(json ? JSON.object([(key, .string(v))]).render() : v)
        return
      }
      let db = disk.diskDatabase
      if json {
        printJSON(.object(db.map { ($0.key, JSON.string($0.value)) }))
      } else {
        for (k, v) in db { print("\(k) = \"\(v)\"") }
      }
    }
    if missing { throw ExitCode(1) }
  }
}
