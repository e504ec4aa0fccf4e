// `vmdk-inspect info`: the facts about an image and its chain.

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKFormat

struct Info: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Create type, capacity, geometry, adapter, CIDs, extents, chain and sparse header.")

  @Argument(help: "The image (descriptor, sparse file or raw image).") var image: String
  @OptionGroup var open: OpenFlags
  @Flag(help: "Print JSON.") var json = false

  func run() throws {
    try runReporting {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      let top = disk.top
      let d = top.descriptor
      let allocated = try disk.allocatedHostBytes()
      let geometry = disk.geometry
      let tracking = Result { try disk.changeTrackingStatus() }
      if json {
        var obj: [(String, JSON)] = [
          ("image", .string(image)),
          ("format", .string(top.kind.rawValue)),
          ("createType", .string(top.createType)),
          ("virtualSize", .uint(disk.capacityBytes)),
          ("capacitySectors", .uint(disk.capacitySectors)),
          ("allocatedBytes", .opt(allocated)),
          ("transport", .string(disk.transport.rawValue)),
          ("descriptor", .string(top.descriptorLocation.rawValue)),
        ]
        obj.append(("version", d.version.map { .int(Int64($0)) } ?? .null))
        obj.append(("encoding", .opt(d.encoding)))
        obj.append(("cid", .opt(top.hasDescriptor ? d.cid.map(Descriptor.formatCID) : nil)))
        obj.append(("parentCID", .opt(top.hasDescriptor ? d.parentCID.map(Descriptor.formatCID) : nil)))
        obj.append(("parentFileNameHint", .opt(d.parentFileNameHint)))
        obj.append(("adapterType", .opt(disk.metadata("adapterType"))))
        obj.append(("hardwareVersion", .opt(disk.metadata("virtualHWVersion"))))
        obj.append(("uuid", .opt(disk.metadata("uuid"))))
        obj.append(("longContentID", .opt(disk.metadata("longContentID"))))
        obj.append(
          (
            "geometry",
            geometry.map {
              .object([("cylinders", .uint($0.cylinders)), ("heads", .uint($0.heads)), ("sectors", .uint($0.sectors))])
            } ?? .null
          ))
        obj.append(("changeTracking", trackingJSON(tracking)))
        obj.append(("extents", .array(top.extents.map(extentJSON))))
        obj.append(("chain", .array(disk.links.enumerated().map { linkJSON($0.offset, $0.element) })))
        obj.append(("sparseHeader", top.sparseHeader.map(headerJSON) ?? .null))
        printJSON(.object(obj))
        return
      }
      print("image: \(image)")
      print("file format: \(top.kind.rawValue)")
      print("create type: \(top.createType)")
      print(
        "virtual size: \(humanSize(disk.capacityBytes)) (\(disk.capacityBytes) bytes, \(disk.capacitySectors) sectors)")
      if let allocated { print("allocated on host: \(humanSize(allocated)) (\(allocated) bytes)") }
      print("transport: \(disk.transport.rawValue)")
      if top.hasDescriptor {
        print(
          "descriptor: \(top.descriptorLocation.rawValue), version \(d.version.map(String.init) ?? "?")\(d.encoding.map { ", encoding \($0)" } ?? "")"
        )
        print("CID: \(d.cid.map(Descriptor.formatCID) ?? "none")")
        print("parentCID: \(d.parentCID.map(Descriptor.formatCID) ?? "none")")
        if let p = d.parentFileNameHint { print("parent file name hint: \(p)") }
      }
      if let a = disk.metadata("adapterType") { print("adapter type: \(a)") }
      if let g = geometry { print("geometry: \(g.cylinders) cylinders, \(g.heads) heads, \(g.sectors) sectors") }
      if let h = disk.metadata("virtualHWVersion") { print("hardware version: \(h)") }
      if let u = disk.metadata("uuid") { print("uuid: \(u)") }
      print("change tracking: \(trackingLine(tracking))")
      print("extents:")
      for (i, e) in top.extents.enumerated() {
        print("  \(i + 1). \(e.line.line)  [\(e.format.rawValue)\(e.fileSize.map { ", file \($0) bytes" } ?? "")]")
      }
      print("chain (\(disk.links.count) link\(disk.links.count == 1 ? "" : "s")):")
      for (i, l) in disk.links.enumerated() {
        print(
          "  \(i). \(l.path)  \(l.createType)\(l.hasDescriptor ? ", CID \(l.descriptor.cid.map(Descriptor.formatCID) ?? "none")" : "")"
        )
      }
      if let h = top.sparseHeader {
        print("sparse header:")
        for (k, v) in headerFields(h) { print("  \(k): \(v)") }
      }
    }
  }
}

/// "on, change ID: U/N", "off", or why it cannot be trusted or read.
func trackingLine(_ r: Result<ChangeTrackingStatus, any Error>) -> String {
  switch r {
  case .failure(let e): return "unknown (\(e))"
  case .success(let s) where !s.enabled: return "off"
  case .success(let s):
    if let id = s.changeID { return "on, change ID: \(id)" }
    return "on, needs a restart (\(s.problem ?? "?")); older change IDs answer \"tracking was reset\""
  }
}

func trackingJSON(_ r: Result<ChangeTrackingStatus, any Error>) -> JSON {
  switch r {
  case .failure(let e): return .object([("enabled", .null), ("error", .string("\(e)"))])
  case .success(let s):
    return .object([
      ("enabled", .bool(s.enabled)), ("changeID", .opt(s.changeID)), ("problem", .opt(s.problem)),
      ("blockSize", .opt(s.blockBytes)), ("file", .string(s.sidecarPath)),
    ])
  }
}

func headerFields(_ h: SparseExtentHeader) -> [(String, String)] {
  [
    ("version", "\(h.version)"),
    ("flags", "0x\(String(h.flags.rawValue, radix: 16))"),
    ("capacity", "\(h.capacitySectors) sectors"),
    ("grain size", "\(h.grainSectors) sectors"),
    ("descriptor offset", "\(h.descriptorOffsetSectors)"),
    ("descriptor size", "\(h.descriptorSizeSectors) sectors"),
    ("grain table entries", "\(h.numGTEsPerGT)"),
    ("redundant grain directory", "\(h.rgdOffsetSectors)"),
    ("grain directory", "\(h.gdOffsetSectors)"),
    ("overhead", "\(h.overheadSectors) sectors"),
    ("unclean shutdown", "\(h.uncleanShutdown)"),
    (
      "compression",
      h.compressAlgorithm == 1 ? "deflate" : (h.compressAlgorithm == 0 ? "none" : "\(h.compressAlgorithm)")
    ),
  ]
}

func headerJSON(_ h: SparseExtentHeader) -> JSON {
  .object([
    ("version", .uint(UInt64(h.version))),
    ("flags", .uint(UInt64(h.flags.rawValue))),
    ("capacity", .uint(h.capacitySectors)),
    ("grainSize", .uint(h.grainSectors)),
    ("descriptorOffset", .uint(h.descriptorOffsetSectors)),
    ("descriptorSize", .uint(h.descriptorSizeSectors)),
    ("numGTEsPerGT", .uint(UInt64(h.numGTEsPerGT))),
    ("rgdOffset", .uint(h.rgdOffsetSectors)),
    ("gdOffset", .uint(h.gdOffsetSectors)),
    ("overHead", .uint(h.overheadSectors)),
    ("uncleanShutdown", .bool(h.uncleanShutdown)),
    ("compressAlgorithm", .uint(UInt64(h.compressAlgorithm))),
    ("zeroedGrainEntries", .bool(h.hasZeroedGrainEntries)),
    ("markers", .bool(h.hasMarkers)),
  ])
}

func extentJSON(_ e: ExtentInfo) -> JSON {
  .object([
    ("file", .opt(e.line.fileName)),
    ("path", .opt(e.path)),
    ("type", .string(e.line.kind.rawValue)),
    ("access", .string(e.line.access.rawValue)),
    ("sectors", .uint(e.line.sectors)),
    ("offset", .uint(e.line.offsetSectors)),
    ("start", .uint(e.startSector)),
    ("format", .string(e.format.rawValue)),
    ("fileSize", .opt(e.fileSize)),
  ])
}

func linkJSON(_ depth: Int, _ l: DiskLink) -> JSON {
  .object([
    ("depth", .int(Int64(depth))),
    ("path", .string(l.path)),
    ("createType", .string(l.createType)),
    ("cid", .opt(l.hasDescriptor ? l.descriptor.cid.map(Descriptor.formatCID) : nil)),
    ("parentCID", .opt(l.hasDescriptor ? l.descriptor.parentCID.map(Descriptor.formatCID) : nil)),
    ("parentFileNameHint", .opt(l.descriptor.parentFileNameHint)),
    ("virtualSize", .uint(l.capacitySectors * 512)),
  ])
}
