// Helpers shared by the format-layer tests: asserting a FormatError's kind, offset and message
// in one call, and reading the fuzz fixtures kept next to this file.

import Foundation
import Testing
import VMDKFormat

/// Runs `body`, expects it to throw a `FormatError` of `kind`, and checks the offset and the
/// message when given. Returns the error for further checks.
@discardableResult
func expectFormatError(
  _ kind: FormatError.Kind, offset: UInt64? = nil, mentioning text: String? = nil,
  sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> FormatError? {
  let error = #expect(throws: FormatError.self, sourceLocation: sourceLocation) { try body() }
  guard let error else { return nil }
  #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
  if let offset {
    #expect(error.offset == offset, "\(error)", sourceLocation: sourceLocation)
  }
  if let text {
    #expect(error.message.contains(text), "\(error.message)", sourceLocation: sourceLocation)
  }
  return error
}

/// A test argument shown by its name: byte arrays and long texts would otherwise fill the
/// test log.
struct Named<Value: Sendable>: Sendable, CustomTestStringConvertible {
  let name: String
  let value: Value
  init(_ name: String, _ value: Value) {
    self.name = name
    self.value = value
  }
  var testDescription: String { name }
}

/// Bytes of an ASCII/UTF-8 string.
func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// The fuzz findings kept as fixtures (Tests/VMDKFormatTests/Fixtures), found from this
/// source file's path so no resource bundle is needed.
enum Fixtures {
  static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

  /// Every fixture's file name, sorted (empty when the folder is missing).
  static var names: [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
  }

  static func load(_ name: String) throws -> [UInt8] {
    Array(try Data(contentsOf: folder.appendingPathComponent(name)))
  }
}
