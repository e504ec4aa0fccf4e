// The descriptor's createType, classified: which family of layout a disk claims. Readers
// compare it case-insensitively (libvmdk does; VMware writes one spelling), and accept both
// spellings of the split types ("twoGb…" and "2Gb…").

/// A descriptor's `createType`.
public enum CreateType: Equatable, Sendable {
  case monolithicSparse, monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized
  /// ESXi flat disks: `vmfs` and its variants (`vmfsThin`, `vmfsPreallocated`, ...).
  case vmfs(String)
  /// ESXi redo logs: `vmfsSparse` (COWD) and `seSparse` (spelled `vmfsSeSparse` in the spec).
  case vmfsSparse, seSparse
  /// Raw device mappings and host devices: reading them needs the device.
  case rawDevice(String)
  case custom
  /// A value no reader we know of gives a meaning to; kept as written.
  case unknown(String)

  /// Classifies a createType value as written in a descriptor.
  public init(_ value: String) {
    switch value.lowercased() {
    case "monolithicsparse": self = .monolithicSparse
    case "monolithicflat": self = .monolithicFlat
    case "twogbmaxextentsparse", "2gbmaxextentsparse": self = .twoGbMaxExtentSparse
    case "twogbmaxextentflat", "2gbmaxextentflat": self = .twoGbMaxExtentFlat
    case "streamoptimized": self = .streamOptimized
    case "vmfs", "vmfsthin", "vmfspreallocated", "vmfseagerzeroedthick", "vmfsthick": self = .vmfs(value)
    case "vmfssparse": self = .vmfsSparse
    case "sesparse", "vmfssesparse": self = .seSparse
    case "vmfsrdm", "vmfsrawdevicemap", "vmfsrdmp", "vmfspassthroughrawdevicemap", "vmfsraw", "fulldevice",
      "partitioneddevice":
      self = .rawDevice(value)
    case "custom": self = .custom
    default: self = .unknown(value)
    }
  }

  /// Extents on raw devices: opening them as files is never right.
  public var isRawDevice: Bool {
    if case .rawDevice = self { return true }
    return false
  }

  /// An ESXi redo log (COWD or seSparse), whose extents follow the parent's capacity.
  public var isRedoLog: Bool { self == .vmfsSparse || self == .seSparse }

  /// A split disk whose extents are at most 2 GiB each.
  public var isSplit: Bool { self == .twoGbMaxExtentSparse || self == .twoGbMaxExtentFlat }
}
