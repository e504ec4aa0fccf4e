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
