// The local file system as a StoreLocator: files opened as LocalFile, descriptor names resolved
// by PathResolver (relative to the descriptor's folder, which they may not leave unless allowed).

import VMDKTransport

/// Local files.
struct LocalLocator: StoreLocator {
  var transport: Transport { .file }

  func open(_ location: String, writable: Bool) throws -> any ByteStore {
    try LocalFile(path: location, writable: writable)
  }

  func resolve(
    _ name: String, from descriptor: String, allowExternal: Bool, what: String, missingCode: VMDKError.Code
  ) throws -> String {
    try PathResolver.resolve(name, from: descriptor, allowExternal: allowExternal, what: what, missingCode: missingCode)
  }

  func canonical(_ location: String) -> String { PathResolver.realPath(location) ?? location }
}
