// `vmdk-inspect compare A B`: whether two images hold the same virtual bytes, with qemu-img
// compare's meaning and exit status (0 identical, 1 different, 2 error).

import ArgumentParser
import ToolSupport
import VMDKBlock

struct Compare: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Compare the virtual bytes of two images, as qemu-img compare does.",
    discussion: """
      Prints "Images are identical." (exit 0) or "Content mismatch at offset N!" (exit 1); N is \
      the start of the first differing 512-byte sector, as qemu-img reports it (--exact: the \
      byte). Images of different sizes are identical when the larger one's extra part reads as \
      zeros; --strict fails on any size difference ("Strict mode: Image size mismatch!", exit \
      1; unlike qemu-img compare -s, allocation differences are not a failure); without it a \
      size difference is a warning on stderr. Exit 2: an image cannot be opened or read. The \
      opening options apply to both images. Ranges both images' block status calls zero are \
      not read. --json: result, offset (qemu-img's), byteOffset, sizes and bytes read.
      """)

  @Argument(help: "The first image.") var first: String
  @Argument(help: "The second image.") var second: String
  @OptionGroup var open: OpenFlags
  @Flag(name: [.customShort("s"), .long], help: "Fail when the sizes differ.") var strict = false
  @Flag(help: "Report the first differing byte, not the start of its sector.") var exact = false
  @Flag(help: "Print JSON.") var json = false

  func run() throws {
    try runReporting {
      let options = try open.resolvedOptions()
      let a = try Disk.open(first, options: options)
      let b = try Disk.open(second, options: options)
      let result = try a.compare(with: b, strict: strict)
      let sizesDiffer = a.capacityBytes != b.capacityBytes
      var fields: [(String, JSON)] = [
        ("first", .string(first)), ("second", .string(second)), ("firstSize", .uint(a.capacityBytes)),
        ("secondSize", .uint(b.capacityBytes)), ("bytesRead", .uint(result.bytesRead)),
      ]
      let line: String
      let status: Int32
      switch result.outcome {
      case .identical:
        line = "Images are identical."
        status = 0
        fields.insert(("result", .string("identical")), at: 0)
      case .sizeMismatch:
        line = "Strict mode: Image size mismatch!"
        status = 1
        fields.insert(("result", .string("size-mismatch")), at: 0)
      case .contentMismatch(let offset):
        let shown = exact ? offset : offset / 512 * 512
        line = "Content mismatch at offset \(shown)!"
        status = 1
        fields.insert(
          contentsOf: [
            ("result", .string("content-mismatch")), ("offset", .uint(offset / 512 * 512)),
            ("byteOffset", .uint(offset)),
          ], at: 0)
      }
      if json {
        printJSON(.object(fields))
      } else {
        if sizesDiffer && !strict { printError("Warning: Image size mismatch!") }
        print(line)
      }
      if status != 0 { throw ExitCode(status) }
    }
  }
}
