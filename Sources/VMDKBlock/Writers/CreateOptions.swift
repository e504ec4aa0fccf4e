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
  /// `ddb.adapterType`. Setting it (after `init`) overrides a kept database's value.
  public var adapterType: AdapterType = .lsilogic { didSet { overridden.insert(.adapterType) } }
  /// `ddb.virtualHWVersion`: digits only. Setting it overrides a kept database's value.
  public var hardwareVersion: String = "4" { didSet { overridden.insert(.hardwareVersion) } }
  /// Computed as VMware does (`DiskGeometry.vmware`) when nil. Setting it overrides a kept
  /// database's value.
  public var geometry: DiskGeometry? = nil { didSet { overridden.insert(.geometry) } }
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
  /// `ddb.uuid`; a random one when nil. Setting it overrides a kept database's value.
  public var uuid: UUID? = nil { didSet { overridden.insert(.uuid) } }
  /// The CID; random (never ffffffff or fffffffe) when nil.
  public var cid: UInt32? = nil
  /// Further disk database entries, in order, keys with their `ddb.` prefix. For a new disk
  /// (`init(type:capacityBytes:)`), adapterType, geometry, virtualHWVersion and uuid come from
  /// the fields above and override entries of the same key here. For a kept database
  /// (`init(type:inheriting:for:)`) these entries are the source's and win, except where a
  /// field was set after `init`.
  public var diskDatabase: [(key: String, value: String)] = []
  /// Whether `diskDatabase` is a source's database kept whole (`init(inheriting:)`): then its
  /// order and values are written as they are, and only the keys every reader needs are added
  /// when missing (adapter type, geometry, hardware version, a new longContentID).
  public private(set) var keepsDatabase = false
  /// The fields set after `init`: they override a kept database.
  private var overridden: Set<Field> = []
  private enum Field: Hashable, Sendable { case adapterType, hardwareVersion, geometry, uuid }
  /// Makes the image a snapshot (a child): `parentCID` = `cid` and `parentFileNameHint` =
  /// `hint` (the parent's path, relative to the child's folder). Hosted sparse types only.
  public var parent: (cid: UInt32, hint: String)? = nil

  public init(type: DiskType, capacityBytes: UInt64) {
    self.type = type
    self.capacityBytes = capacityBytes
  }

  /// What a new image takes from an existing disk.
  public enum Inheritance: Sendable {
    /// A copy of the disk's content (vmdk-convert, a full clone): the source's whole disk
    /// database, its uuid included, except what cannot describe the copy: `ddb.longContentID`
    /// (always new), the parent's identity (`ddb.uuid.parent*`: a copy has no parent) and
    /// change tracking (`ddb.changeTrackPath`, `ddb.ctkEnabled`...: the tracking file stays
    /// with the source).
    case copy
    /// A snapshot on top of the disk: its database, except its identity (`ddb.uuid*`, a new
    /// uuid is written), `ddb.longContentID`, `ddb.deletable` and change tracking.
    case snapshot
  }

  /// The options of a new image of `type` made from `disk` (the one policy of convert,
  /// snapshot and clone): the disk's capacity and disk database (VMware's reading of a chain:
  /// each key's value from the lowest link that has it), in its order, unknown keys included,
  /// minus what `use` says must change. The fields (adapterType, geometry, hardwareVersion,
  /// uuid) show the source's values where they parse; setting one afterwards overrides the
  /// kept value. Setting `adapterType` without `geometry` writes VMware's geometry for the
  /// new adapter.
  public init(type: DiskType, inheriting disk: Disk, for use: Inheritance = .copy) {
    self.type = type
    self.capacityBytes = disk.capacityBytes
    let ddb = disk.diskDatabase.map { (key: "ddb." + $0.key, value: $0.value) }
    func value(_ key: String) -> String? { ddb.last { $0.key.lowercased() == key.lowercased() }?.value }
    if let a = value("ddb.adapterType").flatMap(AdapterType.init(rawValue:)) { adapterType = a }
    if let g = disk.geometry, g.heads > 0, g.sectors > 0, g.heads <= UInt64(UInt32.max),
      g.sectors <= UInt64(UInt32.max)
    {
      geometry = DiskGeometry(cylinders: g.cylinders, heads: UInt32(g.heads), sectors: UInt32(g.sectors))
    }
    if let v = value("ddb.virtualHWVersion") { hardwareVersion = v }
    switch use {
    case .copy:
      uuid = value("ddb.uuid").flatMap(Self.parseVMwareUUID)
      diskDatabase = ddb.filter { entry in
        let k = entry.key.lowercased()
        return !k.hasPrefix("ddb.uuid.parent") && !Self.isChangeTracking(k)
      }
    case .snapshot:
      diskDatabase = ddb.filter { entry in
        let k = entry.key.lowercased()
        return k != "ddb.uuid" && !k.hasPrefix("ddb.uuid.") && k != "ddb.deletable" && !Self.isChangeTracking(k)
      }
      // The child is a disk of its own: a new ddb.uuid.
      overridden.insert(.uuid)
    }
    keepsDatabase = !diskDatabase.isEmpty
  }

  /// Change tracking's keys (`ddb.changeTrackPath`, `ddb.ctkEnabled`...).
  private static func isChangeTracking(_ lowercasedKey: String) -> Bool {
    lowercasedKey.contains("changetrack") || lowercasedKey.hasPrefix("ddb.ctk")
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
    // Written into the descriptor as `ddb.virtualHWVersion = "N"`; a kept one is the source's.
    let keptVersion = keepsDatabase && !overridden.contains(.hardwareVersion)
    let digits = hardwareVersion.allSatisfy { $0.isASCII && $0.isNumber }
    guard keptVersion || (!hardwareVersion.isEmpty && hardwareVersion.count <= 10 && digits) else {
      throw bad("hardware version \(hardwareVersion.prefix(40).debugDescription): a number such as 4, 7 or 11")
    }
    for entry in diskDatabase { try Self.checkEntry(entry.key, entry.value) }
  }

  /// A disk database entry we can write so that it reads back the same: a `ddb.` key of
  /// letters, digits, `.`, `_` and `-`; a value without line ends or control characters (a
  /// quote inside reads back as written; `descriptor` checks that it does).
  static func checkEntry(_ key: String, _ value: String) throws {
    guard key.lowercased().hasPrefix("ddb."), key.count > 4,
      key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
    else {
      throw VMDKError(
        .invalidArgument, "disk database key \(key.prefix(80).debugDescription): ddb. and letters, digits, . _ -")
    }
    guard !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
      throw VMDKError(
        .invalidArgument,
        "disk database value of \(key): \(value.prefix(80).debugDescription) holds a line end or a control character"
      )
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
  /// lines libvmdk needs, `ddb.key = "value"` entries). Throws `invalidArgument` when a value
  /// cannot be written (a line end, a quote) or the text passes the readers' size cap.
  public func descriptor(createType: String, extents: [ExtentDescription], cid: UInt32) throws -> Descriptor {
    try validateHeaderValues()
    var text = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n"
    let parentCID = parent.map { Descriptor.formatCID($0.cid) } ?? "ffffffff"
    text += "CID=\(Descriptor.formatCID(cid))\nparentCID=\(parentCID)\ncreateType=\"\(createType)\"\n"
    // VMware's and qemu's order: the hint right after createType (notes §3.3, §7.2).
    if let parent { text += "parentFileNameHint=\"\(parent.hint)\"\n" }
    text += "\n"
    text += "# Extent description\n"
    for e in extents { text += e.line + "\n" }
    text += "\n# The Disk Data Base\n#DDB\n\n"
    let entries = databaseEntries()
    for (k, v) in entries {
      try Self.checkEntry(k, v)
      text += "\(k) = \"\(v)\"\n"
    }
    let bytes = Array(text.utf8)
    guard UInt64(bytes.count) <= Limits.maxDescriptorBytes else {
      throw VMDKError(
        .invalidArgument,
        "the new descriptor would be \(bytes.count) bytes; readers take at most \(Limits.maxDescriptorBytes) (a disk database of \(entries.count) entries)"
      )
    }
    let parsed: Descriptor
    do {
      parsed = try Descriptor(parsing: bytes)
    } catch {
      throw VMDKError(.invalidArgument, "the new descriptor does not parse: \(error)")
    }
    // What was meant is what a reader finds.
    guard parsed.diskDatabase.map({ [$0.key, $0.value] }) == entries.map({ [$0.key, $0.value] }) else {
      throw VMDKError(.invalidArgument, "the new descriptor's disk database does not read back as written")
    }
    return parsed
  }

  /// The header values come from arguments and source files: none may end a line or a quote.
  private func validateHeaderValues() throws {
    if let parent,
      parent.hint.isEmpty
        || parent.hint.unicodeScalars.contains(where: { $0 == "\"" || $0.properties.generalCategory == .control })
    {
      throw VMDKError(
        .invalidArgument,
        "parent file name \(parent.hint.prefix(80).debugDescription): must be non-empty, without quotes or control characters"
      )
    }
  }

  /// The disk database to write, in order. A new disk: VMware's keys in VMware's order, then
  /// `diskDatabase` (which overrides those that are not fields). A kept database: its
  /// entries as they are, the overridden fields set in place, a new longContentID where the
  /// old one was, and the keys readers need appended when missing.
  func databaseEntries() -> [(key: String, value: String)] {
    let longContentID = (0..<4).map { _ in Descriptor.formatCID(UInt32.random(in: 0...UInt32.max)) }.joined()
    let g = effectiveGeometry
    let geometryEntries = [
      ("ddb.geometry.cylinders", String(g.cylinders)), ("ddb.geometry.heads", String(g.heads)),
      ("ddb.geometry.sectors", String(g.sectors)),
    ]
    guard keepsDatabase else {
      var entries: [(key: String, value: String)] = [("ddb.adapterType", adapterType.rawValue)]
      entries += geometryEntries.map { (key: $0.0, value: $0.1) }
      entries += [
        ("ddb.longContentID", longContentID),
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
      return entries
    }
    var entries = diskDatabase
    // Sets `key` in place when `override`, appends it when missing.
    func put(_ key: String, _ value: String, override: Bool) {
      let lower = key.lowercased()
      let found = entries.indices.filter { entries[$0].key.lowercased() == lower }
      if found.isEmpty {
        entries.append((key: key, value: value))
      } else if override {
        for i in found { entries[i].value = value }
      }
    }
    put("ddb.adapterType", adapterType.rawValue, override: overridden.contains(.adapterType))
    // A new adapter type without a geometry of its own gets VMware's geometry for it.
    let newGeometry = overridden.contains(.geometry) || overridden.contains(.adapterType)
    let geometryToWrite =
      overridden.contains(.geometry)
      ? g : DiskGeometry.vmware(capacitySectors: capacitySectors, adapterType: adapterType.rawValue)
    let newEntries = [
      ("ddb.geometry.cylinders", String(geometryToWrite.cylinders)),
      ("ddb.geometry.heads", String(geometryToWrite.heads)),
      ("ddb.geometry.sectors", String(geometryToWrite.sectors)),
    ]
    for (old, new) in zip(geometryEntries, newEntries) {
      put(old.0, newGeometry ? new.1 : old.1, override: newGeometry)
    }
    put("ddb.virtualHWVersion", hardwareVersion, override: overridden.contains(.hardwareVersion))
    if overridden.contains(.uuid) { put("ddb.uuid", Self.vmwareUUID(uuid ?? UUID()), override: true) }
    put("ddb.longContentID", longContentID, override: true)
    return entries
  }

  /// Parses VMware's spelling ("60 00 c2 9a ...-... ") or a standard UUID string.
  public static func parseVMwareUUID(_ text: String) -> UUID? {
    let hex = text.filter { $0.isHexDigit }
    guard hex.count == 32, text.allSatisfy({ $0.isHexDigit || $0 == " " || $0 == "-" }) else { return nil }
    var bytes = [UInt8](repeating: 0, count: 16)
    var i = hex.startIndex
    for k in 0..<16 {
      let j = hex.index(i, offsetBy: 2)
      guard let byte = UInt8(hex[i..<j], radix: 16) else { return nil }
      bytes[k] = byte
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
