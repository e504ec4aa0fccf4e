// No trap that a file's contents or a user's argument can reach (issue 10.2): the sources
// of the library and the tools hold no `try!`, no `as!` and no `fatalError`, and every
// `precondition` says, in a comment right above it, the invariant that keeps input from
// reaching it. A new one fails this test (and so CI).

import Foundation
import Testing

@Suite struct NoTrapSourceTests {
  /// The package's root: three folders above this file (Tests/VMDKBlockTests/this.swift).
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

  /// Every Swift file under Sources/ and Tools/.
  static func swiftFiles() throws -> [URL] {
    var files: [URL] = []
    for folder in ["Sources", "Tools"] {
      let base = root.appendingPathComponent(folder)
      guard let e = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil) else {
        throw TrapScanFailure("cannot list \(base.path)")
      }
      for case let url as URL in e where url.pathExtension == "swift" { files.append(url) }
    }
    return files
  }

  /// The code of a line: without string literals' contents and without a `//` comment.
  /// Block comments are tracked across lines by `inBlock`.
  static func code(_ line: Substring, inBlock: inout Bool) -> String {
    var out = ""
    var inString = false
    var i = line.startIndex
    while i < line.endIndex {
      let c = line[i]
      let next = line.index(after: i)
      let pair = next < line.endIndex ? String([c, line[next]]) : String(c)
      if inBlock {
        if pair == "*/" {
          inBlock = false
          i = line.index(after: next)
          continue
        }
      } else if inString {
        if c == "\\" && next < line.endIndex {
          i = line.index(after: next)
          continue
        }
        if c == "\"" { inString = false }
      } else if pair == "//" {
        break
      } else if pair == "/*" {
        inBlock = true
        i = line.index(after: next)
        continue
      } else if c == "\"" {
        inString = true
        out.append(c)
      } else {
        out.append(c)
      }
      i = next
    }
    return out
  }

  @Test func noTryBangAsBangOrFatalError() throws {
    let files = try Self.swiftFiles()
    #expect(files.count > 50, "found only \(files.count) Swift files under \(Self.root.path)")
    var found: [String] = []
    for url in files {
      let text = try String(contentsOf: url, encoding: .utf8)
      var inBlock = false
      for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let c = Self.code(line, inBlock: &inBlock)
        for needle in ["try!", "as! ", "fatalError("] where c.contains(needle) {
          found.append("\(url.path.dropFirst(Self.root.path.count + 1)):\(n + 1): \(needle) in \(line)")
        }
      }
    }
    #expect(found.isEmpty, "traps reachable from input:\n\(found.joined(separator: "\n"))")
  }

  @Test func everyPreconditionNamesItsInvariant() throws {
    var found: [String] = []
    for url in try Self.swiftFiles() {
      let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
      var inBlock = false
      for (n, line) in lines.enumerated() {
        let c = Self.code(line, inBlock: &inBlock)
        guard c.contains("precondition(") || c.contains("preconditionFailure(") else { continue }
        // The comment lines right above.
        var k = n - 1
        var comment = ""
        while k >= 0, lines[k].trimmingCharacters(in: .whitespaces).hasPrefix("//") {
          comment += lines[k]
          k -= 1
        }
        if !comment.lowercased().contains("invariant") {
          found.append("\(url.path.dropFirst(Self.root.path.count + 1)):\(n + 1): \(line)")
        }
      }
    }
    #expect(found.isEmpty, "preconditions without an `// Invariant: ...` comment:\n\(found.joined(separator: "\n"))")
  }

  /// One lock type that ThreadSanitizer sees (issue 11): `Locked` (a pthread mutex), never
  /// `Synchronization.Mutex`, whose lock TSan cannot see on Linux.
  @Test func everyLockIsLocked() throws {
    var found: [String] = []
    for url in try Self.swiftFiles() {
      let text = try String(contentsOf: url, encoding: .utf8)
      var inBlock = false
      for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let c = Self.code(line, inBlock: &inBlock)
        for needle in ["Mutex<", "Mutex(", "os_unfair_lock"] where c.contains(needle) {
          found.append("\(url.path.dropFirst(Self.root.path.count + 1)):\(n + 1): \(line)")
        }
      }
    }
    #expect(found.isEmpty, "locks TSan cannot see (use Locked):\n\(found.joined(separator: "\n"))")
  }

  /// The scanner itself finds what it must and skips comments and strings.
  @Test func scannerSeesCodeOnly() {
    var block = false
    #expect(Self.code("let x = try! f() // try!", inBlock: &block).contains("try!"))
    #expect(!Self.code("// try! f()", inBlock: &block).contains("try!"))
    #expect(!Self.code("let s = \"try! as! \" + t", inBlock: &block).contains("try!"))
    #expect(!Self.code("/* try! */ x", inBlock: &block).contains("try!"))
    #expect(!Self.code("/* start", inBlock: &block).contains("try!") && block)
    #expect(!Self.code("try! still comment */ y", inBlock: &block).contains("try!") && !block)
  }
}

struct TrapScanFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
