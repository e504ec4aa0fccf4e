// Writer throughput: ImageCreator writers fed sequential writes of one size, data or zeros,
// then committed (fsync). Built by run-write.sh against the release build of VMDKBlock.
// Usage: write-bench DIR [huge]  ("huge": only the 60 TiB sparse case, for peak RSS).

import Foundation
import VMDKBlock

let dir = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "/tmp/vmdk-bench"
let hugeOnly = CommandLine.arguments.count > 2 && CommandLine.arguments[2] == "huge"

func run(_ type: DiskType, _ label: String, capacity: UInt64, bytes total: UInt64, chunk: Int, zeros: Bool) throws {
  let path = "\(dir)/write-bench.vmdk"
  var buffer = [UInt8](repeating: 0, count: chunk)
  if !zeros {
    for i in 0..<chunk { buffer[i] = UInt8(truncatingIfNeeded: i &* 131 &+ 1) }
  }
  let writer = try ImageCreator.create(
    path: path, options: CreateOptions(type: type, capacityBytes: capacity), overwrite: true)
  let start = Date()
  var offset: UInt64 = 0
  try buffer.withUnsafeBytes { b in
    while offset < total {
      try writer.write(at: offset, b)
      offset += UInt64(chunk)
    }
  }
  // The very end of the disk too, so that the last grain table is written.
  if total <= capacity - UInt64(chunk) {
    try buffer.withUnsafeBytes { try writer.write(at: capacity - UInt64(chunk), $0) }
  }
  let written = Date().timeIntervalSince(start)
  try writer.commit()
  let committed = Date().timeIntervalSince(start)
  let mib = Double(total) / Double(1 << 20)
  print(
    "\(type.rawValue) \(label): \(Int(mib / written)) MiB/s writing, \(Int(mib / committed)) MiB/s with commit (fsync), \(String(format: "%.2f", committed)) s"
  )
  for name in ["write-bench.vmdk", "write-bench-flat.vmdk"] { try? FileManager.default.removeItem(atPath: "\(dir)/\(name)") }
}

if hugeOnly {
  try run(.monolithicSparse, "60 TiB, 64 MiB of data", capacity: 60 << 40, bytes: 64 << 20, chunk: 1 << 20, zeros: false)
} else {
  for type in [DiskType.monolithicFlat, .monolithicSparse] {
    try run(type, "data, 1 MiB writes", capacity: 2 << 30, bytes: 2 << 30, chunk: 1 << 20, zeros: false)
    try run(type, "data, 64 KiB writes", capacity: 2 << 30, bytes: 2 << 30, chunk: 64 << 10, zeros: false)
    try run(type, "data, 4 KiB writes", capacity: 1 << 30, bytes: 1 << 30, chunk: 4 << 10, zeros: false)
    try run(type, "zeros, 4 MiB writes", capacity: 32 << 30, bytes: 32 << 30, chunk: 4 << 20, zeros: true)
  }
}
