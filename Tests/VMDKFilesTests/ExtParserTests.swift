// Unit tests of the ext parsers over hand-made bytes: superblock checks, extent nodes,
// directory blocks, inode times and inline data.
import Testing
import VMDKBlock

@testable import VMDKFiles

@Suite struct ExtParserTests {
  @Test func crc32cMatchesTheCastagnoliCheckValue() {
    // The standard check value of CRC-32C over "123456789" is 0xE3069283 (with the final
    // inversion, which ext4 leaves out).
    #expect(~ExtCRC32C.update(~0, Array("123456789".utf8)) == 0xE306_9283)
  }
}
