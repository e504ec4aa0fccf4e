// Consistency check of a disk's metadata (qemu-img check's and VixDiskLib_CheckRepair's job):
// the grain directory against its redundant copy, every table entry inside the file and not
// overlapping metadata or another grain, and space in the file that nothing points at.

import VMDKFormat
import VMDKTransport

/// One problem `check` found.
public struct CheckProblem: Sendable, Equatable {
  /// A stable name: "redundant-directory-mismatch", "redundant-table-mismatch",
  /// "table-past-end", "grain-past-end", "grain-in-metadata", "grain-overlap",
  /// "newline-bytes-damaged", "flat-extent-short", "compressed-grain-invalid".
  public var kind: String
  public var file: String
  public var offset: UInt64?
  public var message: String
}

/// What `check` found.
public struct CheckReport: Sendable {
  public var problems: [CheckProblem] = []
  /// Bytes of the sparse files after the metadata that no grain table entry points at.
  public var leakedBytes: UInt64 = 0
  /// Grains referenced by the grain tables.
  public var allocatedGrains: UInt64 = 0
  /// Whether nothing is wrong and nothing leaked.
  public var isClean: Bool { problems.isEmpty && leakedBytes == 0 }
}

extension Disk {
  /// Checks every link's extents. Throws only when the image cannot be read at all.
  public func check() throws -> CheckReport {
    var report = CheckReport()
    for link in links {
      for extent in link.extents { try extent.reader.checkable?.check(into: &report) }
    }
    return report
  }
}

extension GrainTableExtent where Scheme == SparseScheme {
  func checkSparse(_ h: SparseExtentHeader, into report: inout CheckReport) throws {
    if h.newlinesDamaged {
      report.problems.append(
        CheckProblem(
          kind: "newline-bytes-damaged", file: file.name, offset: 73,
          message: "newline-detection bytes are damaged: the file was probably corrupted by a text-mode transfer"))
    }
    if h.flags.contains(.useRedundantGrainDirectory) && h.rgdOffsetSectors != 0 && !h.isCompressed {
      try compareRedundant(h, into: &report)
    }
    // Tables a writer added after the metadata (for a region that had none) are not leaks.
    var tables: [(start: UInt64, end: UInt64)] = []
    if !h.isCompressed && h.rgdOffsetSectors != 0 && h.flags.contains(.useRedundantGrainDirectory) {
      let n = Int(scheme.directoryEntries)
      if let rgd = try? file.readExactly(at: h.rgdOffsetSectors * 512, count: n * 4, what: "redundant grain directory")
      {
        for r in GrainEntries.decode(rgd, width: 4, count: n) {
          if r * 512 >= h.overheadSectors * 512 { tables.append((r * 512, r * 512 + SparseLayout.tableBytes)) }
        }
      }
    }
    try checkTables(
      metadataEnd: h.overheadSectors * 512, compressedEnd: h.isCompressed ? fileSize : nil, into: &report,
      countLeaks: !h.isCompressed, otherUsed: tables)
  }

  /// Compares the grain directory and tables with their redundant copies.
  private func compareRedundant(_ h: SparseExtentHeader, into report: inout CheckReport) throws {
    let n = Int(scheme.directoryEntries)
    let gdBytes = try file.readExactly(at: h.gdOffsetSectors * 512, count: n * 4, what: "grain directory")
    let rgdBytes = try file.readExactly(at: h.rgdOffsetSectors * 512, count: n * 4, what: "redundant grain directory")
    let gd = GrainEntries.decode(gdBytes, width: 4, count: n)
    let rgd = GrainEntries.decode(rgdBytes, width: 4, count: n)
    for i in 0..<n {
      let g = gd[i]
      let r = rgd[i]
      // The two directories point at different tables, so an entry is consistent when both
      // are zero or both are set to different tables (VirtualBox's rule).
      if (g == 0) != (r == 0) || g == r && g != 0 {
        let rAt = h.rgdOffsetSectors * 512 + UInt64(i * 4)
        report.problems.append(
          CheckProblem(
            kind: "redundant-directory-mismatch", file: file.name, offset: h.gdOffsetSectors * 512 + UInt64(i * 4),
            message: "grain directory entry \(i) is \(g), its redundant copy (at offset \(rAt)) is \(r)"))
        continue
      }
      guard g != 0, UInt64(g) * 512 + 2048 <= fileSize, UInt64(r) * 512 + 2048 <= fileSize else { continue }
      let gt = try file.readExactly(at: UInt64(g) * 512, count: 2048, what: "grain table")
      let rgt = try file.readExactly(at: UInt64(r) * 512, count: 2048, what: "redundant grain table")
      if gt != rgt {
        let differing = stride(from: 0, to: 2048, by: 4).filter { gt[$0..<($0 + 4)] != rgt[$0..<($0 + 4)] }
        let first = differing[0]
        report.problems.append(
          CheckProblem(
            kind: "redundant-table-mismatch", file: file.name, offset: UInt64(g) * 512 + UInt64(first),
            message:
              "grain table \(i) differs from its redundant copy in \(differing.count) entries, "
              + "first at entry \(first / 4) (redundant copy at offset \(UInt64(r) * 512 + UInt64(first)))"))
      }
    }
  }
}

extension GrainTableExtent {
  /// Walks every table: entries inside the file, outside the metadata, not overlapping; then
  /// counts leaked space after the metadata. `compressedEnd` is set for compressed extents.
  func checkTables(
    metadataEnd: UInt64, compressedEnd: UInt64?, into report: inout CheckReport, countLeaks: Bool = true,
    otherUsed: [(start: UInt64, end: UInt64)] = []
  ) throws {
    var used: [(start: UInt64, end: UInt64, at: UInt64)] = otherUsed.map { ($0.start, $0.end, $0.start) }
    let width = UInt64(scheme.entryBytes)
    // Only the entries that cover the extent's sectors matter; writers leave the rest as they like.
    let tablesNeeded = min(
      scheme.directoryEntries, (sectors + UInt64(sectorsPerTableForCheck) - 1) / sectorsPerTableForCheck)
    for index in 0..<tablesNeeded {
      let at = scheme.directoryOffset + index * width
      let table: (table: [UInt64], offset: UInt64)?
      do {
        table = try grainTable(index)
      } catch let e as FormatError {
        report.problems.append(CheckProblem(kind: "table-past-end", file: file.name, offset: at, message: e.message))
        continue
      }
      guard let (entries, tableOffset) = table else { continue }
      if tableOffset >= metadataEnd {
        used.append((tableOffset, tableOffset + scheme.entriesPerTable * width, at))
      }
      let firstSector = index * sectorsPerTableForCheck
      let entriesNeeded = Int(
        min(UInt64(entries.count), (sectors - firstSector + scheme.grainSectors - 1) / scheme.grainSectors))
      for (i, gte) in entries.prefix(entriesNeeded).enumerated() {
        let entryAt = tableOffset + UInt64(i) * width
        let location: GrainLocation
        do {
          location = try scheme.grain(gte: gte, at: entryAt, fileSize: fileSize)
        } catch let e as FormatError {
          report.problems.append(
            CheckProblem(kind: "grain-past-end", file: file.name, offset: entryAt, message: e.message))
          continue
        }
        var range: (UInt64, UInt64)? = nil
        switch location {
        case .unallocated, .zero: continue
        case .data(let o):
          range = (o, o + UInt64(grainBytes))
          if o + UInt64(grainBytes) > fileSize {
            report.problems.append(
              CheckProblem(
                kind: "grain-past-end", file: file.name, offset: entryAt,
                message: "grain at byte \(o) ends past the end of the file (\(fileSize) bytes)"))
          }
        case .compressed(let o):
          if scheme.hasMarkers {
            guard let head = try? file.readExactly(at: o, count: 12, what: "grain marker"),
              let m = try? StreamMarker(parsing: head, baseOffset: o), m.size != 0,
              o + 12 + UInt64(m.size) <= (compressedEnd ?? fileSize)
            else {
              report.problems.append(
                CheckProblem(
                  kind: "compressed-grain-invalid", file: file.name, offset: entryAt,
                  message: "grain table entry points at byte \(o), which is not a grain marker inside the file"))
              continue
            }
            range = (o, (o + 12 + UInt64(m.size) + 511) / 512 * 512)
          }
        }
        report.allocatedGrains += 1
        if let (s, e) = range {
          if s < metadataEnd {
            report.problems.append(
              CheckProblem(
                kind: "grain-in-metadata", file: file.name, offset: entryAt,
                message: "grain at byte \(s) lies inside the metadata, which ends at byte \(metadataEnd)"))
          }
          used.append((s, e, entryAt))
        }
      }
    }
    used.sort { $0.start < $1.start }
    var end = metadataEnd
    var leaked: UInt64 = 0
    for (i, u) in used.enumerated() {
      if i > 0 && u.start < used[i - 1].end {
        report.problems.append(
          CheckProblem(
            kind: "grain-overlap", file: file.name, offset: u.at,
            message: "grain at byte \(u.start) overlaps the grain at byte \(used[i - 1].start)"))
      }
      if u.start > end { leaked += u.start - end }
      end = max(end, u.end)
    }
    if countLeaks && fileSize > end { leaked += (fileSize - end) / 512 * 512 }
    if countLeaks { report.leakedBytes += leaked }
  }
}

extension GrainTableExtent {
  var sectorsPerTableForCheck: UInt64 { scheme.entriesPerTable * scheme.grainSectors }
}

extension GrainTableExtent: CheckableExtent {
  /// The scheme's check: the header, the directories and tables, every grain's place.
  func check(into report: inout CheckReport) throws { try scheme.check(self, into: &report) }
}
