// Percent-encoding (RFC 3986) for the locations the transports take: URL path segments,
// NBD export names and socket paths.

enum PercentEncoding {
  /// `%XX` escapes decoded as UTF-8; nil for a bad escape, a NUL (encoded or not: a path or
  /// an export name with one would be cut short by the C calls it reaches) or invalid UTF-8.
  static func decoded<S: StringProtocol>(_ s: S) -> String? {
    var bytes: [UInt8] = []
    var it = Array(s.utf8)[...]
    while let b = it.popFirst() {
      if b == 0 { return nil }
      guard b == UInt8(ascii: "%") else {
        bytes.append(b)
        continue
      }
      guard it.count >= 2, let hi = hexValue(it.removeFirst()), let lo = hexValue(it.removeFirst()) else { return nil }
      let v = hi << 4 | lo
      if v == 0 { return nil }
      bytes.append(v)
    }
    return String(validating: bytes, as: UTF8.self)
  }

  private static func hexValue(_ b: UInt8) -> UInt8? {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
    default: nil
    }
  }

  /// A segment with everything but RFC 3986's unreserved characters and a few safe
  /// sub-delimiters percent-encoded (spaces, "%", "?", "#", "/" and non-ASCII included).
  static func encodedSegment(_ segment: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var out: [UInt8] = []
    for b in segment.utf8 {
      let plain =
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
        || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || "-._~!$&'()*+,;=:@".utf8.contains(b)
      if plain {
        out.append(b)
      } else {
        out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 15)]]
      }
    }
    return String(decoding: out, as: UTF8.self)
  }

  /// A path (or an export name) encoded segment by segment, its slashes kept.
  static func encodedPath(_ path: String) -> String {
    path.split(separator: "/", omittingEmptySubsequences: false).map { encodedSegment(String($0)) }
      .joined(separator: "/")
  }
}
