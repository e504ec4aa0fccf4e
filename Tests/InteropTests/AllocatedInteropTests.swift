// allocatedBlocks and changedBlocks against qemu-img on images qemu made: the allocated
// ranges equal qemu-img map's data ranges rounded out to chunks, and the ranges changed since
// an ancestor equal the union of what qemu-img map reports present in each link above it,
// each link opened alone (backing: null). The tool's JSON says what the library says.

import Foundation
import Testing
import VMDKBlock

/// qemu-img map of one link opened alone: its backing file replaced by nothing, so that
/// ranges it does not have are "present": false at depth 0.
private func mapAlone(_ image: String) throws -> [MapRecord] {
  let spec = #"json:{"driver":"vmdk","file":{"driver":"file","filename":"\#(image)"},"backing":null}"#
  return try MapRecord.parse(try Qemu.img("map", "--output=json", "-U", spec).stdout)
}

/// Ranges of `records` that `include` selects, rounded out to `unit` bytes (the end clipped
/// to `capacity`) and merged: what the library's answer must be.
private func merged(
  _ records: [MapRecord], unit: UInt64, capacity: UInt64, _ include: (MapRecord) -> Bool
) -> [ChangedArea] {
  var out: [ChangedArea] = []
  for r in records.sorted(by: { $0.start < $1.start }) where include(r) {
    let start = r.start / unit * unit
    let end = min(capacity, (r.start + r.length + unit - 1) / unit * unit)
    if let last = out.last, start <= last.start + last.length {
      out[out.count - 1].length = max(last.start + last.length, end) - last.start
    } else {
      out.append(ChangedArea(start: start, length: end - start))
    }
  }
  return out
}

/// The `ranges` (allocated) or `changedArea` (changed) of the tool's JSON.
private func toolRanges(_ output: Data, key: String) throws -> [ChangedArea] {
  guard let object = try JSONSerialization.jsonObject(with: output) as? [String: Any],
    let list = object[key] as? [[String: Any]]
  else { throw ToolFailure("no \(key) in \(String(decoding: output, as: UTF8.self))") }
  return try list.map { r in
    guard let s = r["start"] as? NSNumber, let l = r["length"] as? NSNumber else {
      throw ToolFailure("range without start or length: \(r)")
    }
    return ChangedArea(start: s.uint64Value, length: l.uint64Value)
  }
}

private let mib: UInt64 = 1 << 20

@Suite(.timeLimit(.minutes(20))) struct AllocatedInteropTests {
  /// Single images qemu made, written at odd offsets: monolithicSparse (with zeroed-grain
  /// entries from `write -z`), twoGbMaxExtentSparse and monolithicFlat.
  @Test(arguments: [
    ["subformat=monolithicSparse", "zeroed_grain=on"], ["subformat=twoGbMaxExtentSparse"],
    ["subformat=monolithicFlat"],
  ])
  func singleImageMatchesQemuMap(options: [String]) throws {
    try withTemporaryFolder { folder in
      let image = "\(folder)/disk.vmdk"
      try Qemu.create(image, size: 96 * mib, options: options)
      try Qemu.io(
        image,
        [
          "write -q -P 0x11 1000 3000", "write -q -P 0x22 \(10 * mib + 333) 70000", "write -q -P 0x33 \(40 * mib) 1M",
          "write -q -P 0x44 \(96 * mib - 512) 512", "write -q -z \(40 * mib + 128 * 1024) 128k",
        ])
      let disk = try Disk.open(image)
      let qemu = try Qemu.map(image)
      for chunk: UInt64 in [128, 2048, 1 << 20] {
        let expected = merged(qemu, unit: chunk * 512, capacity: disk.capacityBytes) { $0.data }
        #expect(try disk.allocatedBlocks(chunkSectors: chunk) == expected, "\(options) chunk \(chunk)")
      }
      let tool = try vmdkInspect("allocated", image, "--json", "--chunk-sectors", "2048")
      #expect(try toolRanges(tool.stdout, key: "ranges") == (try disk.allocatedBlocks(chunkSectors: 2048)))
    }
  }

  /// A 3-link chain made with `qemu-img create -b`, written at odd offsets in every link,
  /// with zeroed grains in the middle one over the base's data.
  @Test func threeLinkChain() throws {
    try withTemporaryFolder { folder in
      let base = "\(folder)/base.vmdk"
      let mid = "\(folder)/mid.vmdk"
      let top = "\(folder)/top.vmdk"
      try Qemu.create(base, size: 128 * mib)
      try Qemu.io(
        base,
        [
          "write -q -P 0x01 0 3M", "write -q -P 0x02 \(20 * mib + 4097) 100000",
          "write -q -P 0x03 \(100 * mib + 77) 1000",
        ])
      try Qemu.img("create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "base.vmdk", "-F", "vmdk", mid)
      try Qemu.io(
        mid,
        [
          "write -q -P 0x11 \(1 * mib + 5000) 9000", "write -q -z \(2 * mib) 128k",
          "write -q -P 0x12 \(64 * mib - 1) 2",
        ])
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk", top)
      try Qemu.io(
        top,
        [
          "write -q -P 0x21 \(20 * mib) 512", "write -q -P 0x22 \(127 * mib + 999) 4000",
          "write -q -P 0x23 \(64 * mib) 1M",
        ])

      let disk = try Disk.open(top)
      #expect(disk.links.count == 3)
      let capacity = disk.capacityBytes
      let whole = try Qemu.map(top)
      let topAlone = try mapAlone(top)
      let midAlone = try mapAlone(mid)

      // Allocated: the whole chain, and the top link alone.
      for chunk: UInt64 in [128, 2048] {
        #expect(
          try disk.allocatedBlocks(chunkSectors: chunk)
            == merged(whole, unit: chunk * 512, capacity: capacity) { $0.data })
        #expect(
          try disk.allocatedBlocks(chunkSectors: chunk, topOnly: true)
            == merged(topAlone, unit: chunk * 512, capacity: capacity) { $0.data })
      }
      // The zeroed grains hide the base's data: not allocated in the chain.
      #expect(whole.contains { $0.start <= 2 * mib && $0.start + $0.length > 2 * mib && $0.zero && !$0.data })

      // Changed since an ancestor: exact ranges present in the links above it.
      let sinceMid = merged(topAlone, unit: 512, capacity: capacity) { $0.present }
      let sinceBase = merged(topAlone + midAlone, unit: 512, capacity: capacity) { $0.present }
      #expect(try disk.changedBlocks(sinceAncestor: mid) == sinceMid)
      #expect(try disk.changedBlocks(sinceAncestor: base) == sinceBase)
      #expect(try disk.changedBlocks(sinceAncestor: 2) == sinceBase)
      // The same from the combined map: ranges answered by a link above the ancestor.
      #expect(sinceBase == merged(whole, unit: 512, capacity: capacity) { $0.present && $0.depth < 2 })
      // The zeroed grains are a change.
      #expect(sinceBase.contains { $0.start <= 2 * mib && $0.start + $0.length >= 2 * mib + 128 * 1024 })

      // The tool says the same.
      let allocated = try vmdkInspect("allocated", top, "--json")
      #expect(try toolRanges(allocated.stdout, key: "ranges") == (try disk.allocatedBlocks()))
      let allocatedTop = try vmdkInspect("allocated", top, "--top", "--json")
      #expect(try toolRanges(allocatedTop.stdout, key: "ranges") == (try disk.allocatedBlocks(topOnly: true)))
      let changed = try vmdkInspect("changed", top, "--base", base, "--json")
      #expect(try toolRanges(changed.stdout, key: "changedArea") == sinceBase)
      let json = try #require(try JSONSerialization.jsonObject(with: changed.stdout) as? [String: Any])
      #expect((json["startOffset"] as? NSNumber)?.uint64Value == 0)
      #expect((json["length"] as? NSNumber)?.uint64Value == capacity)
      let allocatedJSON = try #require(try JSONSerialization.jsonObject(with: allocated.stdout) as? [String: Any])
      #expect((allocatedJSON["chunkSectors"] as? NSNumber)?.uint64Value == 128)
      #expect(
        (allocatedJSON["allocatedBytes"] as? NSNumber)?.uint64Value
          == (try disk.allocatedBlocks()).reduce(0) { $0 + $1.length })
    }
  }

  /// The tool's failures: a base outside the chain, `--since` while change tracking is a
  /// placeholder (or a real error), and an image that does not open: exit 2, one line.
  @Test func toolFailures() throws {
    try withTemporaryFolder { folder in
      let base = "\(folder)/base.vmdk"
      let top = "\(folder)/top.vmdk"
      try Qemu.create(base, size: 8 * mib)
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", top)
      let tool = try vmdkInspectPath()
      for arguments in [
        ["changed", top, "--base", "\(folder)/other.vmdk"], ["changed", top, "--base", top],
        ["allocated", "\(folder)/missing.vmdk"], ["changed", "\(folder)/missing.vmdk", "--base", base],
      ] {
        let r = try runProcess(tool, arguments)
        #expect(r.status == 2, "\(arguments): \(r.errorOutput)")
        #expect(r.stdout.isEmpty)
        #expect(r.errorOutput.split(separator: "\n").count == 1, "\(r.errorOutput)")
      }
      // --since: the answer of change tracking, whatever it is today; a failure is one line
      // and exit 2.
      let since = try runProcess(tool, ["changed", top, "--since", "*", "--json"])
      if since.status == 0 {
        #expect(try JSONSerialization.jsonObject(with: since.stdout) is [String: Any])
      } else {
        #expect(since.status == 2)
        #expect(since.errorOutput.split(separator: "\n").count == 1, "\(since.errorOutput)")
      }
      // Usage errors: both or neither of --base and --since, a bad chunk size.
      for arguments in [
        ["changed", top], ["changed", top, "--base", base, "--since", "*"],
        ["allocated", top, "--chunk-sectors", "100"],
      ] {
        let r = try runProcess(tool, arguments)
        #expect(r.status == 64, "\(arguments): \(r.errorOutput)")
      }
    }
  }
}
