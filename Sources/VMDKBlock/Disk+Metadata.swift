// The disk database (DDB) of a chain, and the facts `info` reports that come from it.

import VMDKFormat
import VMDKTransport

extension Disk {
  /// The disk database as VMware reads it: for each key, the value from the lowest link of
  /// the chain that has it (VMware's search starts at the bottom link). Keys without the
  /// `ddb.` prefix, in the order first seen from the top link down.
  public var diskDatabase: [(key: String, value: String)] {
    var order: [String] = []
    var values: [String: (String, String)] = [:]
    for link in links where link.hasDescriptor {
      for (k, v) in link.descriptor.diskDatabase {
        let key = String(k.dropFirst(4))
        let lower = key.lowercased()
        if values[lower] == nil { order.append(lower) }
        values[lower] = (key, v)
      }
    }
    return order.compactMap { values[$0] }
  }

  /// A disk database value, with or without the `ddb.` prefix; case-insensitive.
  public func metadata(_ key: String) -> String? {
    let k = (key.lowercased().hasPrefix("ddb.") ? String(key.dropFirst(4)) : key).lowercased()
    return diskDatabase.first { $0.key.lowercased() == k }?.value
  }

  /// Physical geometry from the disk database, when all three values are there.
  public var geometry: (cylinders: UInt64, heads: UInt64, sectors: UInt64)? {
    guard let c = metadata("geometry.cylinders").flatMap({ UInt64($0) }),
      let h = metadata("geometry.heads").flatMap({ UInt64($0) }),
      let s = metadata("geometry.sectors").flatMap({ UInt64($0) })
    else { return nil }
    return (c, h, s)
  }

  /// Bytes the top link's files occupy on the host (qemu-img's "disk size").
  public func allocatedHostBytes() throws -> UInt64? {
    var total: UInt64 = 0
    var known = false
    var seen = Set<String>()
    for e in top.extents {
      guard let p = e.path, !seen.contains(p) else { continue }
      seen.insert(p)
      if let n = try e.reader.store?.allocatedBytes() {
        total += n
        known = true
      }
    }
    if top.descriptorLocation == .file, !seen.contains(top.path) {
      if let n = try? VMDKTransportFile.allocatedBytes(top.path) { total += n }
    }
    return known ? total : nil
  }
}

enum VMDKTransportFile {
  static func allocatedBytes(_ path: String) throws -> UInt64? {
    try LocalFile(path: path).allocatedBytes()
  }
}
