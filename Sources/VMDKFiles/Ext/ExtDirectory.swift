// Directory entries (ext4_dir_entry_2, or the older form with a 16-bit name length) in one
// directory block or inline area. htree directories are read linearly: their index blocks
// look like one unused entry spanning the block, and the dx_root hides inside "..".
import VMDKBlock

enum ExtDirectory {
  /// The type byte of ext4_dir_entry_2.
  static func type(_ byte: UInt8) -> FileType {
    switch byte {
    case 1: .regular
    case 2: .directory
    case 3: .characterDevice
    case 4: .blockDevice
    case 5: .fifo
    case 6: .socket
    case 7: .symlink
    default: .unknown
    }
  }

  /// Appends the live entries of `b[start..<end]` to `out`, except "." and "..". Entries must
  /// tile the area; an entry that breaks the kernel's rules (rec_len < 12, not a multiple of
  /// 4, shorter than its name, past the area) is corruption. `blockSize` decodes 64 KiB
  /// rec_len values.
  static func parse(
    _ b: ExtBytes, start: Int, end: Int, blockSize: Int, hasFileType: Bool, inodesCount: UInt32,
    directory: UInt32, into out: inout [DirectoryEntry]
  ) throws {
    guard start >= 0, end <= b.count, start <= end else {
      throw ExtError.corrupt("directory \(directory): area \(start)..<\(end) of \(b.count) bytes", offset: b.at(start))
    }
    var o = start
    while o < end {
      guard end - o >= 8 else {
        throw ExtError.corrupt("directory \(directory): \(end - o) bytes left after the last entry", offset: b.at(o))
      }
      let inode = b.u32(o)
      let stored = Int(b.u16(o + 4))
      var recordLength: Int
      if blockSize < 65536 {
        recordLength = stored
      } else if stored == 65535 || stored == 0 {
        recordLength = 65536
      } else {
        recordLength = (stored & 0xFFFC) | (stored & 3) << 16
      }
      let nameLength = hasFileType ? Int(b.u8(o + 6)) : Int(b.u16(o + 6))
      guard recordLength >= 12, recordLength % 4 == 0, recordLength >= 8 + ((nameLength + 3) & ~3),
        recordLength <= end - o
      else {
        throw ExtError.corrupt(
          "directory \(directory): entry with rec_len \(recordLength) and name length \(nameLength) overruns its block or breaks its rules (\(end - o) bytes left)",
          offset: b.at(o + 4))
      }
      if inode != 0 {
        guard inode <= inodesCount else {
          throw ExtError.corrupt(
            "directory \(directory): entry points at inode \(inode), past the \(inodesCount) inodes", offset: b.at(o))
        }
        let name = b.slice(o + 8, nameLength)
        let isDot = name == [0x2E] || name == [0x2E, 0x2E]
        if !isDot, nameLength > 0 {
          out.append(DirectoryEntry(name: name, id: FileID(inode), type: hasFileType ? type(b.u8(o + 7)) : .unknown))
        }
      }
      o += recordLength
    }
  }
}
