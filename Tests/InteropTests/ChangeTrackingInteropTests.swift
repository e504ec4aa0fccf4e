// Change tracking with the tools and with a writer that does not track: `vmdk-disk track
// on|off` through the built binary, `vmdk-inspect info` (text and JSON) showing the change ID,
// and qemu-io writing a tracked disk (its CID changes), after which older IDs answer
// "tracking was reset", never a list that misses qemu's write.

import Foundation
import Testing
import VMDKBlock
import VMDKTransport

@Suite(.timeLimit(.minutes(20))) struct ChangeTrackingInteropTests {
  @Test func trackOnOffThroughTheTools() throws {
    try withTemporaryFolder { folder in
      let image = "\(folder)/disk.vmdk"
      try Qemu.create(image, size: 64 << 20)
      let vmdkDisk = try builtToolPath("vmdk-disk")
      let on = try runChecked(vmdkDisk, ["track", "on", image])
      #expect(on.output.hasPrefix("change tracking: on, change ID: "))
      #expect(FileManager.default.fileExists(atPath: "\(folder)/disk-changes.vtrack"))
      let id = try #require(try Disk.open(image).currentChangeID())
      #expect(on.output.contains(id))
      let info = try vmdkInspect("info", image).output
      #expect(info.contains("change tracking: on, change ID: \(id)\n"))
      let json =
        try JSONSerialization.jsonObject(with: try vmdkInspect("info", "--json", image).stdout) as? [String: Any]
      let tracking = try #require(json?["changeTracking"] as? [String: Any])
      #expect(tracking["enabled"] as? Bool == true)
      #expect(tracking["changeID"] as? String == id)
      #expect(tracking["blockSize"] as? NSNumber == 65536)

      let off = try runChecked(vmdkDisk, ["track", "off", image])
      #expect(off.output == "change tracking: off\n")
      #expect(!FileManager.default.fileExists(atPath: "\(folder)/disk-changes.vtrack"))
      #expect(try vmdkInspect("info", image).output.contains("change tracking: off\n"))

      // Failures: exit 1 and one line on stderr.
      let missing = try runProcess(vmdkDisk, ["track", "on", "\(folder)/nope.vmdk"])
      #expect(missing.status == 1)
      #expect(missing.errorOutput.split(separator: "\n").count == 1)
      #expect(missing.output.isEmpty)
      let raw = "\(folder)/raw.img"
      FileManager.default.createFile(atPath: raw, contents: Data(count: 1 << 20))
      let refused = try runProcess(vmdkDisk, ["track", "on", raw])
      #expect(refused.status == 1)
      #expect(refused.errorOutput.contains("not supported"))
    }
  }

  /// qemu-io does not track, but it changes the CID: the old ID answers trackingReset; a
  /// writable open restarts tracking and its new ID sees our next write only.
  @Test func qemuWriteResetsTracking() throws {
    try withTemporaryFolder { folder in
      let image = "\(folder)/disk.vmdk"
      try Qemu.create(image, size: 16 << 20)
      try Qemu.io(image, ["write -P 0x11 0 1M"])
      try ChangeTracking.setEnabled(true, path: image)
      do {
        let d = try Disk.open(
          image,
          options: {
            var o = OpenOptions()
            o.writable = true
            return o
          }())
        try d.write(at: 5 << 20, [UInt8](repeating: 7, count: 4096))
        try d.close()
      }
      let old = try #require(try Disk.open(image).currentChangeID())
      #expect(try Disk.open(image).queryChangedDiskAreas(since: old).changedArea.isEmpty)
      try Qemu.io(image, ["write -P 0x22 8M 64k"])
      expectVMDKError(.trackingReset) { _ = try Disk.open(image).queryChangedDiskAreas(since: old) }
      #expect(try vmdkInspect("info", image).output.contains("change tracking: on, needs a restart"))
      let d = try Disk.open(
        image,
        options: {
          var o = OpenOptions()
          o.writable = true
          return o
        }())
      let fresh = try #require(try d.currentChangeID())
      try d.write(at: 12 << 20, [1])
      try d.close()
      #expect(
        try Disk.open(image).queryChangedDiskAreas(since: fresh).changedArea == [
          ChangedArea(start: 12 << 20, length: 65536)
        ])
      expectVMDKError(.trackingReset) { _ = try Disk.open(image).queryChangedDiskAreas(since: old) }
      // qemu still reads what we wrote: the sidecar is ours alone.
      try Qemu.img("check", image)
    }
  }
}
