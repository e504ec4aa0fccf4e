// ext's FileMapping: a file's bytes as extents or block maps place them on the volume, walked
// as `readData` walks them. Inline data is not on a block of its own: not mapped.
import VMDKBlock

extension ExtFileSystem: FileMapping {
  public var mapping: (any FileMapping)? { self }

  public func volumePieces(_ id: FileID, at offset: UInt64, length: Int, maxPieces: Int) throws -> [VolumePiece]? {
    try withFile {
      let ino = try inode(id)
      guard ino.type == .regular else {
        throw VMDKError(.invalidArgument, "ext: inode \(id) is a \(ino.type.rawValue), not a regular file")
      }
      guard offset < ino.size, length > 0 else { return [] }
      if ino.hasInlineData { return nil }
      let total = Int(min(UInt64(length), ino.size - offset))
      var list = VolumePieceList(maxPieces: maxPieces)
      try forEachRun(ino, at: offset, total: total) { _, n, byte in
        list.add(byte.map { .volume(offset: $0, length: n) } ?? .zero(length: n))
        return list.fits
      }
      return list.fits ? list.out : nil
    }
  }
}
