// All-zero detection, used wherever zero ranges are skipped (copying, writers, compression).

import Foundation

/// All-zero detection without a zero buffer: the first 8 bytes are zero and every byte equals
/// the one 8 bytes further on. memcmp is vectorised and stops at the first difference, so
/// data is rejected after a few bytes and zeros are scanned at memory speed.
@inline(__always)
func isAllZero(_ p: UnsafeRawPointer, _ count: Int) -> Bool {
  if count < 16 {
    for i in 0..<count where p.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
    return true
  }
  guard p.loadUnaligned(as: UInt64.self) == 0 else { return false }
  return memcmp(p, p + 8, count - 8) == 0
}

/// Whether every byte of `bytes` is zero.
@inline(__always)
public func isAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
  guard let base = bytes.baseAddress else { return true }
  return isAllZero(base, bytes.count)
}
