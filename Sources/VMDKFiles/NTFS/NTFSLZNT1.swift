// LZNT1, the compression of NTFS compressed files: a compression unit is a sequence of chunks
// of at most 4096 output bytes, each with a u16 header (size - 1 in bits 0-11, compressed in
// bit 15). A compressed chunk is groups of a flag byte and 8 items, literal bytes or u16
// back-references whose offset/length split depends on the position in the chunk.
import VMDKBlock

public enum NTFSLZNT1 {
  public static let chunkSize = 4096

  /// Decodes `input` into exactly `outputSize` bytes; what the chunks do not cover is zeros.
  /// Malformed input (a reference before the chunk's start or past its end, a chunk past the
  /// input) is an error, never a trap.
  public static func decompress(_ input: [UInt8], outputSize: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: max(0, outputSize))
    var p = 0
    var chunkStart = 0
    while p + 2 <= input.count, chunkStart < outputSize {
      let header = Int(input[p]) | Int(input[p + 1]) << 8
      if header == 0 { break }
      let size = (header & 0xFFF) + 1
      let dataStart = p + 2
      guard size <= input.count - dataStart else {
        throw NTFSError.corrupt("LZNT1: a chunk of \(size) bytes runs past the \(input.count)-byte input")
      }
      let chunkEnd = min(outputSize, chunkStart + chunkSize)
      if header & 0x8000 == 0 {
        // Stored: the bytes as they are.
        let n = min(size, chunkEnd - chunkStart)
        for i in 0..<n { out[chunkStart + i] = input[dataStart + i] }
      } else {
        var q = dataStart
        let end = dataStart + size
        var o = chunkStart
        decode: while q < end {
          let flags = input[q]
          q += 1
          for bit in 0..<8 {
            guard q < end else { break decode }
            if flags & (1 << bit) == 0 {
              guard o < chunkEnd else {
                throw NTFSError.corrupt("LZNT1: a chunk decodes to more than \(chunkSize) bytes")
              }
              out[o] = input[q]
              o += 1
              q += 1
            } else {
              guard q + 2 <= end else { throw NTFSError.corrupt("LZNT1: a back-reference is cut off") }
              let token = Int(input[q]) | Int(input[q + 1]) << 8
              q += 2
              let pos = o - chunkStart
              guard pos > 0 else { throw NTFSError.corrupt("LZNT1: a back-reference at the start of a chunk") }
              var lengthBits = 12
              var x = pos - 1
              while x >= 16 {
                lengthBits -= 1
                x >>= 1
              }
              let displacement = (token >> lengthBits) + 1
              let length = (token & ((1 << lengthBits) - 1)) + 3
              guard displacement <= pos else {
                throw NTFSError.corrupt("LZNT1: a back-reference of \(displacement) bytes at position \(pos)")
              }
              guard length <= chunkEnd - o else {
                throw NTFSError.corrupt("LZNT1: a back-reference runs past the chunk's end")
              }
              for _ in 0..<length {
                out[o] = out[o - displacement]
                o += 1
              }
            }
          }
        }
      }
      p = dataStart + size
      chunkStart += chunkSize
    }
    return out
  }
}
