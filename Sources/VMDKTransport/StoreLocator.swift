// Where a disk's files live: the local file system, or an HTTP(S) server. A locator opens a
// file by its location and resolves the names a descriptor gives (extents, a parent) against
// the descriptor's own location, refusing names that leave its folder unless allowed.

/// Opens files and resolves descriptor names for one kind of location.
public protocol StoreLocator: Sendable {
  /// The transport, as `vmdk-inspect info` shows it: file, http or https.
  var transport: Transport { get }
  /// Opens the file at `location` (a path or a URL).
  func open(_ location: String, writable: Bool) throws -> any ByteStore
  /// Resolves `name`, as written in the descriptor at `descriptor`, to a location to open.
  /// `what` names the role ("extent", "parent") for messages; a missing file throws
  /// `missingCode`; a name outside the descriptor's folder throws `pathOutsideFolder` unless
  /// `allowExternal`.
  func resolve(
    _ name: String, from descriptor: String, allowExternal: Bool, what: String, missingCode: VMDKError.Code
  ) throws -> String
  /// A canonical form of `location` for loop detection (the real path of a file).
  func canonical(_ location: String) -> String
}
