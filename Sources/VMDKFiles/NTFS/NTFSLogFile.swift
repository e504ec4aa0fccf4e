// $LogFile's restart pages, read only to learn whether the journal has anything to replay (it
// is never replayed). Windows leaves a restart area with no client in use, or the clean flag,
// after a clean shutdown; ntfs-3g empties the whole file (every byte 0xFF) when it mounts.
// Hibernation, fast startup and a crash leave a client in use: metadata may then be
// inconsistent until Windows replays the journal.
import VMDKBlock

enum NTFSLogFile {
  /// How much of $LogFile `isClean` looks at: both restart pages at the largest page size.
  static let restartBytes = 2 << 16

  /// True when the restart pages in `bytes` (the start of $LogFile) say there is nothing to
  /// replay; false when a client is in use, chkdsk marked the page, or nothing can be read.
  static func isClean(_ bytes: [UInt8]) -> Bool {
    guard !bytes.isEmpty else { return false }
    if bytes.allSatisfy({ $0 == 0xFF }) { return true }
    let b = NTFSBytes(bytes)
    // The first restart page is at 0, the second one system page further.
    let page = Int(b.u32(16))
    guard page >= 512, page <= 1 << 16, page & (page - 1) == 0 else { return false }
    var found = false
    for o in [0, page] {
      guard b.has(o, 32) else { continue }
      let magic = b.u32(o)
      if magic == 0x4448_4B43 { return false }  // "CHKD"
      guard magic == 0x5254_5352 else { continue }  // "RSTR"
      let area = o + Int(b.u16(o + 24))
      guard area >= o + 30, b.has(area, 16) else { return false }
      let clientInUse = b.u16(area + 12)
      let flags = b.u16(area + 14)
      guard clientInUse == 0xFFFF || flags & 0x0002 != 0 else { return false }
      found = true
    }
    return found
  }
}
