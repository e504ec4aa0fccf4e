// The text descriptor: header keys, extent lines and the disk database (DDB). It keeps every
// line as found (comments, unknown keys, order, line ends) so that rewriting one value leaves
// the rest untouched.

/// A parsed VMDK descriptor.
public struct Descriptor: Equatable, Sendable {
  /// One line of the descriptor, kept with its original text.
  public enum Line: Equatable, Sendable {
    case blank(String)
    case comment(String)
    /// `key=value` in the header section.
    case header(key: String, value: String, raw: String)
    case extent(ExtentDescription, raw: String)
    /// `ddb.key = "value"`; `key` keeps its `ddb.` prefix.
    case ddb(key: String, value: String, raw: String)

    var raw: String {
      switch self {
      case .blank(let r), .comment(let r): return r
      case .header(_, _, let r), .extent(_, let r), .ddb(_, _, let r): return r
      }
    }
  }

  public var lines: [Line]
  /// "\r\n" when the text used CRLF line ends, else "\n".
  public var lineEnding: String
  /// Whether the original text ended with a line end.
  public var endsWithNewline: Bool

  /// `CID` and `parentCID` value meaning "no parent".
  public static let noParentCID: UInt32 = 0xFFFF_FFFF

  public init(lines: [Line] = [], lineEnding: String = "\n", endsWithNewline: Bool = true) {
    self.lines = lines
    self.lineEnding = lineEnding
    self.endsWithNewline = endsWithNewline
  }

  /// Parses descriptor text. Text after the first NUL is ignored (embedded descriptors are
  /// NUL-padded). `baseOffset` is where the text starts in its file, for messages.
  public init<C: Collection>(parsing bytes: C, baseOffset: UInt64 = 0) throws
  where C.Element == UInt8 {
    guard UInt64(bytes.count) <= Limits.maxDescriptorBytes else {
      throw FormatError(
        .descriptorTooLarge, offset: baseOffset,
        "descriptor of \(bytes.count) bytes is larger than the cap of \(Limits.maxDescriptorBytes)")
    }
    let text = Descriptor.decode(bytes.prefix(while: { $0 != 0 }))
    var lines: [Line] = []
    var crlf = 0
    var lf = 0
    var offset = baseOffset
    let rawLines = Descriptor.splitLines(text, omittingEmpty: false)
    for (index, rawLine) in rawLines.enumerated() {
      let lineNumber = index + 1
      let lineOffset = offset
      offset += UInt64(rawLine.utf8.count + 1)
      if index == rawLines.count - 1 && rawLine.isEmpty { break }
      var body = rawLine
      if body.hasSuffix("\r") {
        crlf += 1
        body = body.dropLast()
      } else if index < rawLines.count - 1 {
        lf += 1
      }
      let trimmed = Descriptor.trim(body)
      if trimmed.isEmpty {
        lines.append(.blank(String(body)))
      } else if trimmed.hasPrefix("#") {
        lines.append(.comment(String(body)))
      } else if ExtentDescription.isExtentLine(trimmed) {
        let e = try ExtentDescription(parsing: trimmed, lineNumber: lineNumber, offset: lineOffset)
        lines.append(.extent(e, raw: String(body)))
      } else if let eq = trimmed.firstIndex(of: "=") {
        let key = String(Descriptor.trim(trimmed[..<eq]))
        let value = Descriptor.unquote(Descriptor.trim(trimmed[trimmed.index(after: eq)...]))
        guard !key.isEmpty, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
        else {
          throw FormatError(
            .invalidDescriptor, offset: lineOffset,
            "descriptor line \(lineNumber): not a key: \(trimmed.prefix(80))")
        }
        if key.lowercased().hasPrefix("ddb.") {
          lines.append(.ddb(key: key, value: value, raw: String(body)))
        } else {
          lines.append(.header(key: key, value: value, raw: String(body)))
        }
      } else {
        throw FormatError(
          .invalidDescriptor, offset: lineOffset,
          "descriptor line \(lineNumber): neither a comment, a key nor an extent: \(trimmed.prefix(80))")
      }
    }
    self.lines = lines
    self.lineEnding = crlf > lf ? "\r\n" : "\n"
    // By scalar: `hasSuffix("\n")` is false for a CRLF text, whose last Character is "\r\n".
    self.endsWithNewline = text.unicodeScalars.last == "\n"
    // Hex values must parse; a descriptor with a damaged CID is not a descriptor we trust.
    for key in ["CID", "parentCID"] {
      if let v = header(key), Descriptor.parseCID(v) == nil {
        throw FormatError(.invalidDescriptor, offset: baseOffset, "\(key)=\(v.prefix(40)) is not a 32-bit hex number")
      }
    }
    if let v = header("version"), Int(v) == nil {
      throw FormatError(.invalidDescriptor, offset: baseOffset, "version=\(v.prefix(40)) is not a number")
    }
  }

  // MARK: Values

  /// A header value by key (case-insensitive, as VMware's specification says).
  public func header(_ key: String) -> String? {
    let k = key.lowercased()
    for case .header(let key, let value, _) in lines where key.lowercased() == k { return value }
    return nil
  }

  /// Sets a header value in place, or adds it after the last header line.
  public mutating func setHeader(_ key: String, _ value: String, quoted: Bool = false) {
    let raw = quoted ? "\(key)=\"\(value)\"" : "\(key)=\(value)"
    let k = key.lowercased()
    if let i = lines.firstIndex(where: {
      if case .header(let key, _, _) = $0 { return key.lowercased() == k }
      return false
    }) {
      lines[i] = .header(key: key, value: value, raw: raw)
      return
    }
    let last = lines.lastIndex(where: {
      if case .header = $0 { return true }
      return false
    })
    lines.insert(.header(key: key, value: value, raw: raw), at: last.map { $0 + 1 } ?? min(1, lines.count))
  }

  /// Removes a header key.
  public mutating func removeHeader(_ key: String) {
    let k = key.lowercased()
    lines.removeAll {
      if case .header(let key, _, _) = $0 { return key.lowercased() == k }
      return false
    }
  }

  /// The disk database, in file order; keys keep their `ddb.` prefix.
  public var diskDatabase: [(key: String, value: String)] {
    lines.compactMap {
      if case .ddb(let k, let v, _) = $0 { return (k, v) }
      return nil
    }
  }

  /// A disk database value; `key` with or without the `ddb.` prefix, case-insensitive.
  public func ddb(_ key: String) -> String? {
    let k = (key.lowercased().hasPrefix("ddb.") ? key : "ddb." + key).lowercased()
    for case .ddb(let key, let value, _) in lines where key.lowercased() == k { return value }
    return nil
  }

  /// Sets a disk database value in place (VMware's `ddb.key = "value"` form), or appends it.
  public mutating func setDDB(_ key: String, _ value: String) {
    let full = key.lowercased().hasPrefix("ddb.") ? key : "ddb." + key
    let line = Line.ddb(key: full, value: value, raw: "\(full) = \"\(value)\"")
    if let i = lines.firstIndex(where: {
      if case .ddb(let k, _, _) = $0 { return k.lowercased() == full.lowercased() }
      return false
    }) {
      lines[i] = line
    } else {
      lines.append(line)
    }
  }

  /// Removes a disk database key; returns whether it was there.
  @discardableResult
  public mutating func removeDDB(_ key: String) -> Bool {
    let full = (key.lowercased().hasPrefix("ddb.") ? key : "ddb." + key).lowercased()
    let before = lines.count
    lines.removeAll {
      if case .ddb(let k, _, _) = $0 { return k.lowercased() == full }
      return false
    }
    return lines.count != before
  }

  /// The extent lines, in order.
  public var extents: [ExtentDescription] {
    lines.compactMap {
      if case .extent(let e, _) = $0 { return e }
      return nil
    }
  }

  /// Replaces the extent lines (keeps their position).
  public mutating func setExtents(_ extents: [ExtentDescription]) {
    let first = lines.firstIndex(where: {
      if case .extent = $0 { return true }
      return false
    })
    lines.removeAll {
      if case .extent = $0 { return true }
      return false
    }
    let at = first ?? lines.count
    lines.insert(contentsOf: extents.map { .extent($0, raw: $0.line) }, at: at)
  }

  public var version: Int? { header("version").flatMap { Int($0) } }
  public var cid: UInt32? { header("CID").flatMap(Descriptor.parseCID) }
  public var parentCID: UInt32? { header("parentCID").flatMap(Descriptor.parseCID) }
  public var createType: String? { header("createType") }
  /// The createType, classified (nil when the header is missing).
  public var createTypeKind: CreateType? { createType.map(CreateType.init) }
  public var parentFileNameHint: String? { header("parentFileNameHint") }
  public var encoding: String? { header("encoding") }
  /// Sum of the extents' sectors: the link's capacity. Nil when it overflows.
  public var capacitySectors: UInt64? {
    var total: UInt64 = 0
    for e in extents {
      let (t, o) = total.addingReportingOverflow(e.sectors)
      if o || t > Limits.maxCapacitySectors { return nil }
      total = t
    }
    return total
  }

  /// The text, with the original line ends.
  public func serialized() -> String {
    var s = lines.map(\.raw).joined(separator: lineEnding)
    if endsWithNewline && !lines.isEmpty { s += lineEnding }
    return s
  }

  // MARK: Helpers

  /// Parses an 8-digit (or shorter, as qemu writes) hex CID.
  public static func parseCID(_ s: String) -> UInt32? {
    let t = s.hasPrefix("0x") || s.hasPrefix("0X") ? String(s.dropFirst(2)) : s
    guard !t.isEmpty, t.count <= 8 else { return nil }
    return UInt32(t, radix: 16)
  }

  /// A CID as VMware writes it: 8 lowercase hex digits.
  public static func formatCID(_ cid: UInt32) -> String {
    let h = String(cid, radix: 16)
    return String(repeating: "0", count: 8 - h.count) + h
  }

  /// Whether `bytes` look like the start of a descriptor: the first line that is neither blank
  /// nor a comment is a `version=` line (qemu's probe), or a comment line is the VMware
  /// signature `# Disk DescriptorFile`.
  public static func looksLikeDescriptor(_ bytes: [UInt8]) -> Bool {
    let head = decode(bytes.prefix(4096).prefix(while: { $0 != 0 }))
    for line in splitLines(head, omittingEmpty: true).prefix(64) {
      let t = trim(line[...])
      if t.isEmpty { continue }
      if t.hasPrefix("#") {
        let sig = t.lowercased().replacingOccurrences(" ", "")
        if sig == "#diskdescriptorfile" { return true }
        continue
      }
      let lower = t.lowercased()
      if lower.hasPrefix("version") {
        let rest = trim(lower.dropFirst("version".count))
        return rest.hasPrefix("=")
      }
      return false
    }
    return false
  }

  /// Splits `text` at every LF. `String.split(separator: "\n")` cannot do it: Swift reads CRLF
  /// as one Character that is not "\n", so a CRLF descriptor came out as a single line.
  static func splitLines(_ text: String, omittingEmpty: Bool) -> [Substring] {
    text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: omittingEmpty).map { Substring($0) }
  }

  /// Drops leading and trailing blanks. By scalar: stepping back over a Substring's last
  /// Character costs time proportional to the Substring, so trimming trailing blanks one
  /// Character at a time was quadratic (1 MiB of spaces after "RW" took minutes).
  static func trim(_ s: Substring) -> Substring {
    let blank: (Unicode.Scalar) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\u{0C}" || $0 == "\u{0B}" }
    let scalars = s.unicodeScalars
    guard let first = scalars.firstIndex(where: { !blank($0) }), let last = scalars.lastIndex(where: { !blank($0) })
    else { return s[s.endIndex...] }
    return Substring(scalars[first...last])
  }

  static func unquote(_ s: Substring) -> String {
    if s.count >= 2, let f = s.first, f == "\"" || f == "'", s.last == f {
      return String(s.dropFirst().dropLast())
    }
    if let f = s.first, f == "\"" || f == "'" { return String(s.dropFirst()) }
    return String(s)
  }

  /// UTF-8 when valid; otherwise each byte as its Latin-1 character, so no byte is lost.
  static func decode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    if let s = String(validating: bytes, as: UTF8.self) { return s }
    var s = ""
    s.unicodeScalars.append(contentsOf: bytes.map { Unicode.Scalar($0) })
    return s
  }
}

extension String {
  fileprivate func replacingOccurrences(_ a: String, _ b: String) -> String {
    split(separator: Character(a), omittingEmptySubsequences: false).joined(separator: b)
  }
}
