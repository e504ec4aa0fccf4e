// `vmdk-inspect transports`: the transports this build has, how to name a disk with each, and
// whether the configuration enables it.

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKTransport

struct Transports: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "List the transports (file, nbd, nbds, http, https), their location forms and whether enabled.")

  @OptionGroup var open: OpenFlags
  @Flag(help: "Print JSON.") var json = false

  func run() throws {
    try runReporting {
      let enabled = try open.resolvedOptions().transports
      if json {
        printJSON(
          .array(
            TransportDescription.all.map { t in
              .object([
                ("name", .string(t.name)), ("form", .string(t.form)), ("writable", .bool(t.writable)),
                ("enabled", .bool(enabled.contains(t.transport))), ("summary", .string(t.summary)),
              ])
            }))
        return
      }
      for t in TransportDescription.all {
        let state = enabled.contains(t.transport) ? "enabled" : "disabled"
        let access = t.writable ? "read-write" : "read-only"
        print("\(t.name)\t\(state)\t\(access)\t\(t.form)")
        print("\t\(t.summary)")
      }
    }
  }
}
