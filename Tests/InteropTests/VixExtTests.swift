// The open VixDiskLib's extensions (vixDiskLibExt.h) from C: Tests/VixDiskLibTests/C/ext.c is
// compiled against the built libvixDiskLib.so, and its answers are compared with vmdk-inspect's
// JSON of the same disks (`changed --json`, `map --json`, `info --json`) and with what the
// writes it made must give.

import Foundation
import Testing

@Suite(.timeLimit(.minutes(10))) struct VixExtTests {
  struct Output {
    let values: [String: String]
    let lines: [String]
    /// The lines starting with `prefix + " "`, split into their fields.
    func rows(_ prefix: String) -> [[String]] {
      lines.filter { $0.hasPrefix(prefix + " ") }.map { $0.split(separator: " ").dropFirst().map(String.init) }
    }
  }

  static func ext(_ program: String, _ arguments: [String]) throws -> Output {
    let r = try runProcess(program, arguments)
    #expect(r.status == 0, "ext \(arguments): \(String(decoding: r.stderr, as: UTF8.self))")
    let lines = String(decoding: r.stdout, as: UTF8.self).split(separator: "\n").map(String.init)
    var values: [String: String] = [:]
    for line in lines {
      // `key=value` (the value may hold spaces); rows are `word field ...` with no '=' first.
      guard let eq = line.firstIndex(of: "="), !line[..<eq].contains(" ") else { continue }
      values[String(line[..<eq])] = String(line[line.index(after: eq)...])
    }
    return Output(values: values, lines: lines)
  }

  static func json(_ arguments: String...) throws -> Any {
    try JSONSerialization.jsonObject(with: try inspect(arguments).stdout)
  }

  static func inspect(_ arguments: [String]) throws -> ProcessResult {
    try runChecked(try vmdkInspectPath(), arguments)
  }

  /// `changed --json`'s answer as (startOffset, length, [[start, length]]).
  static func inspectChanged(_ disk: String, _ id: String, start: UInt64? = nil) throws -> (
    UInt64, UInt64, [[UInt64]]
  ) {
    var args = ["changed", disk, "--since", id, "--json"]
    if let start { args += ["--start-offset", "\(start)"] }
    let j = try JSONSerialization.jsonObject(with: try inspect(args).stdout) as? [String: Any] ?? [:]
    let areas = (j["changedArea"] as? [[String: Any]] ?? []).map {
      [($0["start"] as? NSNumber)?.uint64Value ?? 0, ($0["length"] as? NSNumber)?.uint64Value ?? 0]
    }
    return (
      (j["startOffset"] as? NSNumber)?.uint64Value ?? 1, (j["length"] as? NSNumber)?.uint64Value ?? 1, areas
    )
  }

  static func extChanged(_ ext: String, _ disk: String, _ id: String, start: UInt64? = nil) throws -> (
    UInt64, UInt64, [[UInt64]]
  ) {
    let o = try Self.ext(ext, ["changed", disk, id] + (start.map { ["\($0)"] } ?? []))
    #expect(o.values["code"] == "0", "\(o.lines)")
    let areas = o.rows("area").map { $0.compactMap { UInt64($0) } }
    #expect(o.values["num"] == "\(areas.count)")
    return (UInt64(o.values["startOffset"] ?? "") ?? 0, UInt64(o.values["length"] ?? "") ?? 0, areas)
  }

  /// The 64 KiB tracking blocks that byte range [offset, offset + length) touches, merged.
  static func blocks(_ writes: [(UInt64, UInt64)]) -> [[UInt64]] {
    let bs: UInt64 = 64 << 10
    var marked = Set<UInt64>()
    for (offset, length) in writes { for b in (offset / bs)...((offset + length - 1) / bs) { marked.insert(b) } }
    var out: [[UInt64]] = []
    for b in marked.sorted() {
      if let last = out.last, last[0] + last[1] == b * bs {
        out[out.count - 1][1] += bs
      } else {
        out.append([b * bs, bs])
      }
    }
    return out
  }

  @Test func changedAreasMatchVmdkInspectAndTheWrites() throws {
    try withTemporaryFolder { folder in
      let ext = try VixCTests.compile("ext", into: folder)
      let disk = "\(folder)/tracked.vmdk"
      try Qemu.create(disk, size: 64 << 20)
      // Tracking off: no change ID.
      let off = try Self.ext(ext, ["changeid", disk])
      #expect(off.values["code"] == "6" && off.values["text"]?.contains("tracking is off") == true, "\(off.lines)")
      try runChecked(try builtToolPath("vmdk-disk"), ["track", "on", disk])
      let info = try Self.json("info", "--json", disk) as? [String: Any]
      let id0 = try #require((info?["changeTracking"] as? [String: Any])?["changeID"] as? String)
      let got = try Self.ext(ext, ["changeid", disk])
      #expect(got.values["id"] == id0, "\(got.lines)")
      #expect(got.values["small"] == "24" && got.values["required"] == "\(id0.utf8.count + 1)")

      // Writes through VixDiskLib_Write (sector, count): 8 KiB at 1 MiB; 150 KiB across three
      // blocks at 10000 sectors; then, after id1, 512 bytes at 60 MiB.
      let w1: (UInt64, UInt64) = (2048, 16)
      let w2: (UInt64, UInt64) = (10000, 300)
      let w3: (UInt64, UInt64) = (122880, 1)
      for (s, n) in [w1, w2] {
        #expect(try Self.ext(ext, ["write", disk, "\(s)", "\(n)", "171"]).values["code"] == "0")
      }
      let id1 = try #require(try Self.ext(ext, ["changeid", disk]).values["id"])
      #expect(id1 != id0)
      #expect(try Self.ext(ext, ["write", disk, "\(w3.0)", "\(w3.1)", "205"]).values["code"] == "0")

      let bytes = { (w: (UInt64, UInt64)) in (w.0 * 512, w.1 * 512) }
      for (id, writes) in [(id0, [w1, w2, w3]), (id1, [w3])] {
        let mine = try Self.extChanged(ext, disk, id)
        let theirs = try Self.inspectChanged(disk, id)
        #expect(mine == theirs, "since \(id)")
        #expect(mine.0 == 0 && mine.1 == 64 << 20)
        #expect(mine.2 == Self.blocks(writes.map(bytes)), "since \(id): \(mine.2)")
      }
      // From a start offset inside the second write's blocks: clipped there.
      let start: UInt64 = 10000 * 512 + 4096
      let clipped = try Self.extChanged(ext, disk, id0, start: start)
      #expect(clipped == (try Self.inspectChanged(disk, id0, start: start)))
      #expect(clipped.0 == start && clipped.1 == (64 << 20) - start)
      #expect(clipped.2.first?[0] == start, "\(clipped.2)")
      // "*": every allocated area, as vmdk-inspect says.
      let all = try Self.extChanged(ext, disk, "*")
      #expect(all == (try Self.inspectChanged(disk, "*")))
      #expect(all.2.count >= 2)

      // Errors: a malformed ID, another disk's ID, a start past the end (3); a writer that does
      // not track (qemu-io) makes the old IDs unanswerable (20020), never a wrong list.
      let other = "\(folder)/other.vmdk"
      try Qemu.create(other, size: 1 << 20)
      try runChecked(try builtToolPath("vmdk-disk"), ["track", "on", other])
      let otherID = try #require(try Self.ext(ext, ["changeid", other]).values["id"])
      for (id, start) in [("not-an-id", "0"), (id0, "\((64 << 20) + 1)")] {
        let r = try Self.ext(ext, ["changed", disk, id, start])
        #expect(r.values["code"] == "3" && r.values["null"] == "1", "\(id) \(start): \(r.lines)")
      }
      // qemu's disks have no ddb.uuid, so tracking names them with its own: another disk's ID
      // is one this tracking never handed out (20020; 3 when both disks carry a ddb.uuid).
      let foreign = try Self.ext(ext, ["changed", disk, otherID])
      #expect(
        ["3", "20020"].contains(foreign.values["code"] ?? "") && foreign.values["null"] == "1", "\(foreign.lines)")
      #expect(try runProcess(try vmdkInspectPath(), ["changed", disk, "--since", otherID]).status == 2)
      try Qemu.io(disk, ["write -P 0x22 8M 64k"])
      let reset = try Self.ext(ext, ["changed", disk, id1])
      #expect(reset.values["code"] == "20020", "\(reset.lines)")
      #expect(reset.values["text"]?.contains("full backup is needed") == true)
      #expect(try runProcess(try vmdkInspectPath(), ["changed", disk, "--since", id1, "--json"]).status == 2)
    }
  }

  /// `map --json` as [offset, length, flags, depth] in sectors, ext's shape.
  static func inspectMap(_ disk: String, offset: UInt64? = nil, length: UInt64? = nil) throws -> [[UInt64]] {
    var args = ["map", "--json", disk]
    if let offset, let length { args += ["--offset", "\(offset)", "--length", "\(length)"] }
    let list = try JSONSerialization.jsonObject(with: try inspect(args).stdout) as? [[String: Any]] ?? []
    return list.map { e in
      let flag = { (k: String, bit: UInt64) in (e[k] as? Bool ?? false) ? bit : 0 }
      return [
        ((e["start"] as? NSNumber)?.uint64Value ?? 1) / 512, ((e["length"] as? NSNumber)?.uint64Value ?? 1) / 512,
        flag("zero", 1) | flag("data", 2) | flag("present", 4), (e["depth"] as? NSNumber)?.uint64Value ?? 99,
      ]
    }
  }

  static func extStatus(_ o: Output) -> [[UInt64]] {
    #expect(o.values["code"] == "0", "\(o.lines)")
    return o.rows("extent").map { $0.compactMap { UInt64($0) } }
  }

  @Test func blockStatusMatchesVmdkInspectMap() throws {
    try withTemporaryFolder { folder in
      let ext = try VixCTests.compile("ext", into: folder)
      // A 3-link chain: data and a zeroed grain in the base, data in the middle, data over
      // both and a zeroed grain hiding base data at the top; holes between.
      let base = "\(folder)/base.vmdk"
      let mid = "\(folder)/mid.vmdk"
      let top = "\(folder)/top.vmdk"
      try Qemu.create(base, size: 32 << 20, options: ["zeroed_grain=on"])
      try Qemu.io(base, ["write -P 1 0 2M", "write -z 8M 1M", "write -P 2 20M 64k"])
      try Qemu.img("create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", base, "-F", "vmdk", mid)
      try Qemu.io(mid, ["write -P 3 1M 2M", "write -P 4 12M 512k"])
      try Qemu.img("create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", mid, "-F", "vmdk", top)
      try Qemu.io(top, ["write -P 5 1536k 1M", "write -z 0 64k", "write -P 6 31M 1M"])
      let images = [top, mid, base, "\(VixCTests.root)/TestImages/vdiskmanager/monolithicSparse.vmdk"]
      for image in images {
        let whole = Self.extStatus(try Self.ext(ext, ["status", image]))
        let map = try Self.inspectMap(image)
        #expect(whole == map, "\(image)")
        #expect(!whole.isEmpty)
        // In calls of at most 1 and 3 extents, continuing from the end of each list.
        for max in [1, 3] {
          let o = try Self.ext(ext, ["statusall", image, "\(max)"])
          #expect(Self.extStatus(o) == whole, "\(image) in lists of \(max)")
          #expect(o.values["stuck"] == nil && o.values["overfull"] == nil, "\(o.lines)")
          #expect(Int(o.values["calls"] ?? "") == (whole.count + max - 1) / max)
        }
      }
      let chain = Self.extStatus(try Self.ext(ext, ["status", top]))
      // The chain's status has every kind at every depth the writes made.
      #expect(Set(chain.map { $0[3] }) == [0, 1, 2], "\(chain)")
      #expect(chain.contains { $0[2] == 5 && $0[3] == 0 }, "no zeroed grain at the top: \(chain)")
      #expect(chain.contains { $0[2] == 1 }, "no hole: \(chain)")
      #expect(chain.first == [0, 128, 5, 0], "\(chain)")
      // A range in the middle, not on extent boundaries, equals map --offset --length.
      let part = Self.extStatus(try Self.ext(ext, ["status", top, "3000", "30000"]))
      #expect(part == (try Self.inspectMap(top, offset: 3000 * 512, length: 30000 * 512)))
      #expect(part.first?[0] == 3000 && part.map { $0[1] }.reduce(0, +) == 30000)
      // Past the end: clipped, then refused.
      let tail = Self.extStatus(try Self.ext(ext, ["status", top, "\((32 << 11) - 8)", "1000"]))
      #expect(tail.map { $0[1] }.reduce(0, +) == 8)
      let beyond = try Self.ext(ext, ["status", top, "\((32 << 11) + 1)", "1"])
      #expect(beyond.values["code"] == "16007", "\(beyond.lines)")
    }
  }

  @Test func restoreGuardAnswerMatchesTheDescriptors() throws {
    try withTemporaryFolder { folder in
      let ext = try VixCTests.compile("ext", into: folder)
      let vmdkDisk = try builtToolPath("vmdk-disk")
      let base = "\(folder)/base.vmdk"
      try Qemu.create(base, size: 8 << 20)
      // Nothing on top yet: a writable Open is allowed.
      let none = try Self.ext(ext, ["snapshots", base])
      #expect(none.values["code"] == "0" && none.values["count"] == "0" && none.values["writeOpen"] == "0")
      #expect(none.values["required"] == "1")
      // stale.vmdk: made, then qemu-io writes the base (a new CID): no longer a snapshot.
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "\(folder)/stale.vmdk")
      try Qemu.io(base, ["write -P 9 0 64k"])
      // Two current snapshots (ours and qemu's), a grandchild, an unrelated disk, a symlink.
      try runChecked(vmdkDisk, ["snapshot", base, "\(folder)/snap-a.vmdk"])
      try Qemu.img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "\(folder)/snap-b.vmdk")
      try runChecked(vmdkDisk, ["snapshot", "\(folder)/snap-a.vmdk", "\(folder)/grandchild.vmdk"])
      try Qemu.create("\(folder)/other.vmdk", size: 1 << 20)
      try FileManager.default.createSymbolicLink(
        atPath: "\(folder)/link.vmdk", withDestinationPath: "\(folder)/snap-b.vmdk")

      // The oracle: vmdk-inspect info --json of every .vmdk file (not links) in the folder.
      let baseInfo = try Self.json("info", "--json", base) as? [String: Any]
      let cid = try #require(baseInfo?["cid"] as? String)
      var expected: [String] = []
      for name in try FileManager.default.contentsOfDirectory(atPath: folder).sorted() where name.hasSuffix(".vmdk") {
        let path = "\(folder)/\(name)"
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        guard attributes[.type] as? FileAttributeType == .typeRegular, name != "base.vmdk" else { continue }
        let j = try Self.json("info", "--json", "--single-link", path) as? [String: Any]
        if j?["parentCID"] as? String == cid, j?["parentFileNameHint"] as? String == "base.vmdk" {
          expected.append(path)
        }
      }
      #expect(expected == ["\(folder)/snap-a.vmdk", "\(folder)/snap-b.vmdk"], "the setup is not what it should be")
      let two = try Self.ext(ext, ["snapshots", base])
      #expect(two.values["code"] == "0" && two.values["count"] == "2", "\(two.lines)")
      #expect(two.rows("snapshot").map { $0.joined(separator: " ") } == expected)
      #expect(two.values["countOnly"] == "2")
      let required = expected.map { $0.utf8.count + 1 }.reduce(1, +)
      #expect(two.values["small"] == "24" && two.values["required"] == "\(required)")
      // The guard's answer is what a writable Open does: 20021, naming both.
      #expect(two.values["writeOpen"] == "20021", "\(two.lines)")
      #expect(two.values["text"]?.contains("snap-a.vmdk, snap-b.vmdk") == true)
      // snap-a has one snapshot (the grandchild); the top has none.
      #expect(try Self.ext(ext, ["snapshots", "\(folder)/snap-a.vmdk"]).values["count"] == "1")
      #expect(try Self.ext(ext, ["snapshots", "\(folder)/grandchild.vmdk"]).values["count"] == "0")
      // Deleting the snapshots frees the base for writing.
      for name in ["grandchild", "snap-a", "snap-b", "link"] {
        try FileManager.default.removeItem(atPath: "\(folder)/\(name).vmdk")
      }
      let freed = try Self.ext(ext, ["snapshots", base])
      #expect(freed.values["count"] == "0" && freed.values["writeOpen"] == "0", "\(freed.lines)")
      let missing = try Self.ext(ext, ["snapshots", "\(folder)/missing.vmdk"])
      #expect(missing.values["small"] == "4" && missing.values["code"] == "4")
    }
  }
}
