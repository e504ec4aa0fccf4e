// The one entry point for making a new image: checks the options and picks the writer for
// the type.

import VMDKFormat
import VMDKTransport

/// Creates new images.
public enum ImageCreator {
  /// Creates the files of a new image of `options.type` at `path` (the descriptor's path, or
  /// the only file's) and returns the writer that fills it. Nothing appears under the final
  /// names until `commit()`. Throws `invalidArgument` for bad options, `fileExists` when an
  /// output exists and `overwrite` is off.
  public static func create(path: String, options: CreateOptions, overwrite: Bool = false) throws -> any ImageWriter {
    try Maintenance.requireLocal(path)
    try options.validate()
    if options.type != .raw { try OutputName.checkDescriptorName(path) }
    switch options.type {
    case .raw, .monolithicFlat, .twoGbMaxExtentFlat, .vmfs, .vmfsThin:
      return try FlatWriter(path: path, options: options, overwrite: overwrite)
    case .monolithicSparse, .twoGbMaxExtentSparse:
      return try SparseWriter(path: path, options: options, overwrite: overwrite)
    case .streamOptimized:
      let files = OutputFiles(overwrite: overwrite, flush: options.flushBeforeRename)
      do {
        return try StreamWriter(path: path, options: options, files: files)
      } catch {
        files.abort()
        throw error
      }
    }
  }
}
