// What a new image looks like: its type and the options vmware-vdiskmanager, VixDiskLib_Create
// and `qemu-img create -o` take. Defaults are the most compatible ones (notes §8).

import Foundation
import VMDKFormat
import VMDKTransport

/// Every type we can write, in VMware's createType spelling (plus raw).
public enum DiskType: String, CaseIterable, Sendable {
  case raw
  case monolithicSparse
  case twoGbMaxExtentSparse
  case monolithicFlat
  case twoGbMaxExtentFlat
  case vmfs
  case vmfsThin
  case streamOptimized

  /// Extents hold grain directories and tables (KDMV).
  public var isSparse: Bool { self == .monolithicSparse || self == .twoGbMaxExtentSparse || self == .streamOptimized }
  /// Split into extents of at most `CreateOptions.splitSizeBytes`.
  public var isSplit: Bool { self == .twoGbMaxExtentSparse || self == .twoGbMaxExtentFlat }
}

/// `ddb.adapterType` values.
public enum AdapterType: String, CaseIterable, Sendable {
  case ide, buslogic, lsilogic, legacyESX, pvscsi
}

public struct CreateOptions: Sendable {
  public var type: DiskType
  /// Virtual size in bytes; rounded up to a whole sector.
  public var capacityBytes: UInt64
  public var adapterType: AdapterType = .lsilogic
  /// `ddb.virtualHWVersion`.
  public var hardwareVersion: String = "4"
  /// Computed as VMware does (`DiskGeometry.vmware`) when nil.
  public var geometry: DiskGeometry? = nil
  /// Sectors per grain for sparse types: a power of two from 16 (8 KiB) to 8192 (4 MiB).
  public var grainSectors: UInt64 = 128
  /// Header version 2 with zeroed-grain entries (qemu's `zeroed_grain`); off by default,
  /// because VirtualBox refuses it and libvmdk misreads it.
  public var zeroedGrains = false
  /// Largest extent of the split types; VMware's 2 GiB by default.
  public var splitSizeBytes: UInt64 = 2 << 30
  /// zlib level for streamOptimized grains (1 fastest .. 9 smallest; qemu uses 6).
  public var compressionLevel = 6
  /// Flush every file to stable storage before renaming it into place (the default; see
  /// `OutputFiles.flush`).
  public var flushBeforeRename = true
  /// `ddb.uuid`; a random one when nil.
  public var uuid: UUID? = nil
  /// The CID; random (never ffffffff or fffffffe) when nil.
  public var cid: UInt32? = nil
  /// Further disk database entries, in order (a source's database kept by a conversion).
  /// adapterType, geometry, virtualHWVersion and uuid are set from the fields above and
  /// override entries of the same key here.
  public var diskDatabase: [(key: String, value: String)] = []
  /// Makes the image a snapshot (a child): `parentCID` = `cid` and `parentFileNameHint` =
  /// `hint` (the parent's path, relative to the child's folder). Hosted sparse types only.
  public var parent: (cid: UInt32, hint: String)? = nil

  public init(type: DiskType, capacityBytes: UInt64) {
    self.type = type
    self.capacityBytes = capacityBytes
  }

  public var capacitySectors: UInt64 { (capacityBytes + 511) / 512 }

  /// The geometry to write: the given one or VMware's.
  public var effectiveGeometry: DiskGeometry {
    geometry ?? DiskGeometry.vmware(capacitySectors: capacitySectors, adapterType: adapterType.rawValue)
  }

  /// Checks the options; throws `invalidArgument` (VixDiskLib's 1) naming the bad one.
  public func validate() throws {
    func bad(_ message: String) -> VMDKError { VMDKError(.invalidArgument, message) }
    guard capacityBytes > 0 else { throw bad("capacity must be more than 0 bytes") }
    guard capacitySectors <= Limits.maxCapacitySectors else { throw bad("capacity \(capacityBytes) is too large") }
    // libvmdk refuses grains of 8 sectors, so 16 (8 KiB) is the smallest we write.
    guard grainSectors >= 16, grainSectors <= UInt64(Limits.maxGrainSectors), grainSectors & (grainSectors - 1) == 0
    else {
      throw bad("grain size \(grainSectors) sectors: must be a power of two from 16 to \(Limits.maxGrainSectors)")
    }
    guard (1...9).contains(compressionLevel) else { throw bad("compression level \(compressionLevel): 1 to 9") }
    if type.isSplit {
      guard splitSizeBytes >= 1 << 20, splitSizeBytes % (grainSectors * 512) == 0 else {
        throw bad("split size \(splitSizeBytes): at least 1 MiB and a multiple of the grain size")
      }
    }
    if let parent {
      guard type == .monolithicSparse || type == .twoGbMaxExtentSparse else {
        throw bad("a snapshot (a disk with a parent) must be monolithicSparse or twoGbMaxExtentSparse")
      }
      guard !parent.hint.isEmpty, !parent.hint.contains(where: { $0 == "\"" || $0.isNewline || $0 == "\0" }) else {
        throw bad("parent file name \(parent.hint.debugDescription): must be non-empty, without quotes or line ends")
      }
    }
    if zeroedGrains && !(type == .monolithicSparse || type == .twoGbMaxExtentSparse) {
      throw bad("zeroed-grain entries apply to monolithicSparse and twoGbMaxExtentSparse only")
    }
  }

  /// A new random CID: never ffffffff (no parent) nor fffffffe.
  public static func randomCID() -> UInt32 {
    var cid: UInt32
    repeat { cid = UInt32.random(in: 0...UInt32.max) } while cid >= 0xFFFF_FFFE
    return cid
  }

  /// The descriptor of a new image in VMware's layout (notes §8: version=1, CID, parentCID,
  /// createType, the "# Extent description" and "# The Disk Data Base" / "#DDB" comment
  /// lines libvmdk needs, `ddb.key = "value"` entries).
  public func descriptor(createType: String, extents: [ExtentDescription], cid: UInt32) -> Descriptor {
    var text = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n"
    let parentCID = parent.map { Descriptor.formatCID($0.cid) } ?? "ffffffff"
    text += "CID=\(Descriptor.formatCID(cid))\nparentCID=\(parentCID)\ncreateType=\"\(createType)\"\n"
    // VMware's and qemu's order: the hint right after createType (notes §3.3, §7.2).
    if let parent { text += "parentFileNameHint=\"\(parent.hint)\"\n" }
    text += "\n"
    text += "# Extent description\n"
    for e in extents { text += e.line + "\n" }
    text += "\n# The Disk Data Base\n#DDB\n\n"
    let g = effectiveGeometry
    var entries: [(String, String)] = [
      ("ddb.adapterType", adapterType.rawValue),
      ("ddb.geometry.cylinders", String(g.cylinders)),
      ("ddb.geometry.heads", String(g.heads)),
      ("ddb.geometry.sectors", String(g.sectors)),
      ("ddb.longContentID", (0..<4).map { _ in Descriptor.formatCID(UInt32.random(in: 0...UInt32.max)) }.joined()),
      ("ddb.toolsInstallType", "4"),
      ("ddb.toolsVersion", "2147483647"),
      ("ddb.uuid", Self.vmwareUUID(uuid ?? UUID())),
      ("ddb.virtualHWVersion", hardwareVersion),
    ]
    let fixed = Set([
      "ddb.adapterType", "ddb.geometry.cylinders", "ddb.geometry.heads", "ddb.geometry.sectors",
      "ddb.uuid", "ddb.virtualHWVersion",
    ])
    for (k, v) in diskDatabase where !fixed.contains(k) {
      // The source's content ID describes the source's content: a new one is written.
      if k == "ddb.longContentID" { continue }
      if let i = entries.firstIndex(where: { $0.0 == k }) { entries[i].1 = v } else { entries.append((k, v)) }
    }
    for (k, v) in entries { text += "\(k) = \"\(v)\"\n" }
    // The text was built from valid parts, so it parses.
    return try! Descriptor(parsing: Array(text.utf8))
  }

  /// Parses VMware's spelling ("60 00 c2 9a ...-... ") or a standard UUID string.
  public static func parseVMwareUUID(_ text: String) -> UUID? {
    let hex = text.filter { $0.isHexDigit }
    guard hex.count == 32, text.allSatisfy({ $0.isHexDigit || $0 == " " || $0 == "-" }) else { return nil }
    var bytes = [UInt8](repeating: 0, count: 16)
    var i = hex.startIndex
    for k in 0..<16 {
      let j = hex.index(i, offsetBy: 2)
      bytes[k] = UInt8(hex[i..<j], radix: 16)!
      i = j
    }
    return UUID(
      uuid: (
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8], bytes[9], bytes[10],
        bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]
      ))
  }

  /// VMware's spelling of a UUID: 16 hex bytes in two groups of eight, "60 00 c2 9a ...-...".
  public static func vmwareUUID(_ uuid: UUID) -> String {
    let b = withUnsafeBytes(of: uuid.uuid) { Array($0) }
    let hex = b.map { String(format: "%02x", $0) }
    return hex[0..<8].joined(separator: " ") + "-" + hex[8..<16].joined(separator: " ")
  }
}
