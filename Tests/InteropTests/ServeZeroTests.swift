// TRIM and WRITE_ZEROES through vmdk-serve on a qemu-made sparse child (of a base with data):
// with the zeroed-grain flag, whole grains become zeroed grains and the child's file does not
// grow; a partial trim leaves the data; NO_HOLE allocates. Without the flag, zeros are
// written where the chain does not read as zeros. qemu-img check and compare decide.

import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

@Suite(.serialized) struct ServeZeroTests {
  static func fileSize(_ path: String) throws -> UInt64 {
    try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64)
  }

  /// base (64 MiB of 0x11 in its first 40 MiB) <- child with its own data at 8 MiB.
  static func makeChain(in folder: String, zeroedGrains: Bool) throws -> String {
    let base = "\(folder)/base.vmdk"
    let child = "\(folder)/child.vmdk"
    try Qemu.create(base, size: 64 << 20)
    try Qemu.io(base, ["write -P 0x11 0 40M"])
    try Qemu.img(
      ["create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk"] + (zeroedGrains ? ["-o", "zeroed_grain=on"] : [])
        + [child])
    try Qemu.io(child, ["write -P 0x22 8M 2M"])
    return child
  }

  /// The chain as qemu reads it, as a raw file, then `commands` applied to it by qemu-io.
  static func expectedRaw(_ image: String, in folder: String, _ commands: [String]) throws -> String {
    let raw = "\(folder)/expected.raw"
    try Qemu.img("convert", "-f", "vmdk", "-O", "raw", image, raw)
    try runChecked(try requireTool("qemu-io"), ["-f", "raw"] + commands.flatMap { ["-c", $0] } + [raw])
    return raw
  }

  static func qemuIO(_ uri: String, _ commands: [String]) throws {
    try runChecked(
      try requireTool("qemu-io"), ["-f", "raw"] + commands.flatMap { ["-c", $0] } + ["-c", "flush", uri])
  }

  @Test func zeroedGrainsAllocateNothingAndHideTheParent() throws {
    try withTemporaryFolder { folder in
      let child = try Self.makeChain(in: folder, zeroedGrains: true)
      // Whole grains over the parent's data, over the child's own data, and a range that
      // starts and ends inside grains over holes (the partial ends read as zeros already).
      let zeroes = ["write -z -u 0 1M", "write -z -u 8M 1M", "write -z -u 52432896 200k"]
      // Whole grains trimmed read as zeros; a trim inside one grain changes nothing.
      let trims = ["discard 4M 512k", "discard 9441280 8k", "discard 20M 64k"]
      let expected = try Self.expectedRaw(
        child, in: folder,
        zeroes.map { $0.replacingOccurrences(of: " -u", with: "") } + ["write -z 4M 512k", "write -z 20M 64k"])
      let before = try Self.fileSize(child)
      let server = try VMDKServeProcess([child, "--read-write"])
      try Self.qemuIO(server.uri(export: ""), zeroes + trims)
      server.stop(signal: SIGTERM)
      #expect(try Self.fileSize(child) == before)
      let check = try runProcess(try requireTool("qemu-img"), ["check", "-f", "vmdk", child])
      #expect(check.status == 0, "\(check.output) \(check.errorOutput)")
      let compare = try runProcess(
        try requireTool("qemu-img"), ["compare", "-f", "vmdk", "-F", "raw", child, expected])
      #expect(compare.status == 0, "\(compare.output) \(compare.errorOutput)")
      try Qemu.io(child, ["read -P 0 0 1M", "read -P 0x11 1M 3M", "read -P 0 4M 512k", "read -P 0x22 9M 1M"])
      // No grain was left unused (the child's own grains were zeroed in place).
      let ours = try vmdkInspect("check", child)
      #expect(ours.status == 0, "\(ours.output) \(ours.errorOutput)")
      // The parent is untouched; NO_HOLE (qemu-io without -u) allocates grains.
      try Qemu.io("\(folder)/base.vmdk", ["read -P 0x11 0 40M"])
      let again = try VMDKServeProcess([child, "--read-write"])
      try Self.qemuIO(again.uri(export: ""), ["write -z 30M 256k"])
      again.stop(signal: SIGTERM)
      #expect(try Self.fileSize(child) >= before + (256 << 10))
      try Qemu.io(child, ["read -P 0 30M 256k"])
    }
  }

  @Test func withoutTheFlagZerosAreWrittenAndTrimKeepsTheData() throws {
    try withTemporaryFolder { folder in
      let child = try Self.makeChain(in: folder, zeroedGrains: false)
      let expected = try Self.expectedRaw(child, in: folder, ["write -z 0 1M", "write -z 50M 64k"])
      let before = try Self.fileSize(child)
      let server = try VMDKServeProcess([child, "--read-write"])
      try Self.qemuIO(server.uri(export: ""), ["write -z -u 0 1M", "write -z -u 50M 64k", "discard 4M 1M"])
      server.stop(signal: SIGTERM)
      // The zeros over the parent's data had to be written; over holes nothing was.
      #expect(try Self.fileSize(child) >= before + (1 << 20))
      #expect(try Self.fileSize(child) < before + (1 << 20) + (64 << 10))
      let check = try runProcess(try requireTool("qemu-img"), ["check", "-f", "vmdk", child])
      #expect(check.status == 0, "\(check.output) \(check.errorOutput)")
      let compare = try runProcess(
        try requireTool("qemu-img"), ["compare", "-f", "vmdk", "-F", "raw", child, expected])
      #expect(compare.status == 0, "\(compare.output) \(compare.errorOutput)")
    }
  }
}
