// Issue 11's concurrency check: 100 disks written and read at once by 8 pthreads through the C
// library, every byte checked (Tests/VixDiskLibTests/C/stress.c), and the same program under
// ThreadSanitizer against a TSan build of libvixDiskLib.so, which must report nothing.

import Foundation
import Testing

@Suite(.timeLimit(.minutes(20))) struct VixStressTests {
  static let disks = 100
  static let threads = 8

  /// A 4 MiB disk made by qemu-img and written by qemu-io with stress.c's `base_byte` rule:
  /// 64 KiB block k holds the byte k % 250 + 1 when k is even, odd blocks stay unallocated.
  static func makeBase(_ path: String) throws {
    try Qemu.create(path, size: 4 << 20)
    try Qemu.io(path, stride(from: 0, to: 64, by: 2).map { "write -P \($0 % 250 + 1) \($0 << 16) 65536" })
  }

  /// "key=value" words of stress.c's summary line.
  static func summary(_ r: ProcessResult) -> [String: Int] {
    var d: [String: Int] = [:]
    for word in r.output.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
      let kv = word.split(separator: "=", maxSplits: 1)
      if kv.count == 2, let n = Int(kv[1]) { d[String(kv[0])] = n }
    }
    return d
  }

  static func expectClean(_ r: ProcessResult, rounds: Int, base: Bool, _ what: String) {
    let s = summary(r)
    #expect(r.status == 0, "\(what): exit \(r.status): \(r.errorOutput.suffix(2000))")
    #expect(s["errors"] == 0, "\(what): \(r.output)")
    #expect(s["ops"] == disks * threads * rounds * (base ? 5 : 3), "\(what): \(r.output)")
    // The final pass: every thread's 16 sectors of every disk (and 16 of the base per child).
    #expect(s["checkedSectors"] == disks * (threads * 16 + (base ? 16 : 0)), "\(what): \(r.output)")
    if base { #expect(s["baseSectors"] == disks * threads * rounds * 2 * 16, "\(what): \(r.output)") }
  }

  @Test func hundredDisksEightThreadsReadAndWrite() throws {
    try withTemporaryFolder { folder in
      let stress = try VixCTests.compile("stress", into: folder)
      // Children of a qemu-made base: each thread's writes, and the base's bytes read through
      // every child and through one shared handle of the base.
      let base = "\(folder)/base.vmdk"
      try Self.makeBase(base)
      try FileManager.default.createDirectory(atPath: "\(folder)/children", withIntermediateDirectories: false)
      let chained = try runProcess(stress, ["\(folder)/children", "\(Self.disks)", "\(Self.threads)", "4", base])
      Self.expectClean(chained, rounds: 4, base: true, "children of a qemu-made base")
      // A child is still a disk qemu reads: the last round's patterns over the base's bytes.
      let child = "\(folder)/children/disk042.vmdk"
      try Qemu.img("check", child)
      let raw = "\(folder)/disk042.raw"
      try Qemu.img("convert", "-O", "raw", child, raw)
      let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: raw)))
      #expect(bytes.count == 4 << 20)
      var wrong = 0
      for sector in 0..<(bytes.count / 512) {
        let want: UInt8
        if sector < Self.threads * 16 {
          let t = sector / 16
          want = UInt8(truncatingIfNeeded: 42 * 7 + t * 31 + 3 * 13 + sector % 16 + 1)
        } else {
          let k = sector / 128
          want = k % 2 == 1 ? 0 : UInt8(k % 250 + 1)
        }
        if bytes[(sector * 512)..<(sector * 512 + 512)].contains(where: { $0 != want }) { wrong += 1 }
      }
      #expect(wrong == 0, "qemu-img reads \(wrong) wrong sectors of disk042")
      // Disks made by VixDiskLib_Create.
      try FileManager.default.createDirectory(atPath: "\(folder)/created", withIntermediateDirectories: false)
      let created = try runProcess(stress, ["\(folder)/created", "\(Self.disks)", "\(Self.threads)", "2"])
      Self.expectClean(created, rounds: 2, base: false, "disks made by VixDiskLib_Create")
    }
  }

  /// The same program under ThreadSanitizer: the library built with `--sanitize=thread` into
  /// .build-tsan, stress.c compiled with the toolchain's clang (Debian's gcc 12 libtsan lacks
  /// `__tsan_memcpy`, which Swift's instrumentation calls, and one process must have one TSan
  /// runtime), and any "ThreadSanitizer" line fails the test.
  @Test func threadSanitizerReportsNothing() throws {
    let swift = try requireTool("swift")
    let clang = try requireTool("clang")
    let started = Date()
    try runChecked(
      swift,
      [
        "build", "--package-path", VixCTests.root, "--sanitize=thread", "--product", "vixDiskLib", "--scratch-path",
        "\(VixCTests.root)/.build-tsan",
      ])
    let built = Date().timeIntervalSince(started)
    let library = "\(VixCTests.root)/.build-tsan/debug/libvixDiskLib.so"
    // The library really is instrumented: it calls TSan's entry points.
    let image = try Data(contentsOf: URL(fileURLWithPath: library))
    #expect(image.range(of: Data("__tsan_func_entry".utf8)) != nil, "\(library) is not built with TSan")
    // The runtime folder of the toolchain: libdispatch and BlocksRuntime, which the static TSan
    // runtime's libdispatch interceptors need at link time.
    let runtime = URL(fileURLWithPath: swift).resolvingSymlinksInPath().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("lib/swift/linux").path
    try withTemporaryFolder { folder in
      let stress = "\(folder)/stress-tsan"
      try runChecked(
        clang,
        [
          "-fsanitize=thread", "-g", "-O1", "-Wall", "-I", "\(VixCTests.root)/Sources/CVixDiskLib/include",
          "\(VixCTests.root)/Tests/VixDiskLibTests/C/stress.c", "-o", stress, library, "-L", runtime, "-ldispatch",
          "-lBlocksRuntime", "-lpthread",
          "-Wl,-rpath,\(URL(fileURLWithPath: library).deletingLastPathComponent().path)",
          "-Wl,-rpath,\(runtime)",
        ])
      let env = "/usr/bin/env"
      // The detector is on: a plain race in the program is reported.
      let race = try runProcess(env, ["TSAN_OPTIONS=halt_on_error=1", stress, "race"])
      #expect(race.errorOutput.contains("ThreadSanitizer: data race"), "TSan did not see a planted race")
      let base = "\(folder)/base.vmdk"
      try Self.makeBase(base)
      try FileManager.default.createDirectory(atPath: "\(folder)/children", withIntermediateDirectories: false)
      let runStarted = Date()
      let r = try runProcess(
        env,
        ["TSAN_OPTIONS=halt_on_error=1", stress, "\(folder)/children", "\(Self.disks)", "\(Self.threads)", "1", base])
      let ran = Date().timeIntervalSince(runStarted)
      let reports = r.errorOutput.split(separator: "\n").filter { $0.contains("ThreadSanitizer") }
      #expect(reports.isEmpty, "\(reports.count) TSan line(s): \(r.errorOutput.suffix(4000))")
      Self.expectClean(r, rounds: 1, base: true, "under TSan")
      print("VixStressTests: TSan build \(Int(built)) s, TSan stress run \(Int(ran)) s")
    }
  }
}
