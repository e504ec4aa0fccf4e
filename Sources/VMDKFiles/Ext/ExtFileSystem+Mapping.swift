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
      let bs = UInt64(blockSize)
      var list = VolumePieceList(maxPieces: maxPieces)
      var done = 0
      while done < total && list.fits {
        let position = offset + UInt64(done)
        let logical = position / bs
        let within = position % bs
        var r = try run(ino, at: logical)
        if !ino.hasExtents, let start = r.physical {
          let wanted = (UInt64(total - done) + within + bs - 1) / bs
          while r.count < min(wanted, 256) {
            let next = try run(ino, at: logical + r.count)
            guard next.physical == start + r.count else { break }
            r.count += 1
          }
        }
        let runBytes = min(r.count, 1 << 32) * bs - within
        let n = Int(min(runBytes, UInt64(total - done)))
        if let physical = r.physical, !r.zero {
          let blocks = (within + UInt64(n) + bs - 1) / bs
          let byte = try blockOffset(physical, count: blocks)
          list.add(.volume(offset: byte + within, length: n))
        } else {
          list.add(.zero(length: n))
        }
        done += n
      }
      return list.fits ? list.out : nil
    }
  }
}
