// vmdk-serve: any disk this toolkit opens as an NBD export. A thin shell over NBDServer: it
// opens the images (read-only, read-write, or through a snapshot overlay), listens, writes the
// pid file once it listens, and on SIGTERM or SIGINT lets requests in flight finish, flushes
// and closes the disks (releasing their locks), and removes what it made.

import ArgumentParser
import Dispatch
import Foundation
import NBDServer
import ToolSupport
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

extension NBDTLSConfiguration.Mode: ExpressibleByArgument {}

@main
struct VMDKServe: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vmdk-serve", abstract: "Serve VMDK disks (any variant, any chain) over NBD.",
    discussion: """
      IMAGE is a path or any location the toolkit opens; IMAGE=NAME serves it under NAME \
      (several IMAGEs: several exports, listed by NBD_OPT_LIST). Read-only unless --read-write \
      (writes go into the chain's top link, which is locked) or --overlay CHILD (writes go into \
      a snapshot child, made now or reused when it names IMAGE with its CID). The server runs \
      in the foreground until SIGTERM or SIGINT.
      Exit status: 0 after a clean shutdown; 1 failed (one line on stderr).
      """)

  @Argument(help: "IMAGE or IMAGE=NAME.") var images: [String]
  @Option(help: "Listen on HOST:PORT (default 127.0.0.1:10809; [::1]:PORT for IPv6).") var tcp: String?
  @Option(help: "Listen on a Unix socket at PATH instead.") var socket: String?
  @Option(help: "The export's name (one IMAGE only; default: the empty name).") var exportName: String?
  @Flag(help: "Serve the disk read-write: writes go into the top link.") var readWrite = false
  @Option(help: "Serve read-write through a snapshot child at this path (made or reused).") var overlay: String?
  @Flag(help: "Delete the overlay child at exit.") var discardOverlay = false
  @Option(help: "Connections served at once.") var connections: Int = 16
  @Option(help: "Write the process id here once the server listens.") var pidFile: String?
  @Flag(help: "Stay in the foreground (always the case; accepted for qemu-nbd's scripts).") var foreground = false
  @Option(help: "TLS: off, on (offered) or require (default: on with a certificate, else off).") var tls:
    NBDTLSConfiguration.Mode?
  @Option(help: "The server's PEM certificate (with its chain).") var tlsCert: String?
  @Option(help: "The certificate's PEM private key.") var tlsKey: String?
  @Option(help: "PEM CA certificates: clients must present a certificate that chains to them.") var tlsCa: String?
  @Option(help: "TLS-PSK keys, `identity:hexkey` lines (qemu's and nbdkit's format).") var tlsPsk: String?
  @OptionGroup(title: "Opening the images") var open: OpenFlags

  func validate() throws {
    if readWrite && overlay != nil { throw ValidationError("--read-write and --overlay exclude each other") }
    if discardOverlay && overlay == nil { throw ValidationError("--discard-overlay needs --overlay") }
    if overlay != nil && images.count != 1 { throw ValidationError("--overlay serves exactly one IMAGE") }
    if exportName != nil && images.count != 1 { throw ValidationError("--export-name names one IMAGE; use IMAGE=NAME") }
    if tcp != nil && socket != nil { throw ValidationError("--tcp and --socket exclude each other") }
    if connections < 1 { throw ValidationError("--connections must be at least 1") }
    if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
    if let mode = tls, mode != .off, tlsCert == nil, tlsPsk == nil {
      throw ValidationError("--tls=\(mode.rawValue) needs --tls-cert and --tls-key, or --tls-psk")
    }
    if tlsCa != nil && tlsCert == nil { throw ValidationError("--tls-ca needs --tls-cert and --tls-key") }
  }

  func run() throws {
    // The signals may be blocked by whoever started us (a test runner); shutdown needs them.
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGTERM)
    sigaddset(&set, SIGINT)
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
    signal(SIGTERM, SIG_IGN)
    signal(SIGINT, SIG_IGN)
    signal(SIGPIPE, SIG_IGN)

    try runReporting(status: 1) {
      let base = try open.resolvedOptions()
      var exports: [NBDExport] = []
      var disks: [Disk] = []
      defer {
        for d in disks { try? d.close() }
      }
      for spec in images {
        var path = spec
        var name = exportName ?? ""
        if exportName == nil, let eq = spec.lastIndex(of: "="), !FileManager.default.fileExists(atPath: spec) {
          path = String(spec[..<eq])
          name = String(spec[spec.index(after: eq)...])
        }
        var options = base
        if let overlay {
          try Self.prepareOverlay(overlay, of: path, options: base)
          options.writable = true
          path = overlay
        } else {
          options.writable = readWrite
        }
        let disk = try Disk.open(path, options: options)
        disks.append(disk)
        exports.append(NBDExport(name: name, disk: disk))
      }
      var configuration = NBDServerConfiguration()
      configuration.maxConnections = connections
      if tlsCert != nil || tlsPsk != nil, tls != .off {
        configuration.tls = NBDTLSConfiguration(
          mode: tls ?? .on, certificateFile: tlsCert, privateKeyFile: tlsKey, clientCAFile: tlsCa, pskFile: tlsPsk)
      }
      let server = try NBDServer(exports: exports, configuration: configuration)
      let address = try Self.address(tcp: tcp, socket: socket)
      let bound = try server.listen(address)
      for a in bound { printError("\(toolName): listening on \(a)") }
      if let pidFile {
        try "\(getpid())\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
      }
      let sources = [SIGTERM, SIGINT].map { sig in
        let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        s.setEventHandler { server.stop() }
        s.resume()
        return s
      }
      server.serve()
      for s in sources { s.cancel() }
      if let pidFile { unlink(pidFile) }
      var firstError: (any Error)? = nil
      for d in disks {
        do { try d.close() } catch { firstError = firstError ?? error }
      }
      disks = []
      if discardOverlay, let overlay {
        _ = try Disk.delete(overlay, force: true, options: base)
      }
      if let firstError { throw firstError }
    }
  }

  static func address(tcp: String?, socket: String?) throws -> NBDListenAddress {
    if let socket { return .unix(path: socket) }
    let text = tcp ?? "127.0.0.1:10809"
    guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
      throw VMDKError(.invalidArgument, "--tcp wants HOST:PORT, not '\(text)'")
    }
    var host = String(text[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return .tcp(host: host, port: port)
  }

  /// Makes the overlay child of `image`, or checks that an existing one is a snapshot of it
  /// (its chain opens through `image` with matching CIDs).
  static func prepareOverlay(_ child: String, of image: String, options: OpenOptions) throws {
    guard FileManager.default.fileExists(atPath: child) else {
      return try Disk.createSnapshot(of: image, at: child, options: options)
    }
    var o = options
    o.writable = false
    o.ignoreCIDMismatch = false
    let chain = try Disk.open(child, options: o)
    defer { try? chain.close() }
    let want = URL(fileURLWithPath: image).resolvingSymlinksInPath().path
    guard chain.links.count >= 2, URL(fileURLWithPath: chain.links[1].path).resolvingSymlinksInPath().path == want
    else {
      throw VMDKError(
        .invalidArgument, "the overlay exists and is not a snapshot of \(image); remove it or choose another name",
        file: child)
    }
  }
}
