// FAT names: 8.3 short names in the OEM code page (CP437) with the NT case bits, VFAT long
// names in UTF-16 with the short-name checksum.

enum FATNames {
  /// CP437's upper half, 0x80 ... 0xFF.
  static let cp437High: [Unicode.Scalar] = Array(
    "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{A0}"
      .unicodeScalars)

  /// OEM bytes as text.
  static func oem(_ bytes: [UInt8]) -> String {
    var s = String.UnicodeScalarView()
    for b in bytes {
      if b < 0x80 {
        s.append(Unicode.Scalar(b))
      } else if Int(b - 0x80) < cp437High.count {
        s.append(cp437High[Int(b - 0x80)])
      } else {
        s.append("\u{FFFD}")
      }
    }
    return String(s)
  }

  /// The 8.3 name of a short entry (`e` = the 32 bytes), with NTRes's lower-case bits.
  static func shortName(_ e: [UInt8]) -> [UInt8] {
    var base = Array(e[0..<8])
    if base[0] == 0x05 { base[0] = 0xE5 }
    var ext = Array(e[8..<11])
    while base.last == 0x20 { base.removeLast() }
    while ext.last == 0x20 { ext.removeLast() }
    let flags = e[12]
    func lower(_ a: [UInt8]) -> [UInt8] { a.map { (0x41...0x5A).contains($0) ? $0 + 32 : $0 } }
    if flags & 0x08 != 0 { base = lower(base) }
    if flags & 0x10 != 0 { ext = lower(ext) }
    let text = oem(base) + (ext.isEmpty ? "" : "." + oem(ext))
    return Array(text.utf8)
  }

  /// The VFAT checksum of the 11 stored name bytes.
  static func checksum(_ e: [UInt8]) -> UInt8 {
    var sum: UInt8 = 0
    for i in 0..<11 { sum = ((sum & 1) << 7) &+ (sum >> 1) &+ e[i] }
    return sum
  }

  /// The 13 UTF-16 units of one long-name entry.
  static func units(_ e: [UInt8]) -> [UInt16] {
    var u: [UInt16] = []
    u.reserveCapacity(13)
    for o in stride(from: 1, to: 11, by: 2) { u.append(e.le16(o)) }
    for o in stride(from: 14, to: 26, by: 2) { u.append(e.le16(o)) }
    for o in stride(from: 28, to: 32, by: 2) { u.append(e.le16(o)) }
    return u
  }

  /// UTF-16 units up to the first 0x0000, as UTF-8 (unpaired surrogates become U+FFFD).
  static func utf8(fromUTF16 units: [UInt16]) -> [UInt8] {
    let end = units.firstIndex(of: 0) ?? units.count
    return Array(String(decoding: units[0..<end], as: UTF16.self).utf8)
  }
}
