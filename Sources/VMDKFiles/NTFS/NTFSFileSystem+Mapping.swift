// NTFS's FileMapping: the unnamed $DATA stream's runs on the volume, walked as `readStream`
// walks them (sparse runs and bytes past the initialised size are zeros). Resident,
// compressed and encrypted streams are not plain bytes of the volume: not mapped.
import VMDKBlock

extension NTFSFileSystem: FileMapping {
  public var mapping: (any FileMapping)? { self }

  public func volumePieces(_ id: FileID, at offset: UInt64, length: Int, maxPieces: Int) throws -> [VolumePiece]? {
    try withFile {
      let f = try file(id)
      guard f.type == .regular else {
        throw VMDKError(.invalidArgument, "ntfs: record \(id) is a \(f.type.rawValue), not a regular file")
      }
      guard let s = f.data[[]] else { return [] }
      guard s.resident == nil, !s.isCompressed, !s.isEncrypted else { return nil }
      let size = s.size
      guard offset < size, length > 0 else { return [] }
      let total = Int(min(UInt64(length), size - offset))
      let cs = UInt64(boot.clusterSize)
      var list = VolumePieceList(maxPieces: maxPieces)
      var done = 0
      while done < total && list.fits {
        let pos = offset + UInt64(done)
        if pos >= s.initializedSize {
          list.add(.zero(length: total - done))
          break
        }
        let vcn = pos / cs
        // No run for this VCN: the read says what is wrong.
        guard let i = s.runIndex(vcn) else { return nil }
        let r = s.runs[i]
        let (lastVCN, o0) = r.vcn.addingReportingOverflow(r.length)
        let runEnd = lastVCN.multipliedReportingOverflow(by: cs)
        let endByte = o0 || runEnd.overflow ? UInt64.max : runEnd.partialValue
        let n = Int(min(endByte - pos, UInt64(total - done), s.initializedSize - pos))
        if let lcn = r.lcn {
          let (cluster, o1) = lcn.addingReportingOverflow(vcn - r.vcn)
          let (byte, o2) = cluster.multipliedReportingOverflow(by: cs)
          let (at, o3) = byte.addingReportingOverflow(pos % cs)
          guard !o1, !o2, !o3 else { return nil }
          list.add(.volume(offset: at, length: n))
        } else {
          list.add(.zero(length: n))
        }
        done += n
      }
      return list.fits ? list.out : nil
    }
  }
}
