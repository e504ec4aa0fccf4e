// Comparing two virtual disks, with qemu-img compare's meaning: the first byte where their
// contents differ. Block status comes first: a range that reads as zeros on both sides is
// not read at all, and a range that is zero on one side is only read on the other.

import Dispatch
import Foundation

/// The answer of `Disk.compare(with:strict:)`.
public struct DiskComparison: Sendable, Equatable {
  public enum Outcome: Sendable, Equatable {
    /// Same bytes (and, when not strict, the larger disk's extra part reads as zeros).
    case identical
    /// Strict comparison of disks of different sizes.
    case sizeMismatch
    /// The first byte offset of the virtual disks where the two differ.
    case contentMismatch(offset: UInt64)
  }

  public var outcome: Outcome
  /// Bytes read from the two disks together; ranges that both disks' block status says read
  /// as zeros are not read.
  public var bytesRead: UInt64
}

extension Disk {
  /// Compares this disk's virtual bytes with `other`'s. Disks of different sizes: strict, a
  /// size mismatch; otherwise the extra part of the larger must read as zeros (else the
  /// first non-zero byte there is the mismatch). Data is read `chunkBytes` at a time.
  public func compare(with other: Disk, strict: Bool = false, chunkBytes: Int = 4 << 20) throws -> DiskComparison {
    if strict && capacityBytes != other.capacityBytes {
      return DiskComparison(outcome: .sizeMismatch, bytesRead: 0)
    }
    var comparer = DiskComparer(a: self, b: other, chunkBytes: chunkBytes)
    defer { comparer.deallocate() }
    let outcome: DiskComparison.Outcome = try comparer.run().map { .contentMismatch(offset: $0) } ?? .identical
    return DiskComparison(outcome: outcome, bytesRead: comparer.bytesRead)
  }
}

/// The walk behind `Disk.compare`: block status of both disks one window at a time (memory
/// bounded by the runs of one window), then reads of the ranges that need them.
private struct DiskComparer {
  let a: Disk
  let b: Disk
  let chunk: Int
  let bufferA: UnsafeMutableRawBufferPointer
  let bufferB: UnsafeMutableRawBufferPointer
  var bytesRead: UInt64 = 0
  /// Reads B's side of ranges both sides need.
  let reader = DispatchQueue(label: "vmdk.compare")
  /// Block status is asked for this many bytes at a time.
  static let window: UInt64 = 1 << 30

  init(a: Disk, b: Disk, chunkBytes: Int) {
    self.a = a
    self.b = b
    // Whole sectors, at least one: ranges start on sector boundaries.
    chunk = max(512, min(chunkBytes, 256 << 20) / 512 * 512)
    bufferA = .allocate(byteCount: chunk, alignment: 4096)
    bufferB = .allocate(byteCount: chunk, alignment: 4096)
  }

  func deallocate() {
    bufferA.deallocate()
    bufferB.deallocate()
  }

  /// Which side must be read for a range: none (zero on both), one (zero on the other) or both.
  enum Need: Equatable { case none, onlyA, onlyB, both }

  /// The offset of the first difference, or nil.
  mutating func run() throws -> UInt64? {
    let common = min(a.capacityBytes, b.capacityBytes)
    let total = max(a.capacityBytes, b.capacityBytes)
    var at: UInt64 = 0
    while at < total {
      // Windows stop at the end of the smaller disk, so that past it one side is all zeros.
      let limit = at < common ? common : total
      let end = limit - at > Self.window ? at + Self.window : limit
      let runsA = try Self.zeroRuns(a, from: at, to: end)
      let runsB = try Self.zeroRuns(b, from: at, to: end)
      var i = 0
      var j = 0
      var p = at
      var pending: (need: Need, start: UInt64, end: UInt64)? = nil
      while p < end {
        let e = min(runsA[i].end, runsB[j].end)
        let need: Need =
          switch (runsA[i].zero, runsB[j].zero) {
          case (true, true): .none
          case (false, true): .onlyA
          case (true, false): .onlyB
          case (false, false): .both
          }
        if let q = pending, q.need == need {
          pending = (need, q.start, e)
        } else {
          if let q = pending, let found = try check(q.need, q.start, q.end) { return found }
          pending = (need, p, e)
        }
        if runsA[i].end == e { i += 1 }
        if runsB[j].end == e { j += 1 }
        p = e
      }
      if let q = pending, let found = try check(q.need, q.start, q.end) { return found }
      at = end
    }
    return nil
  }

  /// `[from, to)` as contiguous runs ending at `end`, each zero or not. Past the disk's end
  /// everything is zero; a range block status does not cover is treated as data (read).
  static func zeroRuns(_ disk: Disk, from: UInt64, to: UInt64) throws -> [(end: UInt64, zero: Bool)] {
    guard from < disk.capacityBytes else { return [(to, true)] }
    var runs: [(end: UInt64, zero: Bool)] = []
    var cursor = from
    try disk.blockStatus(offset: from, length: min(to, disk.capacityBytes) - from) { s in
      let start = max(s.start, from)
      let stop = min(s.start + s.length, to)
      guard stop > cursor else { return }
      if start > cursor { runs.append((start, false)) }
      runs.append((stop, s.zero))
      cursor = stop
    }
    if cursor < to { runs.append((to, cursor >= disk.capacityBytes)) }
    return runs
  }

  /// Reads what `need` says for `[start, end)`; the offset of the first difference, or nil.
  mutating func check(_ need: Need, _ start: UInt64, _ end: UInt64) throws -> UInt64? {
    guard need != .none else { return nil }
    var at = start
    while at < end {
      let n = Int(min(UInt64(chunk), end - at))
      let x = UnsafeMutableRawBufferPointer(rebasing: bufferA[0..<n])
      let y = UnsafeMutableRawBufferPointer(rebasing: bufferB[0..<n])
      switch need {
      case .both: try readBoth(at: at, x, y)
      case .onlyA: try a.read(at: at, into: x)
      case .onlyB: try b.read(at: at, into: y)
      case .none: break
      }
      bytesRead += UInt64(need == .both ? 2 * n : n)
      let found: Int? =
        switch need {
        case .both: firstDifference(UnsafeRawBufferPointer(x), UnsafeRawBufferPointer(y))
        case .onlyA: firstNonZero(UnsafeRawBufferPointer(x))
        case .onlyB: firstNonZero(UnsafeRawBufferPointer(y))
        case .none: nil
        }
      if let found { return at + UInt64(found) }
      at += UInt64(n)
    }
    return nil
  }
}

extension DiskComparer {
  /// Reads `x` from A on this thread while a second thread reads `y` from B: a network
  /// transport's round trips, or two decompressions, overlap. A's error comes first.
  func readBoth(at offset: UInt64, _ x: UnsafeMutableRawBufferPointer, _ y: UnsafeMutableRawBufferPointer) throws {
    let second = SecondRead(y)
    let b = self.b
    reader.async {
      do { try b.read(at: offset, into: second.buffer) } catch { second.error = error }
      second.done.signal()
    }
    var failure: (any Error)? = nil
    do { try a.read(at: offset, into: x) } catch { failure = error }
    second.done.wait()
    if let failure { throw failure }
    if let e = second.error { throw e }
  }
}

/// B's side of `readBoth`: the buffer the second thread fills and the error it met. Only the
/// second thread touches them until it signals `done`; the caller reads them after waiting.
private final class SecondRead: @unchecked Sendable {
  let buffer: UnsafeMutableRawBufferPointer
  var error: (any Error)? = nil
  let done = DispatchSemaphore(value: 0)
  init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
}

/// Blocks of this many bytes narrow a difference down before the byte-by-byte scan.
private let scanBlock = 4096

/// The index of the first byte where `x` and `y` (of the same length) differ, or nil.
func firstDifference(_ x: UnsafeRawBufferPointer, _ y: UnsafeRawBufferPointer) -> Int? {
  let n = min(x.count, y.count)
  guard n > 0, let p = x.baseAddress, let q = y.baseAddress, memcmp(p, q, n) != 0 else { return nil }
  var i = 0
  while i + scanBlock <= n && memcmp(p + i, q + i, scanBlock) == 0 { i += scanBlock }
  while i < n {
    if x[i] != y[i] { return i }
    i += 1
  }
  return nil
}

/// The index of the first non-zero byte of `x`, or nil.
func firstNonZero(_ x: UnsafeRawBufferPointer) -> Int? {
  guard let p = x.baseAddress, !isAllZero(p, x.count) else { return nil }
  var i = 0
  while i + scanBlock <= x.count && isAllZero(p + i, scanBlock) { i += scanBlock }
  while i < x.count {
    if x[i] != 0 { return i }
    i += 1
  }
  return nil
}
