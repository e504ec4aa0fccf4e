// The option parsers alone: GO/INFO payloads, meta context queries, option headers; every
// message also cut short at every byte, which must throw, never trap.

import NBDServer
import Testing

struct OptionParserTests {
  static func goPayload(_ name: String, _ infos: [UInt16]) -> [UInt8] {
    var w = NBDWriter()
    w.u32(UInt32(name.utf8.count))
    w.string(name)
    w.u16(UInt16(infos.count))
    for i in infos { w.u16(i) }
    return w.bytes
  }

  @Test func goPayloadParses() throws {
    let q = try NBDExportQuery(parsing: Self.goPayload("disk", [3, 1]))
    #expect(q.name == "disk")
    #expect(q.infoRequests == [3, 1])
  }

  @Test func goPayloadTruncatedEverywhereThrows() {
    let bytes = Self.goPayload("disk", [3, 1])
    for n in 0..<bytes.count {
      #expect(throws: NBDParseError.self) { try NBDExportQuery(parsing: Array(bytes[0..<n])) }
    }
  }

  @Test func goPayloadHugeNameLengthThrows() {
    var w = NBDWriter()
    w.u32(0xffff_ffff)
    #expect(throws: NBDParseError.tooLong(field: "export name", length: 0xffff_ffff, limit: 4096)) {
      try NBDExportQuery(parsing: w.bytes)
    }
  }

  @Test func goPayloadTrailingBytesThrow() {
    #expect(throws: NBDParseError.self) { try NBDExportQuery(parsing: Self.goPayload("a", []) + [0]) }
  }

  @Test func metaContextQueryParses() throws {
    var w = NBDWriter()
    w.u32(4)
    w.string("disk")
    w.u32(2)
    for q in ["base:allocation", "qemu:"] {
      w.u32(UInt32(q.utf8.count))
      w.string(q)
    }
    let q = try NBDMetaContextQuery(parsing: w.bytes)
    #expect(q.exportName == "disk")
    #expect(q.queries == ["base:allocation", "qemu:"])
    for n in 0..<w.bytes.count {
      #expect(throws: NBDParseError.self) { try NBDMetaContextQuery(parsing: Array(w.bytes[0..<n])) }
    }
  }

  @Test func contextSelection() {
    let all = ["base:allocation", "qemu:allocation-depth"]
    #expect(nbdSelectContexts([], available: all, listing: true) == all)
    #expect(nbdSelectContexts([], available: all, listing: false) == [])
    #expect(nbdSelectContexts(["qemu:"], available: all, listing: true) == ["qemu:allocation-depth"])
    #expect(nbdSelectContexts(["qemu:"], available: all, listing: false) == [])
    #expect(nbdSelectContexts(["base:allocation", "x:y"], available: all, listing: false) == ["base:allocation"])
  }

  @Test func optionHeader() throws {
    var w = NBDWriter()
    w.u64(NBDProtocol.optionMagic)
    w.u32(7)
    w.u32(12)
    let h = try NBDOptionHeader(parsing: w.bytes)
    #expect(h == NBDOptionHeader(option: 7, length: 12))
    var bad = w.bytes
    bad[0] ^= 1
    #expect(throws: NBDParseError.self) { try NBDOptionHeader(parsing: bad) }
  }
}
