// How a disk is opened: format probing, which paths an untrusted descriptor may reach, CID
// checking and the chain depth cap.

import VMDKFormat
import VMDKTransport

/// Options for `Disk.open`.
public struct OpenOptions: Sendable {
  /// How to recognise the image.
  public enum Format: String, Sendable, CaseIterable {
    /// VMDK when the file has a VMDK signature or looks like a descriptor, raw otherwise.
    case auto
    /// VMDK only: anything else is an error.
    case vmdk
    /// Raw: the file is the virtual disk, byte for byte.
    case raw
  }

  public var format: Format = .auto
  /// Let extent files and parents live outside the folder of the descriptor that names them
  /// (linked clones keep their parent elsewhere). Off by default: a descriptor is untrusted.
  public var allowExternalPaths = false
  /// Open a child whose parentCID differs from its parent's CID (the content may be wrong).
  public var ignoreCIDMismatch = false
  /// Open only the named link, not its parents (VixDiskLib's SINGLE_LINK).
  public var singleLink = false
  /// Most links in a chain.
  public var maxChainDepth = Limits.defaultMaxChainDepth
  /// Bytes of grain directory and grain table pages kept in memory for the whole disk.
  public var tableCacheBytes = 16 << 20
  /// Open the top link for writing: its descriptor and extent files read-write and locked
  /// against a second writer (parents stay read-only). See `Disk.write(at:_:)`.
  public var writable = false
  /// With `writable`: open even when snapshots in the disk's folder name it as their parent
  /// (with its CID). Off by default, because a write changes the disk under its snapshots
  /// (`hasSnapshots`, see `RestoreGuard`); commit uses it to write into the parent it merges into.
  public var allowWritingUnderSnapshots = false

  /// Network behaviour (timeouts, retries, TLS) for NBD and HTTP locations.
  public var transport = TransportOptions()
  /// The transports that may be used ("file", "nbd", "nbds", "http", "https"), in order of
  /// preference: a location whose transport is not listed is refused.
  public var transports: [Transport] = Transport.allCases

  public init() {}
}
