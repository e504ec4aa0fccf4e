// Extent tree nodes (ext4): a 12-byte header, then 12-byte index or leaf entries. The root
// sits in the inode's 60-byte i_block, the other nodes in blocks. Parsing checks each node
// completely; walking (in ExtFileSystem) checks the depth chain.
import VMDKBlock

struct ExtExtentHeader {
  static let magic: UInt16 = 0xF30A
  /// The kernel's EXT4_MAX_EXTENT_DEPTH: deeper trees are refused (a cap, not corruption).
  static let maxDepth = 5
  /// 0x02 eh_entries.
  var entries: Int
  /// 0x04 eh_max.
  var max: Int
  /// 0x06 eh_depth: 0 = leaf.
  var depth: Int
}

/// A leaf entry: `length` blocks from logical `logical` at physical `physical`.
struct ExtExtent: Equatable, Sendable {
  /// 0x00 ee_block.
  var logical: UInt32
  /// 0x04 ee_len: 1..32768; above 32768 the extent is unwritten (reads as zeros).
  var length: UInt32
  /// 0x06 ee_start_hi, 0x08 ee_start_lo.
  var physical: UInt64
  var uninitialised: Bool
}

/// An index entry: the child node covering logical blocks from `logical`.
struct ExtExtentIndex: Equatable, Sendable {
  /// 0x00 ei_block.
  var logical: UInt32
  /// 0x04 ei_leaf_lo, 0x08 ei_leaf_hi.
  var child: UInt64
}

/// One parsed node.
enum ExtExtentNode: Equatable {
  case index(depth: Int, [ExtExtentIndex])
  case leaf([ExtExtent])

  /// Parses the node in `b` (60 bytes of i_block for the root, a block otherwise).
  /// `expectedDepth` is nil for the root (whose depth is capped), else the parent's depth − 1.
  static func parse(_ b: ExtBytes, expectedDepth: Int?, blocksCount: UInt64, inode: UInt32) throws -> ExtExtentNode {
    guard b.count >= 12 else {
      throw ExtError.corrupt("inode \(inode): extent node of \(b.count) bytes", offset: b.at(0))
    }
    guard b.u16(0) == ExtExtentHeader.magic else {
      throw ExtError.corrupt(
        "inode \(inode): extent header magic 0x\(String(b.u16(0), radix: 16)), not 0xf30a", offset: b.at(0))
    }
    let h = ExtExtentHeader(entries: Int(b.u16(2)), max: Int(b.u16(4)), depth: Int(b.u16(6)))
    if let expectedDepth {
      guard h.depth == expectedDepth else {
        throw ExtError.corrupt(
          "inode \(inode): extent node of depth \(h.depth) under a parent expecting \(expectedDepth)", offset: b.at(6))
      }
    } else {
      guard h.depth <= ExtExtentHeader.maxDepth else {
        throw ExtError.limit(
          "inode \(inode): extent tree depth \(h.depth) is beyond the cap of \(ExtExtentHeader.maxDepth) (the kernel's limit)",
          offset: b.at(6))
      }
    }
    guard h.max > 0, h.entries <= h.max, 12 + h.max * 12 <= b.count else {
      throw ExtError.corrupt(
        "inode \(inode): extent node with \(h.entries) of \(h.max) entries in \(b.count) bytes", offset: b.at(2))
    }
    if h.depth > 0 {
      var out: [ExtExtentIndex] = []
      out.reserveCapacity(h.entries)
      for i in 0..<h.entries {
        let o = 12 + i * 12
        let e = ExtExtentIndex(logical: b.u32(o), child: UInt64(b.u32(o + 4)) | UInt64(b.u16(o + 8)) << 32)
        guard e.child > 0, e.child < blocksCount else {
          throw ExtError.corrupt(
            "inode \(inode): extent index points at block \(e.child), outside the volume", offset: b.at(o + 4))
        }
        if let last = out.last, e.logical <= last.logical {
          throw ExtError.corrupt("inode \(inode): extent index entries out of order", offset: b.at(o))
        }
        out.append(e)
      }
      return .index(depth: h.depth, out)
    }
    var out: [ExtExtent] = []
    out.reserveCapacity(h.entries)
    for i in 0..<h.entries {
      let o = 12 + i * 12
      let raw = UInt32(b.u16(o + 4))
      guard raw != 0 else {
        throw ExtError.corrupt("inode \(inode): extent of length 0", offset: b.at(o + 4))
      }
      let uninit = raw > 32768
      let e = ExtExtent(
        logical: b.u32(o), length: uninit ? raw - 32768 : raw,
        physical: UInt64(b.u32(o + 8)) | UInt64(b.u16(o + 6)) << 32, uninitialised: uninit)
      guard UInt64(e.logical) + UInt64(e.length) <= 1 << 32 else {
        throw ExtError.corrupt("inode \(inode): extent wraps past logical block 2^32", offset: b.at(o))
      }
      guard e.physical > 0, e.physical < blocksCount, UInt64(e.length) <= blocksCount - e.physical else {
        throw ExtError.corrupt(
          "inode \(inode): extent at block \(e.physical) (\(e.length) blocks) is outside the \(blocksCount) blocks",
          offset: b.at(o + 6))
      }
      if let last = out.last, UInt64(e.logical) < UInt64(last.logical) + UInt64(last.length) {
        throw ExtError.corrupt("inode \(inode): extents overlap or are out of order", offset: b.at(o))
      }
      out.append(e)
    }
    return .leaf(out)
  }
}

/// A run of logical blocks with one mapping: `physical` nil for a hole; `zero` for an
/// unwritten extent.
struct ExtBlockRun: Equatable {
  var physical: UInt64?
  var count: UInt64
  var zero: Bool
}
