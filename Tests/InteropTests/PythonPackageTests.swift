// The Python package (python/, over libvixDiskLib through ctypes) under pytest, against the
// library this build made: digests, info, allocated blocks and error codes compared with
// vmdk-inspect's (python/tests/test_vmdk.py). Part of the README's test command.

import Foundation
import Testing

@Suite(.timeLimit(.minutes(20))) struct PythonPackageTests {
  /// A Python 3 that can import pytest: Debian's (python3-pytest, Tools/setup.sh), or the
  /// first python3 on PATH.
  static func pythonWithPytest() throws -> String? {
    var candidates = ["/usr/bin/python3"]
    if let onPath = try? requireTool("python3") { candidates.append(onPath) }
    for python in candidates where FileManager.default.isExecutableFile(atPath: python) {
      if let r = try? runProcess(python, ["-c", "import pytest"]), r.status == 0 { return python }
    }
    return nil
  }

  @Test func pytestPassesAgainstTheBuiltLibrary() throws {
    guard let python = try Self.pythonWithPytest() else {
      if ProcessInfo.processInfo.environment["CI"] == "true" {
        Issue.record("no python3 with pytest (Debian: python3-pytest); needed when CI=true")
      }
      return
    }
    let library = try builtToolPath("libvixDiskLib.so")
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().path
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "\(root)/python/tests"]
    var env = ProcessInfo.processInfo.environment
    env["VIXDISKLIB"] = library
    env["VMDK_INSPECT"] = try vmdkInspectPath()
    env["VMDK_TEST_IMAGES"] = "\(root)/TestImages"
    env["PYTHONPATH"] = "\(root)/python"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    process.environment = env
    let out = Pipe()
    process.standardOutput = out
    process.standardError = out
    try process.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(process.terminationStatus == 0, "pytest failed:\n\(text)")
    // The run must have tested something: at least the 20 cases test_vmdk.py holds.
    let passed = text.split(separator: "\n").last { $0.contains(" passed") } ?? ""
    let count = Int(passed.split(separator: " ").first { Int($0) != nil } ?? "") ?? 0
    #expect(count >= 20, "pytest ran \(count) tests: \(passed)")
  }
}
