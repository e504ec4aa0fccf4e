// Resolving a file named by a descriptor (an extent, a parent) against the folder of the
// descriptor, and refusing names that leave that folder unless the caller allows it.

import VMDKTransport

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

enum PathResolver {
  /// The folder part of `path` ("." when there is none).
  static func folder(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
  }

  /// The last component of `path`.
  static func baseName(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return path }
    return String(path[path.index(after: slash)...])
  }

  /// The canonical absolute path (symlinks resolved), or nil when it does not exist.
  static func realPath(_ path: String) -> String? {
    guard let p = realpath(path, nil) else { return nil }
    defer { free(p) }
    return String(cString: p)
  }

  /// Resolves `name` (as written in `descriptorPath`) to a path to open. `what` names the role
  /// ("extent", "parent") for messages. A missing file throws `missing`'s code.
  static func resolve(
    _ name: String, from descriptorPath: String, allowExternal: Bool, what: String,
    missingCode: VMDKError.Code = .fileNotFound
  ) throws -> String {
    var n = name
    if n.contains("\\") && !n.contains("/") {
      n = n.split(separator: "\\", omittingEmptySubsequences: false).joined(separator: "/")
    }
    let dir = folder(of: descriptorPath)
    let candidate = n.hasPrefix("/") ? n : (dir == "/" ? "/" + n : dir + "/" + n)
    guard let real = realPath(candidate) else {
      throw VMDKError(
        missingCode, "\(what) file \"\(name)\" named by \(descriptorPath) does not exist (looked for \(candidate))",
        file: candidate)
    }
    if !allowExternal {
      let realDir = realPath(dir) ?? dir
      let prefix = realDir.hasSuffix("/") ? realDir : realDir + "/"
      guard real.hasPrefix(prefix) else {
        throw VMDKError(
          .pathOutsideFolder,
          "\(what) file \"\(name)\" resolves to \(real), outside the descriptor's folder \(realDir); allow external paths to open it",
          file: descriptorPath)
      }
    }
    return candidate
  }
}
