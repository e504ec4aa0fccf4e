// vmdk-disk write IMAGE --offset BYTES [--input FILE]: restore bytes into the virtual disk
// (VixDiskLib_Write), from a file or standard input.

import ArgumentParser
import Foundation
import ToolSupport
import VMDKBlock
import VMDKTransport

struct Write: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "write", abstract: "Write bytes into the virtual disk.",
    discussion: """
      Writes the bytes of FILE (standard input by default) at byte BYTES of the virtual disk, \
      into its top link. Refused when snapshots sit on the disk (restore into another place, \
      or commit or delete them first). With a file, a range past the end is refused before \
      anything is written; from standard input, it is found when reached (the bytes before it \
      are written).
      Exit status: 0 done; 1 failed (one line on stderr).
      """)

  @Argument(help: "The image.") var image: String
  @Option(help: "Byte offset in the virtual disk.") var offset: UInt64
  @Option(help: "The file to read (default: standard input).") var input: String?
  @OptionGroup(title: "Opening the image") var open: OpenFlags

  func run() throws {
    try runReporting(status: 1) {
      var options = try open.resolvedOptions()
      options.writable = true
      let fd: Int32
      if let input {
        fd = Foundation.open(input, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
          throw VMDKError(.fileNotFound, "cannot open the input: \(String(cString: strerror(errno)))", file: input)
        }
      } else {
        fd = 0
      }
      defer { if fd != 0 { close(fd) } }
      let disk = try Disk.open(image, options: options)
      if input != nil {
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
          let size = UInt64(st.st_size)
          guard offset <= disk.capacityBytes, size <= disk.capacityBytes - offset else {
            throw VMDKError(
              .outOfRange,
              "\(size) bytes at \(offset) go past the end of the disk (\(disk.capacityBytes) bytes); nothing written",
              file: image, offset: offset)
          }
        }
      }
      let chunk = 4 << 20
      var buffer = [UInt8](repeating: 0, count: chunk)
      var at = offset
      while true {
        // Fill the buffer (a pipe gives short reads), so writes stay large and aligned.
        var filled = 0
        while filled < chunk {
          let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, chunk - filled) }
          if n < 0 {
            if errno == EINTR { continue }
            throw VMDKError(
              .fileAccess, "cannot read the input: \(String(cString: strerror(errno)))", file: input ?? "stdin")
          }
          if n == 0 { break }
          filled += n
        }
        if filled == 0 { break }
        try buffer.withUnsafeBytes { try disk.write(at: at, UnsafeRawBufferPointer(rebasing: $0[0..<filled])) }
        at += UInt64(filled)
        if filled < chunk { break }
      }
      try disk.close()
    }
  }
}
