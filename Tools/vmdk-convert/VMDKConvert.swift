// vmdk-convert SRC DST: a new image from any readable one (a snapshot chain is flattened).
// The output is written under temporary names and renamed into place only when complete and
// flushed; after a failure or Ctrl-C neither a partial DST nor a temporary file is left.

import ArgumentParser
import Foundation
import ToolSupport
import VMDKBlock
import VMDKFormat
import VMDKTransport

@main
struct VMDKConvert: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vmdk-convert",
    abstract: "Convert a disk image (any VMDK variant, a snapshot chain, raw) into a new image.",
    discussion: """
      TYPE is one of: \(DiskType.allCases.map(\.rawValue).joined(separator: ", ")).

      The source's disk database (adapter type, geometry, hardware version, uuid) is kept \
      unless an option overrides it. Unallocated and all-zero ranges are neither read twice \
      nor written. The output is written under a temporary name and renamed into place when \
      complete and flushed.

      DST may be an NBD export (nbd://, nbds://, nbd+unix://): a restore, which writes the \
      source's data into it and zeroes every other range.

      Exit status: 0 done; 1 failed (one line on stderr, no output left); 130 interrupted.
      """)

  @Argument(help: "The source image (descriptor, sparse file, chain top or raw image).") var source: String
  @Argument(
    help: """
      The new image, or an NBD export to restore into (nbd://host[:port]/export, nbds://..., \
      nbd+unix:///export?socket=PATH): the export is overwritten with the whole source disk.
      """)
  var destination: String

  @Option(name: [.short, .long], help: "Output type (default monolithicSparse; an NBD export is raw).")
  var type: DiskType?
  @Option(help: "Adapter type (ide, buslogic, lsilogic, legacyESX, pvscsi); default: the source's.")
  var adapterType: AdapterType?
  @Option(help: "Virtual hardware version; default: the source's, or 4.") var hardwareVersion: String?
  @Option(help: "Grain size of sparse outputs (e.g. 64K; a power of two from 8K to 4M).") var grainSize: String = "64K"
  @Flag(help: "Zeroed-grain entries (header version 2) in sparse outputs.") var zeroedGrains = false
  @Option(help: "Largest extent of the split types (e.g. 2G).") var splitSize: String = "2G"
  @Option(help: "zlib level of streamOptimized grains, 1 (fastest) to 9 (smallest).") var compressionLevel: Int = 6
  @Option(help: "ddb.uuid of the new image, e.g. 60 00 C2 9f ...; default: the source's.") var uuid: String?
  @Flag(help: "Replace DST if it exists.") var force = false
  @Flag(
    help: """
      Do not flush the output to stable storage before renaming it into place (as qemu-img \
      convert does by default): faster, but a power cut soon after can leave a damaged image.
      """)
  var noFlush = false
  @Flag(name: [.short, .long], help: "No progress bar.") var quiet = false
  @Flag(help: "Read the result back and compare its digest with the source's.") var verify = false
  @OptionGroup(title: "Opening the source") var open: OpenFlags

  func run() throws {
    // Past a file-size limit, write() must fail with EFBIG (a "disk full" error that cleans
    // up) rather than kill the process with SIGXFSZ.
    signal(SIGXFSZ, SIG_IGN)
    let cancel = CancelFlag()
    let signals = SignalWatch(cancel: cancel)
    defer { signals.stop() }
    do {
      try convert(cancel: cancel)
    } catch let e as VMDKError where e.code == .cancelled {
      printError("\(toolName): interrupted; \(destination) was not written")
      throw ExitCode(130)
    } catch let e as ExitCode {
      throw e
    } catch {
      printError("\(toolName): \(toolMessage(error))")
      throw ExitCode(1)
    }
  }

  private func convert(cancel: CancelFlag) throws {
    let disk = try Disk.open(source, options: open.resolvedOptions())
    switch try DiskLocation(parsing: destination) {
    case .nbd: return try restore(disk, cancel: cancel)
    case .http:
      throw VMDKError(.fileReadOnly, "HTTP locations are read-only; they cannot be written", file: destination)
    case .file: break
    }
    var options = try createOptions(for: disk)
    options.capacityBytes = disk.capacityBytes
    if try sameFile(source, destination) {
      throw VMDKError(.invalidArgument, "the destination is the source", file: destination)
    }
    // Replacing a disk that snapshots sit on would change what they read (restore guard).
    if force { try RestoreGuard.refuseIfSnapshots(of: destination, doing: "replacing it") }
    let writer = try ImageCreator.create(path: destination, options: options, overwrite: force)
    var committed = false
    defer { if !committed { writer.abort() } }
    let bar = ProgressBar(total: disk.capacityBytes, quiet: quiet)
    var copy = CopyOptions()
    copy.digest = verify ? .sha256 : nil
    // Sparse outputs skip whole grains; flat and raw outputs leave 4 KiB holes, as qemu-img
    // convert does (its -S 4k).
    copy.zeroBlockBytes = Int(options.type.isSparse ? options.grainSectors * 512 : 4096)
    let result = try disk.copy(to: writer, options: copy, cancel: cancel) { bar.update($0) }
    bar.finish()
    if cancel.isCancelled { throw VMDKError(.cancelled, "stopped by the user") }
    try writer.commit()
    committed = true
    if verify, let want = result.digest { try check(want, outputOpenOptions()) }
  }

  /// A restore: the whole source written into an existing NBD export (data where the source
  /// has data, zeros everywhere else). Only bytes read correctly are written; a failure leaves
  /// the export partly written.
  private func restore(_ disk: Disk, cancel: CancelFlag) throws {
    if let type, type != .raw {
      throw VMDKError(
        .invalidArgument, "an NBD export is a raw disk: --type \(type.rawValue) does not apply", file: destination)
    }
    var o = try open.resolvedOptions()
    o.writable = true
    o.format = .raw
    let result: CopyResult
    do {
      // The target's connection ends here: servers that take one client at a time (qemu-nbd's
      // default) then accept the verification's.
      let target = try Disk.open(destination, options: o)
      let writer = try RestoreWriter(disk: target, capacityBytes: disk.capacityBytes)
      // Refused before anything is written: the digest of a larger export is not the source's.
      if verify && target.capacityBytes != disk.capacityBytes {
        throw VMDKError(
          .invalidArgument,
          "--verify needs an export of the source's size (\(disk.capacityBytes) bytes); this one has \(target.capacityBytes)",
          file: destination)
      }
      let bar = ProgressBar(total: disk.capacityBytes, quiet: quiet)
      var copy = CopyOptions()
      copy.digest = verify ? .sha256 : nil
      result = try disk.copy(to: writer, options: copy, cancel: cancel) { bar.update($0) }
      bar.finish()
      if cancel.isCancelled { throw VMDKError(.cancelled, "stopped by the user") }
      try writer.commit()
      target.disconnect()
    }
    if verify, let want = result.digest {
      var ro = try open.resolvedOptions()
      ro.format = .raw
      try check(want, ro)
    }
  }

  /// --verify: the destination read back must have the source's sha256.
  private func check(_ want: String, _ options: OpenOptions) throws {
    let got = try Disk.open(destination, options: options).digest(.sha256)
    guard got == want else {
      throw VMDKError(
        .failure, "verification failed: the new image's sha256 is \(got), the source's \(want)", file: destination)
    }
    if !quiet { printError("verified: sha256 \(got)") }
  }

  /// Opening the output for --verify: raw outputs are raw; extents are next to it.
  private func outputOpenOptions() -> OpenOptions {
    var o = OpenOptions()
    o.format = outputType == .raw ? .raw : .vmdk
    return o
  }

  /// The new image's options: the source's disk database kept whole (the library's copy
  /// policy, `CreateOptions(inheriting:)`), then what the command line overrides.
  func createOptions(for disk: Disk) throws -> CreateOptions {
    var o = CreateOptions(type: outputType, inheriting: disk, for: .copy)
    guard let grain = parseSize(grainSize), grain % 512 == 0 else {
      throw VMDKError(.invalidArgument, "--grain-size \(grainSize): a size in bytes such as 64K")
    }
    o.grainSectors = grain / 512
    guard let split = parseSize(splitSize) else {
      throw VMDKError(.invalidArgument, "--split-size \(splitSize): a size in bytes such as 2G")
    }
    o.splitSizeBytes = split
    o.zeroedGrains = zeroedGrains
    o.flushBeforeRename = !noFlush
    o.compressionLevel = compressionLevel
    if let adapterType { o.adapterType = adapterType }
    if let hardwareVersion { o.hardwareVersion = hardwareVersion }
    if let uuid {
      guard let u = CreateOptions.parseVMwareUUID(uuid) else {
        throw VMDKError(.invalidArgument, "--uuid \(uuid): 16 bytes in hex, e.g. 60 00 c2 9f 48 66 ae a5-2f 18 ...")
      }
      o.uuid = u
    }
    try o.validate()
    return o
  }

  /// The output type: --type, else monolithicSparse.
  private var outputType: DiskType { type ?? .monolithicSparse }

  private func sameFile(_ a: String, _ b: String) throws -> Bool {
    var sa = stat()
    var sb = stat()
    guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
  }
}

/// SIGINT and SIGTERM set the cancel flag; the copy loop stops at the next chunk, the writer
/// removes its temporary files, and the tool exits with status 130.
final class SignalWatch: @unchecked Sendable {
  private var sources: [DispatchSourceSignal] = []

  init(cancel: CancelFlag) {
    for sig in [SIGINT, SIGTERM] {
      signal(sig, SIG_IGN)
      let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
      s.setEventHandler { cancel.cancel() }
      s.resume()
      sources.append(s)
    }
  }

  func stop() { sources.forEach { $0.cancel() } }
}
