// The file-level restore layer's one abstraction: a read-only file system inside a volume.
// ext2/3/4, FAT and (later) NTFS implement it; vmdk-files, extraction and the mount use only
// this protocol. Everything a guest wrote is untrusted: names are raw bytes until checked,
// and every size or count a structure claims is checked before it sizes anything.
import VMDKBlock

/// Where the bytes of a file system come from: a byte range of a disk (a partition or the
/// whole disk). Reads are positional and may run concurrently.
public protocol VolumeReader: Sendable {
  /// The volume's size in bytes.
  var size: UInt64 { get }
  /// Fills `buffer` from byte `offset` of the volume. A range past `size` is an error.
  func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws
  /// A name for error messages: the image and the partition.
  var name: String { get }
  /// The disk this volume is a byte range of, and the range's first byte on it; nil when
  /// the volume is not a plain range of a disk (bytes in memory). nil by default.
  var diskRange: (disk: Disk, start: UInt64)? { get }
}

extension VolumeReader {
  public var diskRange: (disk: Disk, start: UInt64)? { nil }

  /// `count` bytes at `offset`; `count` must already be checked against a cap by the caller.
  public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    try bytes.withUnsafeMutableBytes { try read(at: offset, into: $0) }
    return bytes
  }
}

/// A file's identity inside its file system: an inode number (ext), a directory entry's
/// position (FAT), an MFT record number (NTFS).
public typealias FileID = UInt64

public enum FileType: String, Sendable, Codable {
  case regular, directory, symlink, characterDevice, blockDevice, fifo, socket, unknown
}

/// A point in time as the file system stores it, converted to the Unix epoch.
public struct FileTime: Sendable, Hashable, Codable {
  public var seconds: Int64
  public var nanoseconds: UInt32
  public init(seconds: Int64, nanoseconds: UInt32 = 0) {
    self.seconds = seconds
    self.nanoseconds = nanoseconds
  }
}

/// What `stat` answers. Fields a file system does not store are nil.
public struct FileAttributes: Sendable, Hashable, Codable {
  public var id: FileID
  public var type: FileType
  public var size: UInt64
  /// Permission and special bits (07777); the type is in `type`.
  public var mode: UInt32
  public var uid: UInt32?
  public var gid: UInt32?
  public var linkCount: UInt32
  public var accessTime: FileTime?
  public var modificationTime: FileTime?
  /// ext's ctime (inode change); nil where the file system has none.
  public var changeTime: FileTime?
  public var creationTime: FileTime?
  /// True when the times are the guest's local time taken as UTC (FAT stores no zone).
  public var timesAreLocal: Bool
  /// Device number of a character or block device.
  public var device: UInt64?
  public init(
    id: FileID, type: FileType, size: UInt64, mode: UInt32, uid: UInt32? = nil, gid: UInt32? = nil,
    linkCount: UInt32 = 1, accessTime: FileTime? = nil, modificationTime: FileTime? = nil,
    changeTime: FileTime? = nil, creationTime: FileTime? = nil, timesAreLocal: Bool = false,
    device: UInt64? = nil
  ) {
    self.id = id
    self.type = type
    self.size = size
    self.mode = mode
    self.uid = uid
    self.gid = gid
    self.linkCount = linkCount
    self.accessTime = accessTime
    self.modificationTime = modificationTime
    self.changeTime = changeTime
    self.creationTime = creationTime
    self.timesAreLocal = timesAreLocal
    self.device = device
  }
}

/// One name in a folder. `name` is the raw bytes the guest stored (UTF-8 for ext, converted
/// from UTF-16 or the OEM code page for FAT); `.` and `..` are never listed.
public struct DirectoryEntry: Sendable, Hashable {
  public var name: [UInt8]
  public var id: FileID
  public var type: FileType
  public init(name: [UInt8], id: FileID, type: FileType) {
    self.name = name
    self.id = id
    self.type = type
  }
  /// The name for display: invalid UTF-8 is shown with replacement characters.
  public var displayName: String { String(decoding: name, as: UTF8.self) }
}

/// A read-only file system. Calls may run concurrently on one instance.
public protocol FileSystem: Sendable {
  /// "ext2", "ext3", "ext4", "fat12", "fat16", "fat32", "ntfs".
  var kind: String { get }
  var label: String? { get }
  var uuid: String? { get }
  /// The root folder.
  var root: FileID { get }
  /// Notes a user should see: a journal that needs replay, a volume marked dirty, FAT times
  /// that are local time.
  var warnings: [String] { get }
  /// The entries of a folder, in on-disk order, without `.` and `..`.
  func list(_ id: FileID) throws -> [DirectoryEntry]
  /// Calls `body` with each entry of a folder, in `list`'s order, the name lent for the call
  /// only: what a walk uses, without building the list or an array per name. When the
  /// folder cannot be read whole, the entries before the damage have been given when the
  /// error is thrown. By default through `list`.
  func forEachEntry(
    in folder: FileID, _ body: (_ name: UnsafeBufferPointer<UInt8>, _ id: FileID, _ type: FileType) throws -> Void
  ) throws
  func stat(_ id: FileID) throws -> FileAttributes
  /// Reads up to `buffer.count` bytes of a regular file from `offset`; returns the count read
  /// (0 at or past the end). Holes and uninitialised extents read as zeros.
  func read(_ id: FileID, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
  /// A symbolic link's target, as raw bytes.
  func readlink(_ id: FileID) throws -> [UInt8]
  /// The byte ranges of a regular file that hold data (the rest are holes), sorted; used to
  /// restore sparse files sparse. The default says the whole file is data.
  func dataRanges(_ id: FileID) throws -> [Range<UInt64>]
  /// The entry of folder `folder` named `name`, by the file system's own rule for names:
  /// exact bytes (the default, ext), ASCII case folded (FAT), $UpCase (NTFS). An exact match
  /// wins. Path lookup (`lookup(_:)`) goes through it.
  func entry(named name: [UInt8], in folder: FileID) throws -> DirectoryEntry?
  /// Whether files can carry named data streams (NTFS); a ":" in a name is then a stream
  /// separator for the tools. False by default.
  var hasNamedStreams: Bool { get }
  /// The named data streams of a file or folder, in on-disk order (none by default).
  func streams(_ id: FileID) throws -> [NamedStream]
  /// The named stream of a file that `name` means on this file system (on NTFS without
  /// regard to case, as Windows opens `file:Stream`), with its on-disk name; nil when none.
  /// By default the stream of exactly that name.
  func namedStream(_ name: [UInt8], of id: FileID) throws -> NamedStream?
  /// Reads up to `buffer.count` bytes of the stream `name` from `offset`; the count read.
  func readStream(_ id: FileID, named name: String, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer)
    throws -> Int
  /// The Windows file attributes (FILE_ATTRIBUTE_*), where the file system keeps them.
  func windowsAttributes(_ id: FileID) throws -> UInt32?
  /// Where files' bytes lie on the volume, when the file system can tell (FileMapping.swift);
  /// nil by default.
  var mapping: (any FileMapping)? { get }
}

/// A named data stream of a file (an NTFS alternate data stream).
public struct NamedStream: Sendable, Hashable {
  public var name: [UInt8]
  public var size: UInt64
  public init(name: [UInt8], size: UInt64) {
    self.name = name
    self.size = size
  }
  public var displayName: String { String(decoding: name, as: UTF8.self) }
}

extension FileSystem {
  public var warnings: [String] { [] }
  public func forEachEntry(
    in folder: FileID, _ body: (_ name: UnsafeBufferPointer<UInt8>, _ id: FileID, _ type: FileType) throws -> Void
  ) throws {
    for e in try list(folder) { try e.name.withUnsafeBufferPointer { try body($0, e.id, e.type) } }
  }
  public var hasNamedStreams: Bool { false }
  public func streams(_ id: FileID) throws -> [NamedStream] { [] }
  public func namedStream(_ name: [UInt8], of id: FileID) throws -> NamedStream? {
    try streams(id).first { $0.name == name }
  }
  public func readStream(
    _ id: FileID, named name: String, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer
  ) throws -> Int {
    throw VMDKError(.fileNotFound, "\(kind): no stream \"\(name)\" (this file system has no named streams)")
  }
  public func windowsAttributes(_ id: FileID) throws -> UInt32? { nil }
  public var mapping: (any FileMapping)? { nil }
  public func entry(named name: [UInt8], in folder: FileID) throws -> DirectoryEntry? {
    try list(folder).first { $0.name == name }
  }
  public func dataRanges(_ id: FileID) throws -> [Range<UInt64>] {
    let size = try stat(id).size
    return size == 0 ? [] : [0..<size]
  }
}

/// A file-system reader that can recognise its own format. `probe` returns nil for "not mine"
/// and throws a `VMDKError` (.corruptFileSystem, .fileSystemLimit) for "mine but broken".
public protocol FileSystemProbe {
  static func probe(_ volume: any VolumeReader) throws -> (any FileSystem)?
}
