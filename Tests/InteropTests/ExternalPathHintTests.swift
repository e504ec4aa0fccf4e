// A tool that refuses a path leaving the disk's folder names the flag that allows it
// (issue 10.7): vmdk-inspect, vmdk-convert and vmdk-disk alike, and the flag then opens it.

import Foundation
import Testing

@Suite struct ExternalPathHintTests {
  /// disk/d.vmdk names ../x-flat.vmdk: one folder up, outside the descriptor's folder.
  func makeEscapingDescriptor(_ folder: String) throws -> String {
    try FileManager.default.createDirectory(atPath: "\(folder)/disk", withIntermediateDirectories: true)
    try Data(count: 1 << 20).write(to: URL(fileURLWithPath: "\(folder)/x-flat.vmdk"))
    let text = """
      # Disk DescriptorFile
      version=1
      CID=fffffffe
      parentCID=ffffffff
      createType="monolithicFlat"

      RW 2048 FLAT "../x-flat.vmdk" 0

      ddb.adapterType = "ide"

      """
    let path = "\(folder)/disk/d.vmdk"
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    return path
  }

  @Test(arguments: [
    ("vmdk-inspect", ["info"]), ("vmdk-inspect", ["digest"]), ("vmdk-convert", []), ("vmdk-disk", ["compact"]),
  ])
  func refusalNamesTheFlag(tool: String, command: [String]) throws {
    try withTemporaryFolder { folder in
      let image = try makeEscapingDescriptor(folder)
      let extra = tool == "vmdk-convert" ? ["\(folder)/out.vmdk", "-q"] : []
      let r = try runProcess(try builtToolPath(tool), command + [image] + extra)
      #expect(r.status != 0, "\(tool) \(command): \(r.output)")
      #expect(r.errorOutput.contains("--allow-external-paths"), "\(tool) \(command): \(r.errorOutput)")
      #expect(r.errorOutput.split(separator: "\n").count == 1, "one line: \(r.errorOutput)")
      if tool == "vmdk-inspect" {
        // The flag the message names opens the disk.
        let ok = try runProcess(try builtToolPath(tool), command + ["--allow-external-paths", image])
        #expect(ok.status == 0, "\(ok.errorOutput)")
      }
    }
  }
}
