// vmdk-disk create: a new, empty disk of any type (vmware-vdiskmanager -c, qemu-img create),
// with vmdk-convert's options. Made through ImageCreator with no writes, then committed
// (temporary names renamed into place).

import ArgumentParser
import Foundation
import ToolSupport
import VMDKBlock
import VMDKTransport

struct Create: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "create", abstract: "Create a new, empty disk.",
    discussion: """
      TYPE is one of: \(DiskType.allCases.map(\.rawValue).joined(separator: ", ")).
      Exit status: 0 done; 1 failed (one line on stderr, nothing left behind).
      """)

  @Argument(help: "The new image.") var image: String
  @Option(name: [.short, .long], help: "Disk type.") var type: DiskType = .monolithicSparse
  @Option(help: "Virtual size (e.g. 10G; rounded up to a whole sector).") var capacity: String
  @Option(help: "Adapter type (ide, buslogic, lsilogic, legacyESX, pvscsi).") var adapterType: AdapterType = .lsilogic
  @Option(help: "Virtual hardware version.") var hardwareVersion: String = "4"
  @Option(help: "Grain size of sparse types (e.g. 64K; a power of two from 8K to 4M).") var grainSize: String = "64K"
  @Flag(help: "Zeroed-grain entries (header version 2) in sparse types.") var zeroedGrains = false
  @Option(help: "Largest extent of the split types (e.g. 2G).") var splitSize: String = "2G"
  @Option(help: "ddb.uuid, e.g. 60 00 C2 9f ...; default: a random one.") var uuid: String?

  func run() throws {
    try runReporting(status: 1) {
      guard let size = parseSize(capacity), size > 0 else {
        throw VMDKError(.invalidArgument, "--capacity \(capacity): a size in bytes such as 10G")
      }
      var o = CreateOptions(type: type, capacityBytes: size)
      o.adapterType = adapterType
      o.hardwareVersion = hardwareVersion
      guard let grain = parseSize(grainSize), grain % 512 == 0 else {
        throw VMDKError(.invalidArgument, "--grain-size \(grainSize): a size in bytes such as 64K")
      }
      o.grainSectors = grain / 512
      guard let split = parseSize(splitSize) else {
        throw VMDKError(.invalidArgument, "--split-size \(splitSize): a size in bytes such as 2G")
      }
      o.splitSizeBytes = split
      o.zeroedGrains = zeroedGrains
      if let uuid {
        guard let u = CreateOptions.parseVMwareUUID(uuid) else {
          throw VMDKError(.invalidArgument, "--uuid \(uuid): 16 bytes in hex, e.g. 60 00 c2 9f 48 66 ae a5-2f 18 ...")
        }
        o.uuid = u
      }
      let writer = try ImageCreator.create(path: image, options: o)
      do {
        try writer.commit()
      } catch {
        writer.abort()
        throw error
      }
    }
  }
}
