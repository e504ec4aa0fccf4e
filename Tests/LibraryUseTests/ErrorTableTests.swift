// The README's error table is the code's list of codes: every code of `VMDKError.Code.all`
// has its row with the same number and name, and the table has no row the code lacks.

import Foundation
import Testing
import VMDKBlock

@Suite struct ErrorTableTests {
  /// The rows of the README's "Error codes" table: (code, name).
  static func readmeRows() throws -> [(Int, String)] {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
    let text = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
    let section = try #require(text.range(of: "\n## Error codes\n"), "the README has no Error codes section")
    let rest = text[section.upperBound...]
    let end = rest.range(of: "\n## ")?.lowerBound ?? rest.endIndex
    var rows: [(Int, String)] = []
    for line in rest[..<end].split(separator: "\n") where line.hasPrefix("|") {
      let cells = line.split(separator: "|", omittingEmptySubsequences: false).map {
        $0.trimmingCharacters(in: .whitespaces)
      }
      guard cells.count >= 3, let code = Int(cells[1]) else { continue }
      rows.append((code, cells[2]))
    }
    return rows
  }

  @Test func theReadmeListsEveryCodeWithItsName() throws {
    let rows = try Self.readmeRows()
    #expect(rows.count > 40, "the table was not found or not parsed: \(rows)")
    let readme = Dictionary(rows.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
    #expect(readme.count == rows.count, "a code appears twice in the README")
    let code = Dictionary(VMDKError.Code.all.map { ($0.rawValue, $0.name) }, uniquingKeysWith: { a, _ in a })
    #expect(code.count == VMDKError.Code.all.count, "a code appears twice in Code.all")
    for (number, name) in code.sorted(by: { $0.key < $1.key }) {
      #expect(readme[number] == name, "code \(number) '\(name)': README says \(readme[number] ?? "nothing")")
    }
    for number in readme.keys.sorted() where code[number] == nil {
      Issue.record("the README lists code \(number) '\(readme[number] ?? "")', which the code does not have")
    }
  }
}
