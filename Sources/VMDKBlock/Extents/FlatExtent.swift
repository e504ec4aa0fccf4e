// FLAT and VMFS extents (and raw images): the extent's sectors sit in a file from an offset
// on. Block status comes from the file system's holes (SEEK_DATA/SEEK_HOLE), as qemu reports it.

import VMDKFormat
import VMDKTransport

/// A flat extent: sectors at `offsetSectors` in a file.
final class FlatExtent: WritableExtent, CheckableExtent {
  let line: ExtentDescription
  let sectors: UInt64
  let file: any ByteStore
  let baseBytes: UInt64
  /// `.flat`, or `.raw` for a raw image.
  let format: ExtentFormat
  var store: (any ByteStore)? { file }
  var writable: (any WritableExtent)? { self }
  var checkable: (any CheckableExtent)? { self }
  var maintainable: MaintainableExtent? { .flat(self) }

  init(line: ExtentDescription, file: any ByteStore, format: ExtentFormat = .flat) {
    self.line = line
    self.sectors = line.sectors
    self.file = file
    self.baseBytes = line.offsetSectors * 512
    self.format = format
  }

  func writeSectors(
    start: UInt64, _ data: UnsafeRawBufferPointer, stop: SparseWriteStop,
    underneath: (_ start: UInt64, _ count: UInt64, _ into: UnsafeMutableRawBufferPointer) throws -> Void
  ) throws {
    try file.write(at: baseBytes + start * 512, from: data)
  }

  /// A flat file shorter than its extent: the rest reads as zeros, but it is reported.
  func check(into report: inout CheckReport) throws {
    let needed = baseBytes + sectors * 512
    let size = try file.size()
    if size < needed {
      report.problems.append(
        CheckProblem(
          kind: "flat-extent-short", file: file.name, offset: size,
          message: "flat extent needs \(needed) bytes, the file has \(size); the rest reads as zeros"))
    }
  }

  func mapRuns(start: UInt64, count: UInt64, _ body: (ExtentRun) throws -> Void) throws {
    let end = start + count
    var pos = start
    func emit(_ s: UInt64, _ e: UInt64, _ status: LayerStatus) throws {
      guard e > s else { return }
      try body(ExtentRun(start: s, count: e - s, status: status, hostOffset: baseBytes + s * 512))
    }
    if let device = file.blockDevice, device.supportsBlockStatus {
      return try mapDeviceRuns(device, start: start, end: end, body)
    }
    // Without hole information, everything is data.
    guard try file.nextData(from: baseBytes + start * 512) != nil else {
      return try emit(start, end, .data)
    }
    while pos < end {
      let bytePos = baseBytes + pos * 512
      let dataAt = try file.nextData(from: bytePos) ?? bytePos
      // Holes: whole sectors only; a sector with any data is data.
      let holeEndSector = min(end, dataAt <= bytePos ? pos : (dataAt - baseBytes) / 512)
      if holeEndSector > pos {
        try emit(pos, holeEndSector, .dataZero)
        pos = holeEndSector
        continue
      }
      let holeAt = try file.nextHole(from: bytePos) ?? UInt64.max
      let dataEnd: UInt64 =
        holeAt == UInt64.max ? end : min(end, max(pos + 1, (holeAt - baseBytes + 511) / 512))
      try emit(pos, dataEnd, .data)
      pos = dataEnd
    }
  }

  /// An NBD export's block status as qemu maps it: a hole that reads as zeros is `zero` (not
  /// data), allocated zeros are `dataZero`, anything else (a hole that is not known to read
  /// as zeros included) is data. Runs cover whole sectors; a sector with any data is data.
  private func mapDeviceRuns(
    _ nbd: any BlockDevice, start: UInt64, end: UInt64, _ body: (ExtentRun) throws -> Void
  ) throws {
    var pos = start
    var pending: ExtentRun? = nil
    while pos < end {
      let byte = baseBytes + pos * 512
      guard let x = try nbd.status(at: byte) else {
        let rest = ExtentRun(start: pos, count: end - pos, status: .data, hostOffset: byte)
        pending = try merge(pending, rest, body)
        break
      }
      let status: LayerStatus = x.isZero ? (x.isHole ? .zero : .dataZero) : .data
      // A zero run ends at its last whole sector; a data run at the sector holding its end.
      let extentEnd = x.start + x.length
      let stop = status == .data ? (extentEnd - baseBytes + 511) / 512 : (extentEnd - baseBytes) / 512
      let next = min(end, max(pos + 1, stop))
      let runStatus: LayerStatus = next > stop ? .data : status
      let run = ExtentRun(start: pos, count: next - pos, status: runStatus, hostOffset: byte)
      pending = try merge(pending, run, body)
      pos = next
    }
    if let pending { try body(pending) }
  }

  /// Joins `run` to `pending` when they have the same status and touch; otherwise hands
  /// `pending` to `body`. Returns what is pending now.
  private func merge(
    _ pending: ExtentRun?, _ run: ExtentRun, _ body: (ExtentRun) throws -> Void
  ) rethrows -> ExtentRun? {
    guard var p = pending else { return run }
    if p.status == run.status && p.start + p.count == run.start {
      p.count += run.count
      return p
    }
    try body(p)
    return run
  }

  func read(_ run: ExtentRun, into buffer: UnsafeMutableRawBufferPointer) throws {
    if run.status == .dataZero {
      buffer.initializeMemory(as: UInt8.self, repeating: 0)
      return
    }
    let n = try file.read(at: baseBytes + run.start * 512, into: buffer)
    // Past the end of a short flat file reads as zeros, as in qemu.
    if n < buffer.count {
      UnsafeMutableRawBufferPointer(rebasing: buffer[n...]).initializeMemory(as: UInt8.self, repeating: 0)
    }
  }
}

/// A ZERO extent: reads as zeros and has no file.
final class ZeroExtent: Extent {
  let line: ExtentDescription
  let sectors: UInt64
  var store: (any ByteStore)? { nil }
  var format: ExtentFormat { .zero }

  init(line: ExtentDescription) {
    self.line = line
    self.sectors = line.sectors
  }

  func mapRuns(start: UInt64, count: UInt64, _ body: (ExtentRun) throws -> Void) throws {
    try body(ExtentRun(start: start, count: count, status: .zero))
  }

  func read(_ run: ExtentRun, into buffer: UnsafeMutableRawBufferPointer) throws {
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
  }
}

/// An extent that cannot be read: a raw device mapping, or NOACCESS. Block status reports it
/// as data; reading it throws the error it was made with.
final class UnreadableExtent: Extent {
  let line: ExtentDescription
  let sectors: UInt64
  let error: VMDKError
  /// `.device` or `.noAccess`.
  let format: ExtentFormat
  var store: (any ByteStore)? { nil }

  init(line: ExtentDescription, format: ExtentFormat, error: VMDKError) {
    self.line = line
    self.sectors = line.sectors
    self.format = format
    self.error = error
  }

  func mapRuns(start: UInt64, count: UInt64, _ body: (ExtentRun) throws -> Void) throws {
    try body(ExtentRun(start: start, count: count, status: .data))
  }

  func read(_ run: ExtentRun, into buffer: UnsafeMutableRawBufferPointer) throws {
    throw error
  }
}
