// The head of an HTTP/1.1 response (status line and header fields), parsed from bytes a server
// sent, so nothing in it is trusted: the block is capped before it is parsed, field values that
// are numbers are parsed with overflow checks, and anything malformed is `protocolError`.

/// A response's status line and header fields.
struct HTTPResponse {
  /// The largest header block accepted (status line, fields and the blank line).
  static let maxHeaderBytes = 64 << 10
  /// The most header fields accepted.
  static let maxFields = 256

  var status: Int
  var reason: String
  /// HTTP/1.0 rather than 1.1: the connection closes unless the server said keep-alive.
  var isHTTP10: Bool
  /// Field names lower-cased, values trimmed, in the order received.
  var fields: [(name: String, value: String)]

  /// The value of the field `name` (lower-case); several fields of that name are joined with
  /// ", " as RFC 9110 allows.
  func field(_ name: String) -> String? {
    let values = fields.filter { $0.name == name }.map(\.value)
    return values.isEmpty ? nil : values.joined(separator: ", ")
  }

  /// Whether the server will keep the connection open after this response.
  var keepsAlive: Bool {
    let tokens = (field("connection") ?? "").lowercased().split(separator: ",").map {
      $0.trimmingSpaces
    }
    if tokens.contains("close") { return false }
    return !isHTTP10 || tokens.contains("keep-alive")
  }

  /// Whether the body is sent with a transfer coding (chunked), which this client does not read.
  var hasTransferCoding: Bool { field("transfer-encoding") != nil }

  /// Content-Length, or nil when absent. Several different values, or one that is not a
  /// decimal number below 2^63, are `protocolError`.
  func contentLength(url: String) throws -> UInt64? {
    let values = fields.filter { $0.name == "content-length" }.map(\.value)
    guard let first = values.first else { return nil }
    guard values.allSatisfy({ $0 == first }), let n = HTTPResponse.decimal(first[...]) else {
      throw VMDKError(.protocolError, "the server sent a bad Content-Length: \(values)", file: url)
    }
    return n
  }

  /// Content-Range `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`) as numbers; nil when absent.
  /// Malformed or inconsistent (LAST < FIRST, LAST ≥ TOTAL) is `protocolError`.
  func contentRange(url: String) throws -> (first: UInt64, last: UInt64, total: UInt64?)? {
    guard let value = field("content-range") else { return nil }
    let bad = VMDKError(.protocolError, "the server sent a bad Content-Range: \"\(value.prefix(100))\"", file: url)
    guard value.lowercased().hasPrefix("bytes ") else { throw bad }
    let spec = value.dropFirst(6)
    let halves = spec.split(separator: "/", omittingEmptySubsequences: false)
    let bounds = halves.first?.split(separator: "-", omittingEmptySubsequences: false) ?? []
    guard halves.count == 2, bounds.count == 2, let first = HTTPResponse.decimal(bounds[0]),
      let last = HTTPResponse.decimal(bounds[1]), first <= last
    else { throw bad }
    if halves[1] == "*" { return (first, last, nil) }
    guard let total = HTTPResponse.decimal(halves[1]), last < total else { throw bad }
    return (first, last, total)
  }

  /// The total of an unsatisfied range's `bytes */TOTAL` (a 416 answer), when present.
  func unsatisfiedRangeTotal() -> UInt64? {
    guard let value = field("content-range"), value.lowercased().hasPrefix("bytes */") else { return nil }
    return HTTPResponse.decimal(value.dropFirst(8))
  }

  /// A decimal number of at most 18 digits (below 10^18, well inside UInt64); nil otherwise.
  static func decimal(_ s: Substring) -> UInt64? {
    guard !s.isEmpty, s.utf8.count <= 18, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
    return UInt64(s)
  }

  // MARK: Parsing

  /// Parses a header block: `bytes` holds everything up to, not including, the blank line.
  static func parse(_ bytes: ArraySlice<UInt8>, url: String) throws -> HTTPResponse {
    func bad(_ why: String) -> VMDKError {
      VMDKError(.protocolError, "the server's response head is malformed: \(why)", file: url)
    }
    var lines = split(bytes)
    guard !lines.isEmpty else { throw bad("it is empty") }
    let statusLine = String(decoding: lines.removeFirst(), as: UTF8.self)
    let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count >= 2, parts[0] == "HTTP/1.1" || parts[0] == "HTTP/1.0", parts[1].utf8.count == 3,
      let status = Int(parts[1]), status >= 100
    else { throw bad("the status line is \"\(statusLine.prefix(100))\"") }
    guard lines.count <= maxFields else { throw bad("more than \(maxFields) header fields") }
    var fields: [(name: String, value: String)] = []
    for line in lines {
      guard let first = line.first, first != UInt8(ascii: " "), first != UInt8(ascii: "\t") else {
        throw bad("a header line starts with white space (obsolete line folding)")
      }
      guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
        throw bad("a header line has no colon: \"\(String(decoding: line.prefix(100), as: UTF8.self))\"")
      }
      let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
      guard !name.isEmpty,
        name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.!#$%&'*+^`|~".contains($0)) })
      else { throw bad("a header field name is not a token") }
      let value = String(decoding: line[line.index(after: colon)...], as: UTF8.self).trimmingSpaces
      fields.append((name, value))
    }
    let reason = parts.count > 2 ? String(parts[2]) : ""
    return HTTPResponse(status: status, reason: reason, isHTTP10: parts[0] == "HTTP/1.0", fields: fields)
  }

  /// The lines of a header block, split at CRLF (a bare LF is accepted too).
  private static func split(_ bytes: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
    bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { line in
      line.last == UInt8(ascii: "\r") ? line.dropLast() : line
    }
  }
}

extension StringProtocol {
  /// Without leading and trailing spaces and tabs.
  fileprivate var trimmingSpaces: String {
    let isSpace = { (c: Character) in c == " " || c == "\t" }
    guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else {
      return ""
    }
    return String(self[start...end])
  }
}
