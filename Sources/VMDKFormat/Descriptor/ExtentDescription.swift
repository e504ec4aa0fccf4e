// One extent line of a descriptor: `ACCESS SECTORS TYPE ["FILENAME" [OFFSET [extra...]]]`.

/// A parsed extent line.
public struct ExtentDescription: Equatable, Sendable {
  /// Access mode (case-sensitive, as every implementation reads it).
  public enum Access: String, Sendable, CaseIterable {
    case readWrite = "RW"
    case readOnly = "RDONLY"
    case noAccess = "NOACCESS"
  }

  /// Extent type.
  public enum Kind: String, Sendable, CaseIterable {
    case flat = "FLAT"
    case sparse = "SPARSE"
    case zero = "ZERO"
    case vmfs = "VMFS"
    case vmfsSparse = "VMFSSPARSE"
    case vmfsRDM = "VMFSRDM"
    case vmfsRaw = "VMFSRAW"
    case seSparse = "SESPARSE"

    /// Whether the extent's bytes sit in a file at an offset (no tables).
    public var isFlat: Bool { self == .flat || self == .vmfs }
    /// Whether the extent is a raw device that a file copy cannot stand in for.
    public var isDevice: Bool { self == .vmfsRDM || self == .vmfsRaw }
  }

  public var access: Access
  public var sectors: UInt64
  public var kind: Kind
  /// The file, relative to the descriptor's folder or absolute; nil for ZERO.
  public var fileName: String?
  /// Sector in the file where the extent's data starts (flat extents); 0 when absent.
  public var offsetSectors: UInt64
  /// Whether an offset was written on the line.
  public var hasOffset: Bool
  /// Fields after the offset (partition UUID, device identifier), kept as found.
  public var extra: [String]

  public init(
    access: Access = .readWrite, sectors: UInt64, kind: Kind, fileName: String?,
    offsetSectors: UInt64 = 0, hasOffset: Bool? = nil, extra: [String] = []
  ) {
    self.access = access
    self.sectors = sectors
    self.kind = kind
    self.fileName = fileName
    self.offsetSectors = offsetSectors
    self.hasOffset = hasOffset ?? kind.isFlat
    self.extra = extra
  }

  /// The line as VMware writes it.
  public var line: String {
    var s = "\(access.rawValue) \(sectors) \(kind.rawValue)"
    if let fileName { s += " \"\(fileName)\"" }
    if hasOffset { s += " \(offsetSectors)" }
    for e in extra { s += " \(e)" }
    return s
  }

  static func isExtentLine(_ trimmed: Substring) -> Bool {
    for a in Access.allCases {
      if trimmed.hasPrefix(a.rawValue) {
        let rest = trimmed.dropFirst(a.rawValue.count)
        if let c = rest.first, c == " " || c == "\t" { return true }
      }
    }
    return false
  }

  /// Parses a trimmed extent line; `lineNumber` and `offset` only serve messages.
  init(parsing line: Substring, lineNumber: Int, offset: UInt64) throws {
    func fail(_ why: String) -> FormatError {
      FormatError(.invalidDescriptor, offset: offset, "descriptor line \(lineNumber): \(why): \(line.prefix(200))")
    }
    var rest = line[...]
    func token() -> Substring? {
      rest = rest.drop(while: { $0 == " " || $0 == "\t" })
      guard !rest.isEmpty else { return nil }
      let t = rest.prefix(while: { $0 != " " && $0 != "\t" })
      rest = rest.dropFirst(t.count)
      return t
    }
    /// A decimal field; nil when it is not one. All digits but too big for 64 bits is an
    /// overflow, not a syntax error: say so.
    func number(_ t: Substring, _ what: String) throws -> UInt64? {
      if let v = UInt64(t) { return v }
      guard !t.isEmpty, t.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
      throw FormatError(
        .capacityOverflow, offset: offset, "descriptor line \(lineNumber): \(what) \(t.prefix(40)) overflows 64 bits")
    }
    guard let a = token(), let access = Access(rawValue: String(a)) else { throw fail("unknown access mode") }
    guard let s = token(), let sectors = try number(s, "sector count") else {
      throw fail("sector count is not a number")
    }
    guard sectors <= Limits.maxCapacitySectors else {
      throw FormatError(
        .capacityOverflow, offset: offset,
        "descriptor line \(lineNumber): \(sectors) sectors overflow a 64-bit byte size")
    }
    guard let t = token(), let kind = Kind(rawValue: String(t)) else { throw fail("unknown extent type") }
    rest = rest.drop(while: { $0 == " " || $0 == "\t" })
    var fileName: String? = nil
    if let q = rest.first, q == "\"" || q == "'" {
      let body = rest.dropFirst()
      // The name runs to the last quote of the same kind, so names may hold spaces.
      guard let close = body.lastIndex(of: q) else { throw fail("file name has no closing quote") }
      fileName = String(body[body.startIndex..<close])
      rest = body[body.index(after: close)...]
    } else if !rest.isEmpty {
      throw fail("file name is not quoted")
    }
    var hasOffset = false
    var offsetSectors: UInt64 = 0
    var extra: [String] = []
    if let o = token() {
      guard let v = try number(o, "offset") else { throw fail("offset is not a number") }
      guard v <= Limits.maxCapacitySectors else {
        throw FormatError(.capacityOverflow, offset: offset, "descriptor line \(lineNumber): offset \(v) overflows")
      }
      hasOffset = true
      offsetSectors = v
      while let e = token() { extra.append(String(e)) }
    }
    if kind == .zero {
      guard fileName == nil else { throw fail("a ZERO extent has no file") }
    } else {
      guard let f = fileName, !f.isEmpty else { throw fail("\(kind.rawValue) extent needs a file name") }
    }
    self.init(
      access: access, sectors: sectors, kind: kind, fileName: fileName, offsetSectors: offsetSectors,
      hasOffset: hasOffset, extra: extra)
  }
}
