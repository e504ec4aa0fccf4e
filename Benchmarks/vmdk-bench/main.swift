// vmdk-bench: times reads or writes through the library (Disk.read / Disk.write) with several
// threads, the way `qemu-img bench` times them through qemu's block layer, so that
// Benchmarks/run-io.sh can run both on the same image with the same offsets.
//
//   vmdk-bench read  IMAGE [--threads N] [--count C] [--size B] [--step B | --random] [--offset B]
//   vmdk-bench write IMAGE [--threads N] [--count C] [--size B] [--step B | --random] [--offset B] [--flush]
//
// Request i (of C, shared by the threads) goes to offset + i * step, wrapping at the end of
// the disk as qemu-img bench does (step defaults to size), or to a random size-aligned offset
// with --random (a fixed seed). Prints one line: requests, seconds, IOPS and MiB/s. Open and
// close are outside the timed region; --flush puts one flush (fsync) inside it at the end.

import Foundation
import Synchronization
import VMDKBlock
import VMDKTransport

struct Options {
  var mode = ""
  var image = ""
  var threads = 1
  var count = 100_000
  var size = 4096
  var step: UInt64? = nil
  var random = false
  var offset: UInt64 = 0
  var flush = false
}

func usage() -> Never {
  FileHandle.standardError.write(
    Data(
      "usage: vmdk-bench read|write IMAGE [--threads N] [--count C] [--size B] [--step B|--random] [--offset B] [--flush]\n"
        .utf8))
  exit(2)
}

func parse() -> Options {
  var o = Options()
  var args = Array(CommandLine.arguments.dropFirst())
  guard args.count >= 2 else { usage() }
  o.mode = args.removeFirst()
  o.image = args.removeFirst()
  guard o.mode == "read" || o.mode == "write" else { usage() }
  while let a = args.first {
    args.removeFirst()
    func value() -> UInt64 {
      guard let v = args.first, let n = UInt64(v) else { usage() }
      args.removeFirst()
      return n
    }
    switch a {
    case "--threads": o.threads = max(1, Int(clamping: value()))
    case "--count": o.count = Int(clamping: value())
    case "--size": o.size = max(1, Int(clamping: value()))
    case "--step": o.step = value()
    case "--offset": o.offset = value()
    case "--random": o.random = true
    case "--flush": o.flush = true
    default: usage()
    }
  }
  return o
}

/// Park-Miller, so every run asks for the same offsets.
struct Lehmer {
  var state: UInt64
  mutating func next() -> UInt64 {
    state = state * 48271 % 2_147_483_647
    return state
  }
}

let o = parse()
do {
  var options = OpenOptions()
  options.writable = o.mode == "write"
  let disk = try Disk.open(o.image, options: options)
  let capacity = disk.capacityBytes
  let size = UInt64(o.size)
  guard capacity >= size else { throw VMDKError(.invalidArgument, "the disk is smaller than one request") }
  let slots = (capacity - size) / size + 1
  // Every offset is computed before the clock starts.
  var planned = [UInt64](repeating: 0, count: o.count)
  var rng = Lehmer(state: 12345)
  let step = o.step ?? size
  for i in 0..<o.count {
    if o.random {
      planned[i] = (rng.next() << 20 ^ rng.next()) % slots * size
    } else {
      // As qemu-img bench: offset + i * step, back to the start past the end.
      planned[i] = (o.offset &+ UInt64(i) &* step) % (capacity - size + 1)
    }
  }
  let offsets = planned
  let next = Atomic<Int>(0)
  let failure = Locked<(any Error)?>(nil)
  let payload = [UInt8](repeating: 0x5a, count: o.size)
  let t0 = DispatchTime.now().uptimeNanoseconds
  DispatchQueue.concurrentPerform(iterations: o.threads) { _ in
    var buffer = [UInt8](repeating: 0, count: o.size)
    while true {
      let i = next.add(1, ordering: .relaxed).oldValue
      if i >= o.count { return }
      do {
        if o.mode == "read" {
          try buffer.withUnsafeMutableBytes { try disk.read(at: offsets[i], into: $0) }
        } else {
          try payload.withUnsafeBytes { try disk.write(at: offsets[i], $0) }
        }
      } catch {
        failure.withLock { if $0 == nil { $0 = error } }
        return
      }
    }
  }
  if o.flush { try disk.flush() }
  let t1 = DispatchTime.now().uptimeNanoseconds
  if let e = failure.withLock({ $0 }) { throw e }
  try disk.close()
  let seconds = Double(t1 - t0) / 1e9
  let mib = Double(o.count) * Double(o.size) / 1_048_576
  print(
    String(
      format: "%@ requests=%d size=%d threads=%d seconds=%.4f iops=%.0f mibps=%.1f", o.mode, o.count, o.size,
      o.threads, seconds, Double(o.count) / seconds, mib / seconds))
} catch {
  FileHandle.standardError.write(Data("vmdk-bench: \(error)\n".utf8))
  exit(1)
}
