// The registry of file-system readers and the one call that finds a disk's file systems:
// partition table, then a probe of every partition.
import VMDKBlock

public enum FileSystems {
  /// The readers, tried in order on every volume.
  public static var probes: [any FileSystemProbe.Type] {
    [ExtFileSystem.self, FATFileSystem.self, NTFSFileSystem.self]
  }

  /// The file system in `volume`: nil when no reader recognises it. A reader that says "mine
  /// but broken" wins over the others saying "not mine": its error is thrown.
  public static func open(_ volume: any VolumeReader) throws -> (any FileSystem)? {
    var broken: (any Error)?
    for p in probes {
      do {
        if let fs = try p.probe(volume) { return fs }
      } catch {
        if broken == nil { broken = error }
      }
    }
    if let broken { throw broken }
    return nil
  }
}

/// A disk's partition table and, for each partition, the file system found in it.
public struct DiskLayout: Sendable {
  public struct Entry: Sendable {
    public var partition: Partition
    public var volume: DiskVolume
    /// The file system, when a reader recognised it.
    public var fileSystem: (any FileSystem)?
    /// Why a reader that recognised the volume could not open it.
    public var error: VMDKError?
  }
  public var table: PartitionTable
  public var entries: [Entry]

  /// Reads the table of `disk` and probes every partition. `name` names the disk in errors.
  public init(disk: Disk, name: String) throws {
    let whole = DiskVolume(disk: disk, name: name)
    table = try PartitionTable.read(whole)
    entries = []
    for p in table.partitions {
      let label = table.scheme == .none ? name : "\(name) partition \(p.index)"
      let v = try DiskVolume(disk: disk, partition: p, name: label)
      var e = Entry(partition: p, volume: v, fileSystem: nil, error: nil)
      do {
        e.fileSystem = try FileSystems.open(v)
      } catch let err as VMDKError {
        e.error = err
      }
      entries.append(e)
    }
  }

  /// The file system to use: partition `index` (1-based, as listed), or the only partition
  /// holding one.
  public func fileSystem(partition index: Int?) throws -> (entry: Entry, fileSystem: any FileSystem) {
    if let index {
      guard let e = entries.first(where: { $0.partition.index == index }) else {
        let known = entries.map { String($0.partition.index) }.joined(separator: ", ")
        throw VMDKError(.invalidArgument, "no partition \(index) (the disk has: \(known.isEmpty ? "none" : known))")
      }
      if let err = e.error { throw err }
      guard let fs = e.fileSystem else {
        throw VMDKError(
          .notSupported, "partition \(index) holds no file system this toolkit reads", file: e.volume.name)
      }
      return (e, fs)
    }
    let found = entries.filter { $0.fileSystem != nil }
    if found.count == 1, let e = found.first, let fs = e.fileSystem { return (e, fs) }
    if found.isEmpty {
      if let err = entries.compactMap(\.error).first { throw err }
      throw VMDKError(.notSupported, "no partition holds a file system this toolkit reads")
    }
    let list = found.map { "\($0.partition.index) (\($0.fileSystem?.kind ?? ""))" }.joined(separator: ", ")
    throw VMDKError(.invalidArgument, "several partitions hold file systems: \(list); choose one with --partition N")
  }
}
