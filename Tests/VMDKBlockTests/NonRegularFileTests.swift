// Files that are not files: a named pipe, a Unix socket and a character device (/dev/zero,
// reached through a symbolic link in the disk's folder, with external paths allowed) as the
// image itself, as an extent and as a parent. Each must give a typed error within a second;
// before the fix a FIFO blocked the open for ever and /dev/zero read as an endless disk.

import Dispatch
import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

/// Makes a special file named `name` in `folder` and returns its path.
private enum Special: String, CaseIterable, CustomTestStringConvertible {
  case namedPipe, unixSocket, devZero
  var testDescription: String { rawValue }

  func make(_ name: String, in folder: TempFolder) throws -> String {
    let path = folder.path(name)
    switch self {
    case .namedPipe:
      try #require(mkfifo(path, 0o644) == 0, "mkfifo: \(String(cString: strerror(errno)))")
    case .unixSocket:
      let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
      try #require(fd >= 0)
      var address = sockaddr_un()
      address.sun_family = sa_family_t(AF_UNIX)
      let bytes = Array(path.utf8)
      try #require(bytes.count < MemoryLayout.size(ofValue: address.sun_path))
      withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
      }
      let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
      }
      try #require(bound == 0, "bind: \(String(cString: strerror(errno)))")
      // The socket file stays after the descriptor closes; nobody listens.
      close(fd)
    case .devZero:
      try folder.symlink(name, to: "/dev/zero")
    }
    return path
  }
}

/// Runs `body` on another thread and fails when it has not ended within `seconds` (so that a
/// reader that blocks fails the test instead of hanging the suite). Returns the error thrown.
private func endsInTime(seconds: Double, _ body: @escaping @Sendable () throws -> Void) -> (
  error: (any Error)?, elapsed: Double
) {
  final class Box: @unchecked Sendable { var error: (any Error)? }
  let box = Box()
  let done = DispatchSemaphore(value: 0)
  let start = Date()
  Thread.detachNewThread {
    do { try body() } catch { box.error = error }
    done.signal()
  }
  guard done.wait(timeout: .now() + seconds) == .success else {
    Issue.record("did not end within \(seconds) s")
    return (nil, seconds)
  }
  return (box.error, Date().timeIntervalSince(start))
}

@Suite struct NonRegularFileTests {
  static var external: OpenOptions {
    var o = OpenOptions()
    o.allowExternalPaths = true
    return o
  }

  private func expectTypedErrorWithinASecond(_ path: String, _ special: Special) {
    let (error, elapsed) = endsInTime(seconds: 5) {
      let disk = try Disk.open(path, options: Self.external)
      _ = try disk.read(at: 0, count: 4096)
      _ = try disk.digest()
    }
    #expect(elapsed < 1, "\(special): took \(elapsed) s")
    let e = error as? VMDKError
    #expect(e != nil, "\(special): \(String(describing: error))")
    #expect(e?.code == .fileAccess || e?.code == .cannotOpenParent, "\(String(describing: e))")
  }

  @Test(arguments: Special.allCases)
  fileprivate func asTheImage(_ special: Special) throws {
    let folder = try TempFolder()
    let path = try special.make("disk.vmdk", in: folder)
    expectTypedErrorWithinASecond(path, special)
  }

  @Test(arguments: Special.allCases)
  fileprivate func asAnExtent(_ special: Special) throws {
    let folder = try TempFolder()
    _ = try special.make("disk-flat.vmdk", in: folder)
    let path = try folder.write(
      "disk.vmdk", text: descriptorText(createType: "monolithicFlat", extents: [#"RW 2048 FLAT "disk-flat.vmdk" 0"#]))
    expectTypedErrorWithinASecond(path, special)
    let e = try? #require(throws: VMDKError.self) { try Disk.open(path, options: Self.external) }
    #expect(e?.file?.hasSuffix("disk-flat.vmdk") == true, "\(String(describing: e))")
    #expect(e?.message.contains("not a regular file") == true, "\(String(describing: e))")
  }

  @Test(arguments: Special.allCases)
  fileprivate func asAParent(_ special: Special) throws {
    let folder = try TempFolder()
    _ = try special.make("parent.vmdk", in: folder)
    var child = SparseImage()
    child.descriptor = nil
    child.fill([1])
    try folder.write("child-s.vmdk", child.build().bytes)
    let path = try folder.write(
      "child.vmdk",
      text: descriptorText(
        createType: "monolithicSparse", parentCID: "12345678", parentHint: "parent.vmdk",
        extents: [#"RW 4096 SPARSE "child-s.vmdk""#]))
    expectTypedErrorWithinASecond(path, special)
  }
}
