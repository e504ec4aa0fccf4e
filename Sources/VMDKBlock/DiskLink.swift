// DiskLink: one link of a snapshot chain, a descriptor and its extents mapped to one sector
// address space. Opening recognises every VMDK form (embedded or separate descriptor, bare
// sparse, COWD and seSparse extents) and raw images.

import VMDKFormat
import VMDKTransport

/// Facts about one extent of a link, for `info`.
public struct ExtentInfo: Sendable {
  /// The descriptor's line.
  public let line: ExtentDescription
  /// The path opened, when the extent has a file.
  public let path: String?
  /// How the extent stores its sectors.
  public var format: ExtentFormat { reader.format }
  /// First sector of this extent in the link (set by the link).
  public internal(set) var startSector: UInt64 = 0
  public let fileSize: UInt64?
  public let sparseHeader: SparseExtentHeader?
  public let cowdHeader: COWDHeader?
  public let seSparseHeader: SESparseConstHeader?
  /// The extent itself: reads, block status and its abilities.
  let reader: any Extent

  init(
    _ reader: any Extent, path: String? = nil, fileSize: UInt64? = nil, sparseHeader: SparseExtentHeader? = nil,
    cowdHeader: COWDHeader? = nil, seSparseHeader: SESparseConstHeader? = nil
  ) {
    self.reader = reader
    self.line = reader.line
    self.path = path
    self.fileSize = fileSize
    self.sparseHeader = sparseHeader
    self.cowdHeader = cowdHeader
    self.seSparseHeader = seSparseHeader
  }
}

/// Where a link's descriptor was found.
public enum DescriptorLocation: String, Sendable {
  /// In the sparse file's descriptor area (monolithicSparse, streamOptimized).
  case embedded
  /// A descriptor file of its own.
  case file
  /// Nowhere: a raw image or a bare extent, described by a made-up descriptor.
  case none
}

/// What kind of link this is.
public enum LinkKind: String, Sendable {
  case vmdk
  case raw
}

/// One VMDK (or raw image): a descriptor and its extents.
public final class DiskLink: Sendable {
  /// The path opened.
  public let path: String
  public let kind: LinkKind
  /// The descriptor; for raw images and bare extents, one made up to describe them.
  public let descriptor: Descriptor
  /// Whether the descriptor was read from the image (false when it was made up).
  public let hasDescriptor: Bool
  /// Where the descriptor was found.
  public let descriptorLocation: DescriptorLocation
  public let capacitySectors: UInt64
  /// The extents in order, each with its first sector in the link.
  public let extents: [ExtentInfo]
  /// How the link's files were reached.
  public let transport: Transport

  init(
    path: String, kind: LinkKind, descriptor: Descriptor, hasDescriptor: Bool, descriptorLocation: DescriptorLocation,
    extents: [ExtentInfo], transport: Transport = .file
  ) {
    self.transport = transport
    self.path = path
    self.kind = kind
    self.descriptor = descriptor
    self.hasDescriptor = hasDescriptor
    self.descriptorLocation = descriptorLocation
    var placed = extents
    var total: UInt64 = 0
    for i in placed.indices {
      placed[i].startSector = total
      total += placed[i].reader.sectors
    }
    self.extents = placed
    self.capacitySectors = total
  }

  /// The first sparse header among the extents.
  public var sparseHeader: SparseExtentHeader? { extents.lazy.compactMap(\.sparseHeader).first }
  /// The create type the descriptor names ("raw" for raw images).
  public var createType: String { kind == .raw ? "raw" : (descriptor.createType ?? "unknown") }

  // MARK: Block status and reads (link-relative sectors)

  /// A run of this link, with the extent it lies in.
  struct Run {
    var start: UInt64
    var count: UInt64
    var status: LayerStatus
    var extent: Int
    var extentRun: ExtentRun
  }

  /// Calls `body` with runs covering `[start, start+count)`; sectors past the capacity are
  /// not reported.
  func mapRuns(start: UInt64, count: UInt64, _ body: (Run) throws -> Void) throws {
    guard start < capacitySectors else { return }
    let end = min(capacitySectors, start + count)
    var i = extentIndex(containing: start)
    var s = start
    while s < end && i < extents.count {
      let base = extents[i].startSector
      let e = extents[i].reader
      let localEnd = min(end - base, e.sectors)
      if s - base < localEnd {
        try e.mapRuns(start: s - base, count: localEnd - (s - base)) { r in
          try body(Run(start: r.start + base, count: r.count, status: r.status, extent: i, extentRun: r))
        }
      }
      s = base + e.sectors
      i += 1
    }
  }

  /// Reads a run reported by `mapRuns` (data or dataZero) into `buffer`.
  func read(_ run: Run, into buffer: UnsafeMutableRawBufferPointer) throws {
    try extents[run.extent].reader.read(run.extentRun, into: buffer)
  }

  private func extentIndex(containing sector: UInt64) -> Int {
    var lo = 0
    var hi = extents.count - 1
    while lo < hi {
      let mid = (lo + hi + 1) / 2
      if extents[mid].startSector <= sector { lo = mid } else { hi = mid - 1 }
    }
    return lo
  }
}

// MARK: Opening

extension DiskLink {
  /// Opens one link (no parents).
  /// With `writable`, the link's files are opened read-write (the top link of a writable disk).
  static func open(
    _ path: String, options: OpenOptions, cache: TableCache, writable: Bool = false,
    locator: any StoreLocator = LocalLocator()
  ) throws -> DiskLink {
    let file = try locator.open(path, writable: writable)
    let size = try file.size()
    let head = try file.readUpTo(at: 0, count: 4096)
    if options.format == .raw { return try raw(path, file: file, size: size, transport: locator.transport) }
    if SparseExtentHeader.hasMagic(head) {
      return try openSparseFile(
        path, file: file, size: size, options: options, cache: cache, writable: writable, locator: locator)
    }
    if COWDHeader.hasMagic(head) {
      let line = ExtentDescription(sectors: 0, kind: .vmfsSparse, fileName: PathResolver.baseName(path))
      let (extent, h) = try COWDExtentOpener.open(line: line, file: file, cache: cache)
      var fixed = line
      fixed.sectors = UInt64(h.numSectors)
      let e = COWDExtent(line: fixed, file: file, fileSize: extent.fileSize, scheme: extent.scheme, cache: cache)
      return bare(
        path, createType: "vmfsSparse", info: ExtentInfo(e, path: path, fileSize: size, cowdHeader: h),
        transport: locator.transport)
    }
    if SESparseConstHeader.hasMagic(head) {
      let line = ExtentDescription(sectors: 0, kind: .seSparse, fileName: PathResolver.baseName(path))
      let (extent, h) = try SESparseExtentOpener.open(line: line, file: file, cache: cache)
      var fixed = line
      fixed.sectors = h.capacitySectors
      let e = SESparseExtent(line: fixed, file: file, fileSize: extent.fileSize, scheme: extent.scheme, cache: cache)
      return bare(
        path, createType: "seSparse", info: ExtentInfo(e, path: path, fileSize: size, seSparseHeader: h),
        transport: locator.transport)
    }
    if options.format == .vmdk || Descriptor.looksLikeDescriptor(head) {
      guard size <= Limits.maxDescriptorBytes else {
        throw VMDKError(
          .descriptorTooLarge,
          "descriptor file of \(size) bytes is larger than the cap of \(Limits.maxDescriptorBytes)",
          file: path, offset: 0)
      }
      let bytes = try file.readUpTo(at: 0, count: Int(size))
      let descriptor = try wrap(path) { try Descriptor(parsing: bytes) }
      return try fromDescriptor(
        path, descriptor: descriptor, location: .file, options: options, cache: cache, writable: writable,
        locator: locator)
    }
    return try raw(path, file: file, size: size, transport: locator.transport)
  }

  /// A raw image (a local file, or an NBD export): the store is the virtual disk.
  static func raw(_ path: String, file: any ByteStore, size: UInt64, transport: Transport = .file) throws -> DiskLink {
    // A raw image's last partial sector still belongs to the disk, as in qemu.
    let sectors = (size + 511) / 512
    let line = ExtentDescription(sectors: sectors, kind: .flat, fileName: PathResolver.baseName(path))
    var d = Descriptor()
    d.setHeader("createType", "raw", quoted: true)
    d.setExtents([line])
    let info = ExtentInfo(FlatExtent(line: line, file: file, format: .raw), path: path, fileSize: size)
    return DiskLink(
      path: path, kind: .raw, descriptor: d, hasDescriptor: false, descriptorLocation: .none, extents: [info],
      transport: transport)
  }

  static func bare(
    _ path: String, createType: String, info: ExtentInfo, transport: Transport = .file
  ) -> DiskLink {
    var d = Descriptor()
    d.setHeader("version", "1")
    d.setHeader("CID", "ffffffff")
    d.setHeader("parentCID", "ffffffff")
    d.setHeader("createType", createType, quoted: true)
    d.setExtents([info.line])
    return DiskLink(
      path: path, kind: .vmdk, descriptor: d, hasDescriptor: false, descriptorLocation: .none, extents: [info],
      transport: transport)
  }

  /// A KDMV file: monolithicSparse or streamOptimized with an embedded descriptor, a bare
  /// sparse extent, or (capacity 0) a container for a descriptor.
  static func openSparseFile(
    _ path: String, file: any ByteStore, size: UInt64, options: OpenOptions, cache: TableCache,
    writable: Bool = false, locator: any StoreLocator = LocalLocator()
  ) throws -> DiskLink {
    let headBytes = try file.readUpTo(at: 0, count: SparseExtentHeader.size)
    let atZero = try wrap(path) { try SparseExtentHeader(parsing: headBytes) }
    var descriptor: Descriptor? = nil
    if atZero.descriptorOffsetSectors != 0 {
      let (start, o) = atZero.descriptorOffsetSectors.multipliedReportingOverflow(by: 512)
      guard !o, start < size else {
        throw VMDKError(
          .offsetPastEnd,
          "embedded descriptor at sector \(atZero.descriptorOffsetSectors) is past the end of the file (\(size) bytes)",
          file: path, offset: 28)
      }
      guard atZero.descriptorSizeSectors <= Limits.maxDescriptorBytes / 512 else {
        throw VMDKError(
          .descriptorTooLarge,
          "embedded descriptor of \(atZero.descriptorSizeSectors) sectors is larger than the cap of 1 MiB",
          file: path, offset: 36)
      }
      let bytes = try file.readUpTo(at: start, count: Int(atZero.descriptorSizeSectors * 512))
      if bytes.contains(where: { $0 != 0 }) {
        let d = try wrap(path) { try Descriptor(parsing: bytes, baseOffset: start) }
        guard d.createType != nil else {
          throw VMDKError(.invalidDescriptor, "embedded descriptor has no createType", file: path, offset: start)
        }
        descriptor = d
      }
    }
    if atZero.capacitySectors == 0, let descriptor, !descriptor.extents.isEmpty {
      return try fromDescriptor(
        path, descriptor: descriptor, location: .embedded, options: options, cache: cache, writable: writable,
        locator: locator)
    }
    let (_, opened) = try SparseExtentOpener.open(
      line: ExtentDescription(sectors: 0, kind: .sparse, fileName: nil), file: file, cache: cache)
    let h = opened.header
    let declared = descriptor?.extents.first
    let line = ExtentDescription(
      access: declared?.access ?? .readWrite, sectors: h.capacitySectors, kind: .sparse,
      fileName: declared?.fileName ?? PathResolver.baseName(path))
    let extent = SparseExtent(
      line: line, file: file, fileSize: opened.fileSize, scheme: SparseScheme(header: h, layout: opened.layout),
      cache: cache)
    let info = ExtentInfo(extent, path: path, fileSize: size, sparseHeader: h)
    guard let descriptor else {
      return bare(
        path, createType: h.isCompressed ? "streamOptimized" : "monolithicSparse", info: info,
        transport: locator.transport)
    }
    return DiskLink(
      path: path, kind: .vmdk, descriptor: descriptor, hasDescriptor: true, descriptorLocation: .embedded,
      extents: [info], transport: locator.transport)
  }

  /// A link whose extents a descriptor lists.
  static func fromDescriptor(
    _ path: String, descriptor: Descriptor, location: DescriptorLocation, options: OpenOptions, cache: TableCache,
    writable: Bool = false, locator: any StoreLocator = LocalLocator()
  ) throws -> DiskLink {
    guard let createType = descriptor.createType else {
      throw VMDKError(.invalidDescriptor, "descriptor has no createType", file: path)
    }
    guard descriptor.capacitySectors != nil else {
      throw VMDKError(.capacityOverflow, "the extents' sectors add up past the largest disk", file: path)
    }
    let lines = descriptor.extents
    guard !lines.isEmpty else {
      throw VMDKError(.invalidDescriptor, "descriptor lists no extents", file: path)
    }
    let deviceType = CreateType(createType).isRawDevice
    var infos: [ExtentInfo] = []
    for (n, line) in lines.enumerated() {
      if line.kind == .zero {
        infos.append(ExtentInfo(ZeroExtent(line: line)))
        continue
      }
      if line.kind.isDevice || deviceType {
        let e = VMDKError(
          .needsDevice,
          "extent \(n + 1) (\(line.kind.rawValue) \"\(line.fileName ?? "")\") is a raw device mapping of a \(createType) disk; reading it needs the device",
          file: path)
        infos.append(ExtentInfo(UnreadableExtent(line: line, format: .device, error: e)))
        continue
      }
      if line.access == .noAccess {
        let e = VMDKError(.extentNoAccess, "extent \(n + 1) (\"\(line.fileName ?? "")\") is NOACCESS", file: path)
        infos.append(ExtentInfo(UnreadableExtent(line: line, format: .noAccess, error: e)))
        continue
      }
      let extentPath = try locator.resolve(
        line.fileName ?? "", from: path, allowExternal: options.allowExternalPaths, what: "extent",
        missingCode: .fileNotFound)
      let file = try locator.open(extentPath, writable: writable && line.access == .readWrite)
      let size = try file.size()
      let magic = try file.readUpTo(at: 0, count: 8)
      switch line.kind {
      case .flat, .vmfs:
        infos.append(ExtentInfo(FlatExtent(line: line, file: file), path: extentPath, fileSize: size))
      case .sparse, .vmfsSparse, .seSparse:
        if COWDHeader.hasMagic(magic) {
          let (e, h) = try COWDExtentOpener.open(line: line, file: file, cache: cache)
          infos.append(ExtentInfo(e, path: extentPath, fileSize: size, cowdHeader: h))
        } else if SESparseConstHeader.hasMagic(magic) {
          let (e, h) = try SESparseExtentOpener.open(line: line, file: file, cache: cache)
          infos.append(ExtentInfo(e, path: extentPath, fileSize: size, seSparseHeader: h))
        } else {
          let (e, opened) = try SparseExtentOpener.open(line: line, file: file, cache: cache)
          infos.append(ExtentInfo(e, path: extentPath, fileSize: size, sparseHeader: opened.header))
        }
      case .zero, .vmfsRDM, .vmfsRaw:
        break  // handled above
      }
    }
    return DiskLink(
      path: path, kind: .vmdk, descriptor: descriptor, hasDescriptor: true, descriptorLocation: location,
      extents: infos, transport: locator.transport)
  }
}
