// CreateOptions: VMware's geometry, its uuid spelling both ways, and refused options.

import Foundation
import Testing
import VMDKBlock
import VMDKFormat
import VMDKTransport

@Suite struct CreateOptionsTests {
  @Test func geometryAsVMwareComputesIt() {
    // IDE: 16 heads, 63 sectors, cylinders capped at 16383 (the spec's 10485760-sector example).
    #expect(
      DiskGeometry.vmware(capacitySectors: 10_485_760, adapterType: "ide")
        == DiskGeometry(cylinders: 10402, heads: 16, sectors: 63))
    #expect(DiskGeometry.vmware(capacitySectors: 1 << 40 / 512, adapterType: "ide").cylinders == 16383)
    // SCSI: 64/32 below 1 GiB (ESXi's 4096-sector sample has 2 cylinders), 255/63 above, uncapped.
    #expect(
      DiskGeometry.vmware(capacitySectors: 4096, adapterType: "lsilogic")
        == DiskGeometry(cylinders: 2, heads: 64, sectors: 32))
    #expect(
      DiskGeometry.vmware(capacitySectors: 125_829_120, adapterType: "lsilogic")
        == DiskGeometry(cylinders: 7832, heads: 255, sectors: 63))
  }

  @Test func uuidBothWays() throws {
    let u = UUID()
    let text = CreateOptions.vmwareUUID(u)
    #expect(text.count == 47 && text.contains("-"))
    #expect(CreateOptions.parseVMwareUUID(text) == u)
    #expect(CreateOptions.parseVMwareUUID(u.uuidString) == u)
    #expect(CreateOptions.parseVMwareUUID("60 00 C2 9f 48 66 ae a5-2f 18 d3 03 0b a9 14") == nil)
    #expect(CreateOptions.parseVMwareUUID("zz 00 C2 9f 48 66 ae a5-2f 18 d3 03 0b a9 14 ff") == nil)
  }

  @Test func refusedOptions() {
    func refused(_ change: (inout CreateOptions) -> Void) -> Bool {
      var o = CreateOptions(type: .monolithicSparse, capacityBytes: 1 << 30)
      change(&o)
      do {
        try o.validate()
        return false
      } catch let e as VMDKError {
        return e.code == .invalidArgument
      } catch {
        return false
      }
    }
    #expect(refused { $0.capacityBytes = 0 })
    #expect(refused { $0.grainSectors = 8 })
    #expect(refused { $0.grainSectors = 100 })
    #expect(refused { $0.compressionLevel = 0 })
    #expect(
      refused {
        $0.type = .monolithicFlat
        $0.zeroedGrains = true
      })
    #expect(
      refused {
        $0.type = .twoGbMaxExtentFlat
        $0.splitSizeBytes = 1000
      })
    #expect(!refused { $0.grainSectors = 16 })
    // User values written into the descriptor (issue 10.2): digits only, no line ends.
    #expect(refused { $0.hardwareVersion = "4\nbogus" })
    #expect(refused { $0.hardwareVersion = "4\"" })
    #expect(refused { $0.hardwareVersion = "" })
    #expect(refused { $0.diskDatabase = [("ddb.x", "a\nddb.y = \"b")] })
    #expect(refused { $0.diskDatabase = [("ddb.x", "a\u{1}")] })
    #expect(refused { $0.diskDatabase = [("not ddb", "a")] })
    #expect(!refused { $0.hardwareVersion = "11" })
  }

  /// descriptor() throws a typed error, never traps: on a value with a line end set after
  /// validate, and on a text past the readers' cap.
  @Test func descriptorThrows() throws {
    var o = CreateOptions(type: .monolithicFlat, capacityBytes: 1 << 20)
    o.diskDatabase = [("ddb.x", "a\nb")]
    let extent = ExtentDescription(sectors: 2048, kind: .flat, fileName: "x-flat.vmdk")
    #expect(throws: VMDKError.self) { try o.descriptor(createType: "monolithicFlat", extents: [extent], cid: 1) }
    o.diskDatabase = (0..<1100).map { ("ddb.custom.k\($0)", String(repeating: "v", count: 1000)) }
    do {
      _ = try o.descriptor(createType: "monolithicFlat", extents: [extent], cid: 1)
      Issue.record("a descriptor past the cap was made")
    } catch let e as VMDKError {
      #expect(e.code == .invalidArgument && e.message.contains("at most"), "\(e)")
    }
    o.diskDatabase = [("ddb.x", "a \"quoted\" b")]
    let d = try o.descriptor(createType: "monolithicFlat", extents: [extent], cid: 1)
    #expect(d.ddb("ddb.x") == "a \"quoted\" b", "a quote inside reads back")
  }

  /// The kept database of a fresh image (no source) is VMware's defaults, in VMware's order.
  @Test func newDiskDatabaseOrder() throws {
    var o = CreateOptions(type: .monolithicFlat, capacityBytes: 1 << 20)
    o.adapterType = .buslogic
    let extent = ExtentDescription(sectors: 2048, kind: .flat, fileName: "x-flat.vmdk")
    let keys = try o.descriptor(createType: "monolithicFlat", extents: [extent], cid: 1).diskDatabase.map(\.key)
    #expect(
      keys == [
        "ddb.adapterType", "ddb.geometry.cylinders", "ddb.geometry.heads", "ddb.geometry.sectors",
        "ddb.longContentID", "ddb.toolsInstallType", "ddb.toolsVersion", "ddb.uuid", "ddb.virtualHWVersion",
      ])
    #expect(!o.keepsDatabase)
  }
}
