// `vmdk-files ls`, `stat`, `cat` and `find`.

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKFiles

#if canImport(Glibc)
  import Glibc
#endif

struct Ls: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "ls", abstract: "List a folder (default: the root).")
  @OptionGroup var image: ImageOptions
  @Argument(help: "The folder or file.") var path: String = "/"
  @Flag(name: .short, help: "Long listing: mode, links, size, modification time.") var l = false
  @Flag(name: .customShort("R"), help: "Recursive.") var recursive = false
  @Flag(help: "Also list NTFS alternate data streams, as PATH:STREAM (other file systems have none).")
  var streams = false

  /// The named streams of one entry, when asked for and the file system has them.
  func namedStreams(_ fs: any FileSystem, _ id: FileID) throws -> [NamedStream] {
    guard streams else { return [] }
    return try fs.streams(id)
  }

  func run() throws {
    try runReporting {
      let (_, fs) = try image.fileSystem()
      warn(fs, json: image.json)
      let id = try fs.lookup(path)
      let a = try fs.stat(id)
      // JSON is one array, so it is built whole; lines go out as the walk meets the names.
      var rows: [(path: String, entry: DirectoryEntry)] = []
      var out = OutputBuffer()
      func emit(_ path: String, _ entry: DirectoryEntry) throws {
        if image.json {
          rows.append((path, entry))
        } else {
          try line(fs, path, entry, &out)
        }
      }
      let base = path.hasSuffix("/") ? path : path + "/"
      let baseBytes = Array(base.utf8)
      let plain = !image.json && !l && !streams
      var failed = false
      if a.type != .directory {
        try emit(path, DirectoryEntry(name: Array(path.utf8.split(separator: 47).last ?? []), id: id, type: a.type))
      } else if recursive {
        func onError(_ p: [UInt8], _ e: any Error) throws {
          try out.flush()
          printError("\(toolName): \(base)\(String(decoding: p, as: UTF8.self)): \(e)")
          failed = true
        }
        if plain {
          // The common case, names only: each lent path straight to the buffer.
          try fs.walkPaths(from: id, onError: onError) { path, _, _, _, _ in
            try out.line(baseBytes, path)
            return true
          }
        } else {
          try fs.walk(from: id, onError: onError) { item in
            try emit(base + item.displayPath, item.entry)
            return true
          }
        }
      } else {
        for e in try fs.list(id) { try emit(base + e.displayName, e) }
      }
      if image.json { try json(fs, rows) }
      try out.flush()
      if failed && !image.json { throw ExitCode(1) }
    }
  }

  func json(_ fs: any FileSystem, _ rows: [(path: String, entry: DirectoryEntry)]) throws {
    var items: [JSON] = []
    for r in rows {
      var kv: [(String, JSON)] = [("path", .string(r.path)), ("name", .string(r.entry.displayName))]
      let a = try fs.stat(r.entry.id)
      kv += attributesJSON(a)
      if a.type == .symlink {
        kv.append(("target", .string(String(decoding: try fs.readlink(a.id), as: UTF8.self))))
      }
      if streams {
        let list = try namedStreams(fs, r.entry.id).map { s -> JSON in
          .object([("name", .string(s.displayName)), ("size", .uint(s.size))])
        }
        kv.append(("streams", .array(list)))
      }
      items.append(.object(kv))
    }
    printJSON(.array(items))
  }

  /// One name's line (and its streams' lines), plain or long.
  func line(_ fs: any FileSystem, _ path: String, _ entry: DirectoryEntry, _ out: inout OutputBuffer) throws {
    let shown = recursive ? path : entry.displayName
    let named = try namedStreams(fs, entry.id)
    guard l else {
      try out.line(shown)
      for s in named { try out.line("\(shown):\(s.displayName)") }
      return
    }
    let a = try fs.stat(entry.id)
    var line = "\(modeString(a)) \(a.linkCount) "
    if let u = a.uid, let g = a.gid { line += "\(u) \(g) " }
    line += "\(a.size) \(isoTime(a.modificationTime) ?? "-") \(shown)"
    if a.type == .symlink { line += " -> " + String(decoding: try fs.readlink(a.id), as: UTF8.self) }
    try out.line(line)
    for s in named { try out.line("stream \(s.size) \(shown):\(s.displayName)") }
  }
}

struct Stat: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "stat", abstract: "A file's attributes (on NTFS also of PATH:STREAM).")
  @OptionGroup var image: ImageOptions
  @Argument(help: "The path (on NTFS also PATH:STREAM: its size is the stream's).") var path: String

  func run() throws {
    try runReporting {
      let (_, fs) = try image.fileSystem()
      let (id, stream) = try lookupStream(fs, path)
      var a = try fs.stat(id)
      var kv: [(String, JSON)] = [("path", .string(path)), ("fileSystem", .string(fs.kind))]
      if let stream {
        a.size = stream.size
        kv.append(("stream", .string(stream.displayName)))
      }
      kv += attributesJSON(a)
      if a.type == .symlink { kv.append(("target", .string(String(decoding: try fs.readlink(id), as: UTF8.self)))) }
      if image.json {
        printJSON(.object(kv))
      } else {
        for (k, v) in kv {
          let text: String
          switch v {
          case .string(let s): text = s
          case .null: continue
          default: text = v.render(pretty: false)
          }
          print("\(k): \(text)")
        }
      }
    }
  }
}

struct Cat: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cat",
    abstract: "Write a file's bytes to standard output.",
    discussion: "On NTFS, PATH:STREAM writes the named (alternate) data stream STREAM of PATH.")
  @OptionGroup var image: ImageOptions
  @Argument(help: "The path (on NTFS also PATH:STREAM).") var path: String

  func run() throws {
    try runReporting {
      let (_, fs) = try image.fileSystem()
      let (id, stream) = try lookupStream(fs, path)
      let a = try fs.stat(id)
      var size = a.size
      if let stream {
        size = stream.size
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var pos: UInt64 = 0
        while pos < size {
          let n = try buffer.withUnsafeMutableBytes {
            try fs.readStream(id, named: stream.displayName, at: pos, into: $0)
          }
          guard n > 0 else { break }
          try buffer.withUnsafeBytes { try writeStdout(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
          pos += UInt64(n)
        }
        return
      }
      guard a.type == .regular else { throw VMDKError(.invalidArgument, "\(path) is a \(a.type.rawValue), not a file") }
      var buffer = [UInt8](repeating: 0, count: 1 << 20)
      var pos: UInt64 = 0
      while pos < size {
        let n = try buffer.withUnsafeMutableBytes { try fs.read(id, at: pos, into: $0) }
        guard n > 0 else { break }
        try buffer.withUnsafeBytes { try writeStdout(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        pos += UInt64(n)
      }
    }
  }
}

struct Find: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "find", abstract: "Find files by name and modification time.")
  @OptionGroup var image: ImageOptions
  @Argument(help: "Where to start.") var path: String = "/"
  @Option(help: "Shell pattern the name must match (*, ?, [...]).") var name: String?
  @Option(help: "Only files modified after DATE (2024-05-01, 2024-05-01T12:00:00Z or @UNIXSECONDS).")
  var newer: String?
  @Option(help: "Only this type: f (file), d (folder), l (symbolic link).") var type: String?

  func run() throws {
    try runReporting {
      var after: Int64?
      if let newer {
        guard let d = parseDate(newer) else { throw VMDKError(.invalidArgument, "cannot read the date \"\(newer)\"") }
        after = d
      }
      let want: FileType? =
        switch type {
        case nil: nil
        case "f": .regular
        case "d": .directory
        case "l": .symlink
        default: throw VMDKError(.invalidArgument, "--type is f, d or l")
        }
      let (_, fs) = try image.fileSystem()
      warn(fs, json: image.json)
      let id = try fs.lookup(path)
      let base = path.hasSuffix("/") ? path : path + "/"
      var found: [JSON] = []
      var failed = false
      try fs.walk(
        from: id,
        onError: { p, e in
          printError("\(toolName): \(base)\(String(decoding: p, as: UTF8.self)): \(e)")
          failed = true
        }
      ) { item in
        if let want, item.type != want { return true }
        if let name, fnmatch(name, String(decoding: item.name, as: UTF8.self), 0) != 0 { return true }
        var a: FileAttributes?
        if let after {
          let s = try fs.stat(item.id)
          guard let m = s.modificationTime, m.seconds > after else { return true }
          a = s
        }
        let p = base + item.displayPath
        if image.json {
          let s = try a ?? fs.stat(item.id)
          found.append(.object([("path", .string(p))] + attributesJSON(s)))
        } else {
          print(p)
        }
        return true
      }
      if image.json { printJSON(.array(found)) }
      if failed { throw ExitCode(1) }
    }
  }
}

/// Resolves PATH, or on NTFS PATH:STREAM (a named data stream), when PATH itself is not a
/// name: the last ":" of the last component splits it. Other file systems have no streams:
/// a ":" is part of the name there.
func lookupStream(_ fs: any FileSystem, _ path: String) throws -> (FileID, NamedStream?) {
  guard fs.hasNamedStreams else { return (try fs.lookup(path), nil) }
  let bytes = Array(path.utf8)
  let lastSlash = bytes.lastIndex(of: UInt8(ascii: "/")) ?? -1
  guard let colon = bytes.lastIndex(of: UInt8(ascii: ":")), colon > lastSlash else {
    return (try fs.lookup(path), nil)
  }
  if let id = try? fs.lookup(path) { return (id, nil) }
  let file = String(decoding: bytes[..<colon], as: UTF8.self)
  let name = Array(bytes[(colon + 1)...])
  let id = try fs.lookup(file)
  guard !name.isEmpty else { return (id, nil) }
  guard let s = try fs.namedStream(name, of: id) else {
    throw VMDKError(.fileNotFound, "\(file) has no stream \"\(String(decoding: name, as: UTF8.self))\"")
  }
  return (id, s)
}
