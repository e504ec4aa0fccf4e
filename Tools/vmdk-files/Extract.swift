// `vmdk-files extract`: files and folders out of the disk into a host folder.

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKFiles

#if canImport(Glibc)
  import Glibc
#endif

struct Extract: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "extract",
    abstract: "Copy files and folders (recursively) out of the disk into a folder.",
    discussion: """
      Modes, times, symbolic links, hard links and holes are kept, and owners when run as
      root. Names that could leave the folder ("/", "..", NUL) are refused and reported;
      symbolic links already in the folder are not followed; an existing file is replaced only
      with --force. Exit status 1 when some files could not be restored (each is named).
      NTFS alternate data streams are not restored unless --streams says how: "xattr" keeps
      each as a user.STREAM extended attribute (a stream too big for the host file system is
      skipped with a warning) and the Windows attributes as user.ntfs.attrib ("0x" and 8 hex
      digits); "sidecar" writes each as a file NAME:STREAM beside its file.
      """)
  @OptionGroup var image: ImageOptions
  @Argument(help: "The paths to extract (\"/\" for everything).") var paths: [String]
  @Option(help: "The destination folder (created when missing).") var to: String
  @Flag(help: "Replace existing files.") var force = false
  @Flag(help: "No progress bar.") var quiet = false
  @Option(help: "NTFS alternate data streams: none (default), xattr (user.STREAM) or sidecar (NAME:STREAM files).")
  var streams: String = "none"
  @Option(
    help: "Threads that write file contents beside the one that walks the tree (default: one per processor; 0: none).")
  var threads: Int?

  func run() throws {
    var failures: [(String, VMDKError)] = []
    try runReporting {
      let (_, fs) = try image.fileSystem()
      warn(fs, json: image.json)
      var options = ExtractOptions()
      options.force = force
      guard let mode = StreamMode(rawValue: streams) else {
        throw VMDKError(.invalidArgument, "--streams is none, xattr or sidecar, not \"\(streams)\"")
      }
      options.streams = mode
      if let threads {
        guard (0...64).contains(threads) else {
          throw VMDKError(.invalidArgument, "--threads is 0 to 64, not \(threads)")
        }
        options.workers = threads
      }
      let extractor = try Extractor(fileSystem: fs, to: to, options: options)
      var bar: ProgressBar?
      if !quiet && !image.json && isatty(2) != 0 {
        var total: UInt64 = 0
        for p in paths {
          let id = try fs.lookup(p)
          let a = try fs.stat(id)
          if a.type == .directory {
            try? fs.walk(from: id) { item in
              if item.type == .regular, let s = try? fs.stat(item.id) { total += s.size }
              return true
            }
          } else {
            total += a.size
          }
        }
        let b = ProgressBar(total: total, quiet: false)
        extractor.progress = { b.update($0) }
        bar = b
      }
      for p in paths {
        do {
          try extractor.extract(path: p)
        } catch let e as VMDKError where e.code == .fileNotFound {
          failures.append((p, e))
        }
      }
      bar?.finish()
      let r = extractor.report
      failures += r.failures
      for w in r.warnings { printError("\(toolName): warning: \(w)") }
      if image.json {
        printJSON(
          .object([
            ("files", .int(Int64(r.files))), ("directories", .int(Int64(r.directories))),
            ("symlinks", .int(Int64(r.symlinks))), ("hardLinks", .int(Int64(r.hardLinks))),
            ("others", .int(Int64(r.others))), ("streams", .int(Int64(r.streams))), ("bytes", .uint(r.bytes)),
            ("warnings", .array(r.warnings.map { .string($0) })),
            ("failures", .array(failures.map { .object([("path", .string($0.0)), ("error", .string("\($0.1)"))]) })),
          ]))
      }
    }
    for (p, e) in failures { printError("\(toolName): \(p): not restored: \(e)") }
    if !failures.isEmpty { throw ExitCode(1) }
  }
}
