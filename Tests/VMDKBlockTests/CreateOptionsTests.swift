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
  }
}
