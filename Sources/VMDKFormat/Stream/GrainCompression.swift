// zlib-format (RFC 1950) grain compression, as every VMDK reader and writer uses it despite
// the specification's mention of raw deflate.

import CZlib

/// Inflates and deflates grains in the zlib format.
public enum GrainCompression {
  /// Inflates `source` into `destination`; returns the bytes produced. Throws
  /// `corruptCompressedData` when the stream is damaged or would not fit `destination`.
  public static func inflate(
    _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer,
    offset: UInt64
  ) throws -> Int {
    var destLen = uLong(destination.count)
    var srcLen = uLong(source.count)
    guard source.count > 0, let src = source.baseAddress, let dst = destination.baseAddress else {
      throw FormatError(.corruptCompressedData, offset: offset, "empty compressed grain")
    }
    let rc = uncompress2(
      dst.assumingMemoryBound(to: Bytef.self), &destLen, src.assumingMemoryBound(to: Bytef.self),
      &srcLen)
    guard rc == Z_OK else {
      let why: String
      switch rc {
      case Z_BUF_ERROR:
        why =
          destLen == uLong(destination.count)
          ? "inflates to more than \(destination.count) bytes" : "the stream ends early"
      case Z_DATA_ERROR: why = "bad zlib data or checksum"
      case Z_MEM_ERROR: why = "out of memory"
      default: why = "zlib error \(rc)"
      }
      throw FormatError(.corruptCompressedData, offset: offset, "compressed grain: \(why)")
    }
    return Int(destLen)
  }

  /// Largest output of `deflate` for `count` input bytes.
  public static func bound(_ count: Int) -> Int { Int(compressBound(uLong(count))) }

  /// Compresses `source` into `destination` at `level` (0-9); returns the bytes produced.
  public static func deflate(
    _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, level: Int32
  ) -> Int? {
    var destLen = uLong(destination.count)
    let rc = compress2(
      destination.baseAddress!.assumingMemoryBound(to: Bytef.self), &destLen,
      source.baseAddress!.assumingMemoryBound(to: Bytef.self), uLong(source.count), level)
    return rc == Z_OK ? Int(destLen) : nil
  }
}
