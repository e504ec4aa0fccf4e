// vmdk-files: files inside a disk, read without mounting: partitions, ls, stat, cat, find,
// extract. Any location the other tools open (local, chains, nbd://, https://) is IMAGE.
// Exit status: 0 success; 1 some files could not be restored (each named on stderr, the rest
// restored); 2 the image or the file system cannot be read.

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKFiles

@main
struct VMDKFilesTool: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vmdk-files",
    abstract: "Read the files inside a disk image without mounting it.",
    discussion: """
      Exit status: 0 success; 1 some files could not be restored (each named); 2 the image or
      the file system cannot be read. FAT stores local time without a zone: its times are
      shown as UTC.
      """,
    subcommands: [Partitions.self, Ls.self, Stat.self, Cat.self, Find.self, Extract.self]
  )
}

/// IMAGE, the opening options, --partition and --json: what every subcommand shares.
struct ImageOptions: ParsableArguments {
  @Argument(help: "The image (any location: a path, nbd://, https://).") var image: String
  @OptionGroup var open: OpenFlags
  @Option(help: "The partition to read (as `partitions` numbers them); default: the only one with a file system.")
  var partition: Int?
  @Flag(help: "Print JSON.") var json = false

  func layout() throws -> (Disk, DiskLayout) {
    let disk = try Disk.open(image, options: open.resolvedOptions())
    return (disk, try DiskLayout(disk: disk, name: image))
  }

  func fileSystem() throws -> (Disk, any FileSystem) {
    let (disk, layout) = try layout()
    let (_, fs) = try layout.fileSystem(partition: partition)
    keptUntilExit.withLock { $0.append(fs) }
    return (disk, fs)
  }
}

/// The file systems a command opened, referenced until the process exits: a walk leaves
/// thousands of parsed records in their caches, and freeing them (a few milliseconds of an
/// `ls -R`) would only delay the exit. The disks are read-only; the descriptors close at exit.
private let keptUntilExit = Locked<[any FileSystem]>([])

/// Time as ISO 8601 UTC ("2024-05-01T12:00:00Z").
func isoTime(_ t: FileTime?) -> String? {
  guard let t else { return nil }
  let days = t.seconds >= 0 ? t.seconds / 86400 : (t.seconds - 86399) / 86400
  let secs = t.seconds - days * 86400
  // Civil from days (Howard Hinnant).
  let z = days + 719468
  let era = (z >= 0 ? z : z - 146096) / 146097
  let doe = z - era * 146097
  let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
  let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
  let mp = (5 * doy + 2) / 153
  let d = doy - (153 * mp + 2) / 5 + 1
  let m = mp < 10 ? mp + 3 : mp - 9
  let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
  func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
  return "\(y)-\(two(m))-\(two(d))T\(two(secs / 3600)):\(two(secs / 60 % 60)):\(two(secs % 60))Z"
}

/// Parses "2024-05-01", "2024-05-01T12:00:00Z" or "@1714564800" into Unix seconds.
func parseDate(_ s: String) -> Int64? {
  if s.hasPrefix("@") { return Int64(s.dropFirst()) }
  let parts = s.split(whereSeparator: { "-T:Z ".contains($0) }).map(String.init)
  guard parts.count == 3 || parts.count == 6, let y = Int64(parts[0]), let m = Int64(parts[1]), let d = Int64(parts[2]),
    (1...12).contains(m), (1...31).contains(d)
  else { return nil }
  var secs: Int64 = 0
  if parts.count == 6 {
    guard let h = Int64(parts[3]), let mi = Int64(parts[4]), let se = Int64(parts[5]) else { return nil }
    secs = h * 3600 + mi * 60 + se
  }
  let yy = m <= 2 ? y - 1 : y
  let era = (yy >= 0 ? yy : yy - 399) / 400
  let yoe = yy - era * 400
  let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1
  let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
  return (era * 146097 + doe - 719468) * 86400 + secs
}

func modeString(_ a: FileAttributes) -> String {
  let t: Character =
    switch a.type {
    case .directory: "d"
    case .symlink: "l"
    case .characterDevice: "c"
    case .blockDevice: "b"
    case .fifo: "p"
    case .socket: "s"
    case .regular: "-"
    case .unknown: "?"
    }
  var s = String(t)
  let bits = Array("rwxrwxrwx")
  for i in 0..<9 { s.append(a.mode & (1 << (8 - i)) != 0 ? bits[i] : "-") }
  return s
}

func attributesJSON(_ a: FileAttributes) -> [(String, JSON)] {
  var kv: [(String, JSON)] = [
    ("id", .uint(a.id)), ("type", .string(a.type.rawValue)), ("size", .uint(a.size)),
    ("mode", .string("0" + String(a.mode, radix: 8))), ("linkCount", .uint(UInt64(a.linkCount))),
  ]
  kv.append(("uid", a.uid.map { .uint(UInt64($0)) } ?? .null))
  kv.append(("gid", a.gid.map { .uint(UInt64($0)) } ?? .null))
  kv.append(("accessTime", .opt(isoTime(a.accessTime))))
  kv.append(("modificationTime", .opt(isoTime(a.modificationTime))))
  kv.append(("changeTime", .opt(isoTime(a.changeTime))))
  kv.append(("creationTime", .opt(isoTime(a.creationTime))))
  kv.append(("timesAreLocal", .bool(a.timesAreLocal)))
  if let d = a.device { kv.append(("device", .uint(d))) }
  return kv
}

/// Prints the file system's warnings on stderr (not in JSON output).
func warn(_ fs: any FileSystem, json: Bool) {
  guard !json else { return }
  for w in fs.warnings where !w.hasPrefix("FAT stores local time") { printError("\(toolName): warning: \(w)") }
}
