// libFuzzer target: whole images, opened from memory through the block layer (VMDKBlock over
// MemoryStore), then read, digested, mapped and checked. Built by `Fuzz/run.sh images`.
//
// An input is one or more files: the bytes before the first separator are the disk opened
// (`disk.vmdk`); each separator line `\n=====FILE NAME\n` starts the file NAME, which a
// descriptor can name as an extent or a parent. So one input holds a sparse image, a
// descriptor with its extents, or a chain of two.
//
// Besides traps, ASan reports, allocations over 64 MiB and inputs over 5 s, these are findings
// (the target traps on them):
// - an error that is not a VMDKError (every failure from file contents must be typed);
// - block status runs that are not adjacent, empty, or do not cover the window asked;
// - a range block status calls unallocated or zero that does not read as zeros;
// - the pipelined sequential read (readSequentially) giving other bytes than plain reads,
//   or failing where plain reads succeed (or the other way round);
// - readDataRanges handing out a range outside the data runs, or bytes unlike plain reads.

import VMDKBlock
import VMDKFormat
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#endif

/// The files of one input, by location ("/m/NAME").
struct MemoryLocator: StoreLocator {
  let files: [String: [UInt8]]
  var transport: Transport { .file }

  func open(_ location: String, writable: Bool) throws -> any ByteStore {
    guard let bytes = files[location] else {
      throw VMDKError(.fileNotFound, "no such file in the input", file: location)
    }
    return MemoryStore(name: location, bytes: bytes)
  }

  func resolve(
    _ name: String, from descriptor: String, allowExternal: Bool, what: String, missingCode: VMDKError.Code
  ) throws -> String {
    let location = "/m/" + name
    guard files[location] != nil else {
      throw VMDKError(missingCode, "\(what) \(name) is not in the input", file: descriptor)
    }
    return location
  }

  func canonical(_ location: String) -> String { location }
}

let separator = Array("\n=====FILE ".utf8)

/// Splits an input into its files.
func splitFiles(_ data: UnsafeRawBufferPointer) -> [String: [UInt8]] {
  let bytes = Array(data)
  var files: [String: [UInt8]] = [:]
  var name = "disk.vmdk"
  var start = 0
  var i = 0
  while i + separator.count <= bytes.count {
    if bytes[i] == separator[0] && Array(bytes[i..<(i + separator.count)]) == separator {
      let nameStart = i + separator.count
      var nameEnd = nameStart
      while nameEnd < bytes.count && bytes[nameEnd] != 0x0A && nameEnd - nameStart < 64 { nameEnd += 1 }
      guard nameEnd < bytes.count, bytes[nameEnd] == 0x0A, nameEnd > nameStart else {
        i += 1
        continue
      }
      files["/m/" + name] = Array(bytes[start..<i])
      name = String(decoding: bytes[nameStart..<nameEnd], as: UTF8.self)
      start = nameEnd + 1
      i = start
      if files.count >= 8 { break }
      continue
    }
    i += 1
  }
  if files["/m/" + name] == nil { files["/m/" + name] = Array(bytes[start...]) }
  return files
}

var trace: Bool = false

func note(_ s: @autoclosure () -> String) {
  if trace { fputs(s() + "\n", stderr) }
}

/// A finding unless `condition` holds: says which (optimized builds drop precondition messages).
func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
  if !condition {
    fputs("FINDING: \(message())\n", stderr)
    abort()
  }
}

/// Runs `body`; a thrown error must be a VMDKError.
func typed<T>(_ what: String, _ body: () throws -> T) -> T? {
  do {
    return try body()
  } catch let e as VMDKError {
    note("\(what): \(e)")
    return nil
  } catch {
    fputs("FINDING: \(what) threw an untyped error: \(error)\n", stderr)
    abort()
  }
}

/// The windows of the disk the target reads: all of a small disk, the first and last MiB of a
/// large one (a header may claim a huge capacity over a few grains).
func windows(_ capacity: UInt64) -> [(UInt64, UInt64)] {
  let whole: UInt64 = 4 << 20
  if capacity <= whole { return [(0, capacity)] }
  let piece: UInt64 = 1 << 20
  return [(0, piece), (capacity - piece, piece)]
}

func exercise(_ disk: Disk) {
  let capacity = disk.capacityBytes
  note("capacity \(capacity), links \(disk.links.count)")
  let chunk = 64 << 10
  for (start, length) in windows(capacity) {
    // Plain reads, one chunk at a time.
    var plain: [UInt8]? = []
    var at = start
    while at < start + length, plain != nil {
      let n = Int(min(UInt64(chunk), start + length - at))
      if let bytes = typed("read at \(at)", { try disk.read(at: at, count: n) }) {
        plain?.append(contentsOf: bytes)
      } else {
        plain = nil
      }
      at += UInt64(n)
    }
    // The pipelined reader (small chunks, so that the read-ahead runs ahead of the consumer).
    var piped: [UInt8] = []
    let pipedOK =
      typed("readSequentially") {
        try disk.readSequentially(offset: start, length: length, chunkBytes: 16 << 10) {
          piped.append(contentsOf: $0)
        }
      } != nil
    if let plain {
      expect(pipedOK, "readSequentially failed where plain reads succeed")
      expect(piped == plain, "readSequentially gave other bytes than plain reads")
    }
    // A consumer that fails half-way: the pipeline must stop cleanly and pass that error on.
    var seen = 0
    do {
      try disk.readSequentially(offset: start, length: length, chunkBytes: 4 << 10) { _ in
        seen += 1
        if seen == 3 { throw VMDKError(.cancelled, "consumer stops") }
      }
    } catch let e as VMDKError {
      expect(
        e.code != .cancelled || seen == 3, "readSequentially passed on a cancellation the consumer did not throw")
    } catch {
      expect(false, "readSequentially threw an untyped error: \(error)")
    }

    // Block status: adjacent runs covering the window; holes and zeros read as zeros.
    var runs: [BlockStatus] = []
    let statusOK =
      typed("blockStatus") {
        try disk.blockStatus(offset: start, length: length) { runs.append($0) }
      } != nil
    var expected = start
    for run in runs {
      expect(run.length > 0, "empty block status run")
      expect(run.start == expected, "block status runs are not adjacent")
      expected = run.start + run.length
    }
    // A call that failed half-way stops short; one that succeeded covers the window.
    if statusOK && !runs.isEmpty {
      expect(expected >= start + length, "block status ends before the window")
    }
    if let plain, expected == start + length {
      for run in runs where !run.data || run.zero {
        let lo = Int(run.start - start)
        let hi = Int(run.start + run.length - start)
        expect(plain[lo..<hi].allSatisfy { $0 == 0 }, "a hole or zero run does not read as zeros")
      }
    }
  }

  if capacity <= 4 << 20 {
    // Data ranges (the copy pipeline's reader): inside data runs, same bytes as plain reads.
    _ = typed("readDataRanges") {
      try disk.readDataRanges(chunkBytes: 16 << 10) { at, bytes in
        expect(at + UInt64(bytes.count) <= capacity, "a data range past the end of the disk")
        if let again = typed("read again", { try disk.read(at: at, count: bytes.count) }) {
          expect(again.elementsEqual(bytes), "readDataRanges gave other bytes than plain reads")
        }
      }
    }
    _ = typed("digest") { try disk.digest(.sha256) }
    _ = typed("allocatedBlocks") { try disk.allocatedBlocks() }
    _ = typed("allocatedBlocks topOnly") { try disk.allocatedBlocks(topOnly: true) }
  }
  _ = typed("check") { try disk.check() }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  guard let data else { return 0 }
  let files = splitFiles(UnsafeRawBufferPointer(start: data, count: size))
  let locator = MemoryLocator(files: files)
  var options = OpenOptions()
  options.format = .vmdk
  options.tableCacheBytes = 1 << 20
  if let disk = typed("open", { try Disk.open("/m/disk.vmdk", locator: locator, options: options) }) {
    exercise(disk)
  }
  // The top link alone, as a tool's --single-link would.
  options.singleLink = true
  if files.count > 1,
    let disk = typed("open single", { try Disk.open("/m/disk.vmdk", locator: locator, options: options) })
  {
    exercise(disk)
  }
  return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(
  _ argc: UnsafeMutablePointer<Int32>?,
  _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?
) -> Int32 {
  trace = getenvTrace()
  return 0
}

func getenvTrace() -> Bool {
  guard let p = getenv("FUZZ_TRACE") else { return false }
  return p.pointee != 0
}
