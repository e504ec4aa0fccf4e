// vmdk-mount: a disk's file system (or its raw disk and partitions) as a read-only FUSE mount,
// for the tools that only know paths. Any location the other tools open is IMAGE.
// Exit status: 0 unmounted cleanly (fusermount3 -u, SIGTERM, SIGINT); 1 the mount failed;
// 2 the image or its file system cannot be read.

import ArgumentParser
import ToolSupport
import VMDKBlock
import VMDKFiles
import VMDKMount

#if canImport(Glibc)
  import Glibc
#endif

@main
struct VMDKMountTool: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vmdk-mount",
    abstract: "Mount the file system inside a disk image, read-only, through FUSE.",
    discussion: """
      Unmount with `fusermount3 -u MOUNTPOINT`, or send SIGTERM or SIGINT. Without -f the \
      mount goes to the background once it is up; its messages then go to syslog. Exit status: \
      0 unmounted cleanly; 1 the mount failed; 2 the image or the file system cannot be read.
      """)

  @Argument(help: "The image (any location: a path, nbd://, https://).") var image: String
  @Argument(help: "An existing, empty folder.") var mountpoint: String
  @OptionGroup var open: OpenFlags
  @Option(
    help: "The partition to mount (as `vmdk-files partitions` numbers them); default: the only one with a file system.")
  var partition: Int?
  @Flag(help: "Serve the disk and its partitions as files: disk, p1, p2… (any file system).") var raw = false
  @Flag(name: [.customShort("f"), .long], help: "Stay in the foreground.") var foreground = false
  @Flag(name: [.customShort("s"), .long], help: "Serve one request at a time.") var singleThread = false
  @Option(
    help: ArgumentHelp(
      "Read files of at least SIZE (64K, 1M…) without the kernel's page cache: one copy per read, faster for large reads; small reads of them lose read-ahead (one round trip each). Only where the kernel allows a shared mmap of such a file (Linux 6.6 and later).",
      valueName: "SIZE"))
  var directIOFrom: String = "16M"  // DirectIO.defaultChoice
  @Flag(help: "Read every regular file without the page cache, even where a shared mmap of it then fails (ENODEV).")
  var directIO = false
  @Flag(help: "Read every file through the page cache: read-ahead for small reads (dd bs=4k, tar's 10 KiB).")
  var noDirectIO = false
  @Option(name: [.customShort("o")], help: "FUSE mount options, comma-separated (allow_other, default_permissions…).")
  var options: [String] = []

  func validate() throws {
    if directIO && noDirectIO { throw ValidationError("--direct-io and --no-direct-io exclude each other") }
    if parseSize(directIOFrom) == nil { throw ValidationError("--direct-io-from: not a size: \(directIOFrom)") }
    if raw && partition != nil { throw ValidationError("--raw shows every partition; --partition is not used with it") }
    for o in options.flatMap({ $0.split(separator: ",") }) where o == "rw" {
      throw ValidationError("the mount is read-only: -o rw is not supported")
    }
  }

  func run() throws {
    var st = stat()
    guard stat(mountpoint, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
      printError("\(toolName): \(mountpoint): not a folder")
      throw ExitCode(2)
    }
    // Absolute: the daemon leaves the current folder, and unmounts by this path.
    guard let resolved = realpath(mountpoint, nil) else {
      printError("\(toolName): \(mountpoint): \(String(cString: strerror(errno)))")
      throw ExitCode(2)
    }
    defer { free(resolved) }
    var mo = MountOptions(mountpoint: String(cString: resolved))
    mo.fuseOptions = options.flatMap { $0.split(separator: ",").map(String.init) }
    mo.sourceName = image
    mo.singleThread = singleThread
    if directIO {
      mo.directIO = .always
    } else if noDirectIO {
      mo.directIO = .never
    } else {
      mo.directIO = .from(bytes: parseSize(directIOFrom) ?? 16 << 20)
    }
    let status = FuseMount.run(options: mo, foreground: foreground) {
      let disk = try Disk.open(image, options: open.resolvedOptions())
      if raw { return MountTree(content: try MountTree.rawContent(disk: disk, name: image), log: mountLog) }
      let layout = try DiskLayout(disk: disk, name: image)
      let (entry, fs) = try layout.fileSystem(partition: partition)
      for w in fs.warnings where !w.hasPrefix("FAT stores local time") { mountLog("\(toolName): warning: \(w)") }
      return MountTree(content: .fileSystem(fs, volumeSize: entry.volume.size), log: mountLog)
    }
    if status != 0 { throw ExitCode(status) }
  }
}
