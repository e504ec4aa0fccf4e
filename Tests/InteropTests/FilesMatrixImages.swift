// Images of the file-level restore matrix: a file system made by mke2fs -d or mkfs.fat +
// mcopy -s from a MatrixTree, its changed copy for a chain's child, the file system put into
// an MBR disk (inside a logical partition: sfdisk with an extended partition) or a GPT disk
// (sgdisk), and each disk converted by qemu-img to monolithicSparse, streamOptimized, or a
// 2-link chain whose child (qemu-img create -b) holds only the blocks that changed (written
// with qemu-io).

import Foundation
import Glibc
import Testing
import VMDKBlock

enum MatrixTable: String, Sendable, CustomStringConvertible {
  case mbrLogical, gpt
  var description: String { rawValue }
}

enum MatrixFormat: String, Sendable, CustomStringConvertible {
  case monolithicSparse, streamOptimized, chain
  var description: String { rawValue }
}

struct MatrixCombo: Sendable, CustomStringConvertible {
  var table: MatrixTable
  var format: MatrixFormat
  var description: String { "\(table)/\(format)" }
}

/// One file-system layout of the matrix and the disks it goes into.
struct MatrixLayout: Sendable, CustomStringConvertible {
  var name: String
  /// "ext2", "ext3", "ext4", "fat12", "fat16", "fat32".
  var kind: String
  /// ext block size, or FAT cluster size.
  var blockSize: Int
  var options: [String] = []
  /// Run `e2fsck -fyD` after mke2fs, which makes the folders of several blocks htrees.
  var htree = false
  var tree: MatrixTreeSize
  var megabytes: Int
  var combos: [MatrixCombo]
  var description: String { "\(name) (\(tree) tree; \(combos.map(\.description).joined(separator: ", ")))" }
  var isExt: Bool { kind.hasPrefix("ext") }
  var inlineData: Bool { options.joined().contains("inline_data") }
  /// 128-byte inodes have no nanoseconds and no creation time.
  var smallInodes: Bool { options.contains("128") }

  /// The files a chain's child changes: one deleted, one rewritten, one added.
  static let deletedInChild = "common/many/file-3-xxx"
  static let changedInChild = "common/sizes/s4096"
  static let addedInChild = "common/new-in-child.txt"
}

/// A disk made from one file system image.
struct MatrixDisk {
  var raw: String
  /// Where the file system starts, in 512-byte sectors, and its partition's number.
  var startSector: UInt64
  var partition: Int
}

enum MatrixImages {
  static func run(_ script: String) throws { try shell("export MTOOLS_SKIP_CHECK=1\n" + script) }

  /// The file system image of `layout` holding `tree`.
  static func fileSystem(_ layout: MatrixLayout, tree: MatrixTree, at image: String) throws {
    if layout.isExt {
      try runChecked(
        try requireTool("mke2fs"),
        ["-q", "-F", "-t", layout.kind, "-b", String(layout.blockSize)] + layout.options + [
          "-d", tree.root, image, "\(layout.megabytes)M",
        ])
      if layout.htree {
        // Exit status 1 means "errors corrected" (here: folders indexed).
        let r = try runProcess(try requireTool("e2fsck"), ["-fyD", image])
        guard r.status <= 1 else { throw ToolFailure("e2fsck -fyD exited \(r.status): \(r.output)") }
        let h = try runProcess(try requireTool("debugfs"), ["-R", "htree /common/many", image])
        guard h.status == 0, h.output.contains("Root node dump") else {
          throw ToolFailure("/common/many is not an htree after e2fsck -fyD: \(h.errorOutput.prefix(300))")
        }
      }
      if !layout.smallInodes {
        // mke2fs -d copies whole seconds; give a few inodes nanoseconds (mtime, atime, ctime,
        // crtime), so that the comparison with istat covers them.
        let script = "\(image).sif"
        try """
        sif /posix/hard1 mtime_extra 0x1D6F3454
        sif /posix/hard1 atime_extra 0x00000004
        sif /common/sizes/s1 ctime_extra 0xEE6B27FC
        sif /common/sizes/s1 crtime_extra 0x00000400
        sif /posix/sticky mtime_extra 0x0000FF00
        """.write(toFile: script, atomically: true, encoding: .utf8)
        try runChecked(try requireTool("debugfs"), ["-w", "-f", script, image])
      }
    } else {
      let bits = layout.kind.dropFirst(3)
      try run(
        """
        mkfs.fat -C -F \(bits) -s \(layout.blockSize / 512) -n \(layout.kind.uppercased()) '\(image)' \(layout.megabytes * 1024) >/dev/null
        TZ=UTC mcopy -s -m -i '\(image)' '\(tree.root)/common' ::
        """)
      // mcopy writes no hundredths of a second into the creation time: give UPPER.TXT (a
      // short name, no long-name entries) 1.99 s more, so that istat's "Created" checks them.
      try patchShortEntry(image, name: "UPPER   TXT", at: 13, value: 199)
    }
  }

  /// Sets byte `at` of the first 32-byte-aligned directory entry whose 11-byte short name is
  /// `name`.
  static func patchShortEntry(_ image: String, name: String, at: Int, value: UInt8) throws {
    guard let h = FileHandle(forUpdatingAtPath: image) else { throw ToolFailure("cannot open \(image)") }
    defer { try? h.close() }
    let needle = Data(name.utf8)
    var base: UInt64 = 0
    while let chunk = try h.read(upToCount: 8 << 20), !chunk.isEmpty {
      var from = chunk.startIndex
      while let r = chunk.range(of: needle, in: from..<chunk.endIndex) {
        let offset = base + UInt64(r.lowerBound - chunk.startIndex)
        if offset % 32 == 0 {
          try h.seek(toOffset: offset + UInt64(at))
          try h.write(contentsOf: Data([value]))
          return
        }
        from = r.upperBound
      }
      base += UInt64(chunk.count)
    }
    throw ToolFailure("no directory entry \(name) in \(image)")
  }

  /// A copy of `v1` with the chain's changes: deleted, rewritten and added files. Returns the
  /// new content of the rewritten and added files.
  static func changedCopy(_ layout: MatrixLayout, v1: String, v2: String, scratch: String) throws -> (
    changed: Data, added: Data
  ) {
    try runChecked("/bin/cp", ["--sparse=always", v1, v2])
    let changed = MatrixTreeBuilder.content(4096 + 333, seed: 777_777)
    let added = MatrixTreeBuilder.content(12_345, seed: 888_888)
    try changed.write(to: URL(fileURLWithPath: "\(scratch)/changed.bin"))
    try added.write(to: URL(fileURLWithPath: "\(scratch)/added.bin"))
    if layout.isExt {
      let script = "\(scratch)/change.cmds"
      try """
      rm /\(MatrixLayout.deletedInChild)
      rm /\(MatrixLayout.changedInChild)
      cd /common/sizes
      write \(scratch)/changed.bin s4096
      cd /common
      write \(scratch)/added.bin new-in-child.txt
      """.write(toFile: script, atomically: true, encoding: .utf8)
      try runChecked(try requireTool("debugfs"), ["-w", "-f", script, v2])
    } else {
      try run(
        """
        mdel -i '\(v2)' ::\(MatrixLayout.deletedInChild)
        TZ=UTC mcopy -o -m -i '\(v2)' '\(scratch)/changed.bin' ::\(MatrixLayout.changedInChild)
        TZ=UTC mcopy -m -i '\(v2)' '\(scratch)/added.bin' ::\(MatrixLayout.addedInChild)
        """)
    }
    return (changed, added)
  }

  /// Puts the file system image into a new sparse disk with `table`.
  ///  - mbrLogical: primary 1 (empty, 1 MiB), extended 2 holding logical 5 (the file system)
  ///    and logical 6 (empty, 1 MiB): the EBR chain has two links.
  ///  - gpt: 1 an EFI partition (empty, 1 MiB), 2 the file system.
  static func disk(_ layout: MatrixLayout, fileSystem fs: String, table: MatrixTable, at raw: String) throws
    -> MatrixDisk
  {
    var st = stat()
    guard stat(fs, &st) == 0 else { throw ToolFailure("cannot stat \(fs)") }
    let sectors = UInt64(st.st_size) / 512
    switch table {
    case .mbrLogical:
      let type = layout.isExt ? "83" : layout.kind == "fat32" ? "c" : layout.kind == "fat16" ? "6" : "1"
      let start: UInt64 = 6144
      try run(
        """
        truncate -s \((start + sectors + 6144) * 512) '\(raw)'
        printf 'label: dos\\nstart=2048, size=2048, type=83\\nstart=4096, size=\(sectors + 6144), type=5\\nstart=\(start), size=\(sectors), type=\(type)\\nstart=\(start + sectors + 2048), size=2048, type=83\\n' | sfdisk -q '\(raw)' >/dev/null
        dd if='\(fs)' of='\(raw)' bs=1M seek=3 conv=notrunc,sparse status=none
        """)
      return MatrixDisk(raw: raw, startSector: start, partition: 5)
    case .gpt:
      let start: UInt64 = 4096
      try run(
        """
        truncate -s \((start + sectors + 2048) * 512) '\(raw)'
        sgdisk -o -n 1:2048:4095 -t 1:ef00 -c 1:EFI -n 2:\(start):\(start + sectors - 1) -t 2:\(layout.isExt ? "8300" : "0700") -c 2:data '\(raw)' >/dev/null
        dd if='\(fs)' of='\(raw)' bs=1M seek=2 conv=notrunc,sparse status=none
        """)
      return MatrixDisk(raw: raw, startSector: start, partition: 2)
    }
  }

  /// Converts a raw disk to a VMDK of `subformat`.
  static func convert(_ raw: String, to vmdk: String, subformat: MatrixFormat) throws {
    try Qemu.img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=\(subformat.rawValue)", raw, vmdk)
  }

  /// A 2-link chain: `parent` (monolithicSparse of `v1`) and `child` (qemu-img create -b),
  /// into which qemu-io writes every 64 KiB chunk where `v2` differs from `v1`. Returns the
  /// number of chunks written.
  static func chain(v1: String, v2: String, parent: String, child: String, scratch: String) throws -> Int {
    try convert(v1, to: parent, subformat: .monolithicSparse)
    try Qemu.img(
      "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", URL(fileURLWithPath: parent).lastPathComponent, child)
    guard let a = FileHandle(forReadingAtPath: v1), let b = FileHandle(forReadingAtPath: v2) else {
      throw ToolFailure("cannot open \(v1) or \(v2)")
    }
    defer {
      try? a.close()
      try? b.close()
    }
    let chunk = 64 << 10
    var commands: [String] = []
    var offset: UInt64 = 0
    while true {
      let x = try a.read(upToCount: 8 << 20) ?? Data()
      let y = try b.read(upToCount: 8 << 20) ?? Data()
      guard !y.isEmpty else { break }
      guard x.count == y.count else { throw ToolFailure("v1 and v2 differ in size") }
      var at = 0
      while at < y.count {
        let end = min(at + chunk, y.count)
        let same = x.withUnsafeBytes { xb in
          y.withUnsafeBytes { yb in memcmp(xb.baseAddress! + at, yb.baseAddress! + at, end - at) == 0 }
        }
        if !same {
          let file = "\(scratch)/chunk-\(commands.count)"
          try y.subdata(in: at..<end).write(to: URL(fileURLWithPath: file))
          commands.append("write -q -s \(file) \(offset + UInt64(at)) \(end - at)")
        }
        at = end
      }
      offset += UInt64(y.count)
    }
    for start in stride(from: 0, to: commands.count, by: 200) {
      try Qemu.io(child, Array(commands[start..<min(start + 200, commands.count)]))
    }
    return commands.count
  }
}
