// libFuzzer entry point for the format layer's parsers of untrusted bytes. Built by Fuzz/run.sh
// together with the VMDKFormat sources (one module, so no `import VMDKFormat`). Every parser
// must either return or throw a FormatError: a trap, an out-of-bounds access (ASan), a hang or a
// large allocation is a finding.

/// The file sizes the size-dependent checks are run against: the input's own length (the bytes
/// are the whole file), and a size the input itself claims in its last 8 bytes, because a
/// caller may pass a file size that does not match the bytes it read (a file that shrank, a
/// short read) and the parsers must not trust it either.
private func fileSizes(_ bytes: [UInt8]) -> [UInt64] {
  var sizes = [UInt64(bytes.count)]
  if bytes.count >= 8 {
    var claimed: UInt64 = 0
    for (i, b) in bytes.suffix(8).enumerated() { claimed |= UInt64(b) << (8 * UInt64(i)) }
    sizes.append(claimed)
  }
  return sizes
}

/// Feeds `bytes` to every parser of untrusted input. Errors are the expected outcome.
private func exercise(_ bytes: [UInt8]) {
  let sizes = fileSizes(bytes)

  // The descriptor text: parse, then read every derived value and serialise, since those walk
  // the parsed lines again.
  _ = Descriptor.looksLikeDescriptor(bytes)
  if let d = try? Descriptor(parsing: bytes) {
    _ = d.serialized()
    _ = (d.cid, d.parentCID, d.version, d.createType, d.capacitySectors, d.diskDatabase.count)
    _ = d.extents.map(\.line)
  }

  // The KDMV header, validated against each file size; then the same bytes as a stream tail.
  if let h = try? SparseExtentHeader(parsing: bytes) {
    _ = h.serialized()
    for size in sizes {
      if let layout = try? h.validate(fileSize: size) {
        _ = (layout.grainDirectorySectors, layout.grainCount)
      }
    }
  }
  for size in sizes {
    _ = try? StreamFooter.parse(tail: bytes, fileSize: size)
  }
  _ = try? StreamMarker(parsing: bytes)

  // ESX redo logs.
  if let c = try? COWDHeader(parsing: bytes) {
    for size in sizes { try? c.validate(fileSize: size) }
  }
  for size in sizes {
    _ = try? SESparseConstHeader(parsing: bytes, fileSize: size)
  }
  try? SESparseVolatileHeader.validate(bytes, baseOffset: 0)

  // The createType classification, of the descriptor's value and of the raw text.
  if let d = try? Descriptor(parsing: bytes), let kind = d.createTypeKind {
    _ = (kind.isRawDevice, kind.isRedoLog, kind.isSplit)
  }
  _ = CreateType(String(decoding: bytes.prefix(64), as: UTF8.self)).isRawDevice

  walkEntries(bytes, sizes: sizes)
  walkMarkers(bytes, sizes: sizes)

  // A compressed grain: at most one 64 KiB grain comes out, whatever the stream claims.
  var grain = [UInt8](repeating: 0, count: 64 * 1024)
  bytes.withUnsafeBytes { src in
    grain.withUnsafeMutableBytes { dst in
      _ = try? GrainCompression.inflate(src, into: dst, offset: 0)
    }
  }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  exercise(Array(UnsafeBufferPointer(start: data, count: size)))
  return 0
}

/// A finding unless `condition` holds (optimized builds drop precondition messages).
private func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
  if !condition {
    print("FINDING: \(message())")
    fatalError()
  }
}

/// The input as hostile grain directory and table entries, through every decoder: a decoded
/// table lies wholly inside the file, a decoded grain starts inside it.
private func walkEntries(_ bytes: [UInt8], sizes: [UInt64]) {
  var decoders: [(any GrainEntryDecoder, UInt64)] = [
    (COWDEntryDecoder(), COWDHeader.entriesPerTable * 4)
  ]
  for zeroed in [false, true] {
    for compressed in [false, true] {
      decoders.append(
        (SparseEntryDecoder(zeroedGrainEntries: zeroed, compressed: compressed), SparseEntryDecoder.tableBytes))
    }
  }
  if let h = try? SparseExtentHeader(parsing: bytes) {
    decoders.append((SparseEntryDecoder(header: h), SparseEntryDecoder.tableBytes))
  }
  // seSparse geometry from the input's first 32 bytes, unchecked (a decoder must not trust it),
  // and from a parsed header when there is one.
  let words = GrainEntries.decode(bytes, width: 8, count: 4)
  if words.count == 4 {
    let d = SESparseEntryDecoder(
      grainSectors: words[0], grainTablesOffsetSectors: words[1], grainTableSizeSectors: words[2],
      grainsOffsetSectors: words[3])
    decoders.append((d, words[2] &* 512))
  }
  for size in sizes {
    if let h = try? SESparseConstHeader(parsing: bytes, fileSize: size) {
      decoders.append((SESparseEntryDecoder(header: h), h.grainTableSizeSectors * 512))
    }
  }
  for (decoder, tableBytes) in decoders {
    let width = decoder.entryBytes
    let entries = GrainEntries.decode(bytes, width: width, count: 1024)
    for size in sizes {
      for (i, entry) in entries.enumerated() {
        let at = UInt64(i * width)
        if let table = try? decoder.tableOffset(gde: entry, at: at, fileSize: size) {
          expect(table <= size && tableBytes <= size - table, "a table past the end: \(entry) -> \(table), \(size)")
        }
        switch try? decoder.grain(gte: entry, at: at, fileSize: size) {
        case .data(let o), .compressed(let o): expect(o < size, "a grain past the end: \(entry) -> \(o), \(size)")
        default: break
        }
      }
    }
  }
}

/// The input as a stream of markers, walked as a reader of streamOptimized images would: a
/// grain marker's data lies inside the file; a metadata marker is skipped with what follows.
private func walkMarkers(_ bytes: [UInt8], sizes: [UInt64]) {
  for size in sizes {
    var at = 0
    var steps = 0
    while at + 16 <= bytes.count && steps < 4096 {
      steps += 1
      let head = Array(bytes[at..<(at + 16)])
      if let g = try? GrainMarkerHeader(parsing: head, at: UInt64(at), grainBytes: 65536, fileSize: size) {
        expect(
          g.dataOffset == UInt64(at) + 12 && g.compressedBytes <= size - g.dataOffset && g.compressedBytes <= 131072,
          "a grain marker's data past the end: \(g), \(size)")
        let end = UInt64(at) + 12 + g.compressedBytes
        at = Int((end + 511) / 512 * 512)
        continue
      }
      guard let m = try? StreamMarker(parsing: head, baseOffset: UInt64(at)), !m.isGrain else { break }
      // The marker's sector, then `value` sectors of metadata.
      guard m.value < UInt64(bytes.count / 512) else { break }
      at += (Int(m.value) + 1) * 512
    }
  }
}
