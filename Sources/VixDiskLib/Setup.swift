// InitEx/Init/Exit, the configuration file, transport modes, connections and the calls that
// only matter with vSphere (PrepareForAccess/EndAccess/Cleanup: no-ops that succeed locally).

import CVixDiskLib
import VMDKBlock
import VMDKTransport

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// The process's settings from InitEx: what every Open uses.
final class Library: @unchecked Sendable {
  static let shared = Library()
  let settings = Locked(Settings())

  struct Settings {
    var transport = TransportOptions()
    var tempDirectory: String? = nil
  }
}

/// A connection: local only. Remembers ConnectEx's readOnly.
final class Connection {
  let readOnly: Bool
  init(readOnly: Bool) { self.readOnly = readOnly }
}

let connections = Registry<Connection>()

/// VDDK's configuration keys that have an equivalent here, and those accepted without effect.
enum VDDKConfig {
  /// Parses a VDDK-style configuration file: `tmpDirectory`, `vixDiskLib.transport.LogLevel`,
  /// `vixDiskLib.nfcAio.SocketOption.*` (socket buffers), and the toolkit's own keys (README
  /// "Configuration"). Any other `vixDiskLib.` key gives one warning line and is ignored.
  static func load(_ path: String) throws -> (Library.Settings, LogLevel?) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
      throw VMDKError(errno == ENOENT ? .fileNotFound : .fileAccess, "cannot open the configuration file", file: path)
    }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if n < 0 { throw VMDKError(.fileAccess, "cannot read the configuration file", file: path) }
      if n == 0 { break }
      bytes += chunk[0..<n]
      if bytes.count > 1 << 20 {
        throw VMDKError(.invalidConfig, "the configuration file is larger than 1 MiB", file: path)
      }
    }
    var settings = Library.Settings()
    var level: LogLevel? = nil
    var ours: [String] = []
    let text = String(decoding: bytes, as: UTF8.self)
    for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let line = raw.trimmingCharacters(" \t\r")
      guard !line.isEmpty, !line.hasPrefix("#"), let eq = line.firstIndex(of: "=") else {
        ours.append(String(line))  // one line each: the toolkit's parser names the right line
        continue
      }
      let key = String(line[..<eq]).trimmingCharacters(" \t")
      var value = String(line[line.index(after: eq)...]).trimmingCharacters(" \t")
      if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
      if key == "tmpDirectory" {
        settings.tempDirectory = value
        ours.append("")
      } else if key == "vixDiskLib.transport.LogLevel" {
        guard let n = Int(value), (0...6).contains(n) else {
          throw VMDKError(.invalidConfig, "\(path):\(index + 1): '\(key)' must be 0 to 6, found '\(value)'")
        }
        level = n == 0 ? .off : n == 1 ? .error : n == 2 ? .warning : n <= 4 ? .info : .debug
        ours.append("")
      } else if key.hasPrefix("vixDiskLib.nfcAio.SocketOption.") {
        // Socket buffers of VMware's NFC: our NBD/HTTP sockets size their own buffers.
        ours.append("")
      } else if key.hasPrefix("vixDiskLib.") {
        VixLog.shared.emit(.warning, "\(path):\(index + 1): configuration key '\(key)' has no effect in this library")
        ours.append("")
      } else {
        ours.append(String(line))
      }
    }
    let config = try TransportConfig(parsing: ours.joined(separator: "\n"), file: path)
    settings.transport = config.transport
    if settings.tempDirectory == nil { settings.tempDirectory = config.tempDirectory }
    if level == nil, config.logLevel != .off { level = config.logLevel }
    return (settings, level)
  }
}

extension StringProtocol {
  func trimmingCharacters(_ set: String) -> String {
    var s = Substring(self)
    while let c = s.first, set.contains(c) { s = s.dropFirst() }
    while let c = s.last, set.contains(c) { s = s.dropLast() }
    return String(s)
  }
}

@_cdecl("VixDiskLib_InitEx")
public func VixDiskLib_InitEx(
  _ major: UInt32, _ minor: UInt32, _ log: UnsafeMutableRawPointer?, _ warn: UnsafeMutableRawPointer?,
  _ panic: UnsafeMutableRawPointer?, _ libDir: UnsafePointer<CChar>?, _ configFile: UnsafePointer<CChar>?
) -> UInt64 {
  var callbacks = VixLog.Callbacks(log: log, warn: warn, panic: panic)
  VixLog.shared.install(callbacks)
  return vixCall {
    var settings = Library.Settings()
    if let configFile {
      let (loaded, level) = try VDDKConfig.load(String(cString: configFile))
      settings = loaded
      if let level {
        callbacks.level = level
        VixLog.shared.install(callbacks)
      }
    }
    Library.shared.settings.withLock { $0 = settings }
    VixLog.shared.emit(.info, "VixDiskLib \(major).\(minor) initialised (open vmdk-toolkit library)")
  }
}

@_cdecl("VixDiskLib_Init")
public func VixDiskLib_Init(
  _ major: UInt32, _ minor: UInt32, _ log: UnsafeMutableRawPointer?, _ warn: UnsafeMutableRawPointer?,
  _ panic: UnsafeMutableRawPointer?, _ libDir: UnsafePointer<CChar>?
) -> UInt64 {
  VixDiskLib_InitEx(major, minor, log, warn, panic, libDir, nil)
}

@_cdecl("VixDiskLib_Exit")
public func VixDiskLib_Exit() {
  for handle in handles.all { _ = VixDiskLib_Close(handle.pointer) }
  VixLog.shared.reset()
}

private let transportModes: StaticString = "file:nbd:http"

@_cdecl("VixDiskLib_ListTransportModes")
public func VixDiskLib_ListTransportModes() -> UnsafePointer<CChar>? {
  UnsafeRawPointer(transportModes.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("VixDiskLib_Cleanup")
public func VixDiskLib_Cleanup(
  _ params: UnsafePointer<VixDiskLibConnectParams>?, _ cleaned: UnsafeMutablePointer<UInt32>?,
  _ remaining: UnsafeMutablePointer<UInt32>?
) -> UInt64 {
  cleaned?.pointee = 0
  remaining?.pointee = 0
  return Vix.ok
}

@_cdecl("VixDiskLib_AllocateConnectParams")
public func VixDiskLib_AllocateConnectParams() -> UnsafeMutablePointer<VixDiskLibConnectParams>? {
  guard let raw = calloc(1, MemoryLayout<VixDiskLibConnectParams>.size) else { return nil }
  return raw.assumingMemoryBound(to: VixDiskLibConnectParams.self)
}

/// Frees the params and the strings in them (VDDK's contract: they were malloc'd).
@_cdecl("VixDiskLib_FreeConnectParams")
public func VixDiskLib_FreeConnectParams(_ params: UnsafeMutablePointer<VixDiskLibConnectParams>?) {
  guard let params else { return }
  free(params.pointee.vmxSpec)
  free(params.pointee.serverName)
  free(params.pointee.thumbPrint)
  if params.pointee.credType == VIXDISKLIB_CRED_UID {
    free(params.pointee.creds.uid.userName)
    free(params.pointee.creds.uid.password)
  } else if params.pointee.credType == VIXDISKLIB_CRED_SESSIONID {
    free(params.pointee.creds.sessionId.cookie)
    free(params.pointee.creds.sessionId.userName)
    free(params.pointee.creds.sessionId.key)
  }
  free(params.pointee.vimApiVer)
  if params.pointee.specType == VIXDISKLIB_SPEC_VSTORAGE_OBJECT {
    free(params.pointee.spec.vStorageObjSpec.id)
    free(params.pointee.spec.vStorageObjSpec.datastoreMoRef)
    free(params.pointee.spec.vStorageObjSpec.ssId)
  }
  free(params)
}

/// Local mode only: a server or a VM spec needs vSphere, which this library does not speak.
func checkLocal(_ params: UnsafePointer<VixDiskLibConnectParams>?) throws {
  guard let p = params?.pointee else { return }
  if let server = p.serverName, server.pointee != 0 {
    throw VixFailure(
      Vix.notSupported,
      "serverName '\(String(cString: server))': connections to vCenter or ESXi are not supported by the open VixDiskLib; connect with no server and open local paths or nbd://, http:// locations"
    )
  }
  if let vmx = p.vmxSpec, vmx.pointee != 0 {
    throw VixFailure(
      Vix.notSupported,
      "vmxSpec '\(String(cString: vmx))': virtual machines on vSphere are not supported (local mode only)")
  }
}

@_cdecl("VixDiskLib_Connect")
public func VixDiskLib_Connect(
  _ params: UnsafePointer<VixDiskLibConnectParams>?, _ connection: UnsafeMutablePointer<OpaquePointer?>?
) -> UInt64 {
  VixDiskLib_ConnectEx(params, 0, nil, nil, connection)
}

@_cdecl("VixDiskLib_ConnectEx")
public func VixDiskLib_ConnectEx(
  _ params: UnsafePointer<VixDiskLibConnectParams>?, _ readOnly: CChar, _ snapshotRef: UnsafePointer<CChar>?,
  _ modes: UnsafePointer<CChar>?, _ connection: UnsafeMutablePointer<OpaquePointer?>?
) -> UInt64 {
  vixCall {
    guard let connection else { throw VixFailure(Vix.invalidArg, "the connection pointer is NULL") }
    connection.pointee = nil
    try checkLocal(params)
    if let modes {
      let asked = String(cString: modes).split(separator: ":").map(String.init)
      let usable = asked.filter { ["file", "nbd", "nbdssl", "http", "https"].contains($0) }
      if !asked.isEmpty && usable.isEmpty {
        throw VixFailure(
          Vix.notSupported, "transport modes '\(asked.joined(separator: ":"))': only file, nbd and http exist here")
      }
    }
    connection.pointee = connections.add(Connection(readOnly: readOnly != 0))
  }
}

@_cdecl("VixDiskLib_Disconnect")
public func VixDiskLib_Disconnect(_ connection: OpaquePointer?) -> UInt64 {
  vixCall {
    _ = try connections.get(connection, "connection")
    connections.remove(connection)
  }
}

@_cdecl("VixDiskLib_GetConnectParams")
public func VixDiskLib_GetConnectParams(
  _ connection: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<VixDiskLibConnectParams>?>?
) -> UInt64 {
  vixCall {
    _ = try connections.get(connection, "connection")
    guard let out else { throw VixFailure(Vix.invalidArg, "the output pointer is NULL") }
    out.pointee = VixDiskLib_AllocateConnectParams()
  }
}

@_cdecl("VixDiskLib_PrepareForAccess")
public func VixDiskLib_PrepareForAccess(
  _ params: UnsafePointer<VixDiskLibConnectParams>?, _ identity: UnsafePointer<CChar>?
) -> UInt64 {
  vixCall { try checkLocal(params) }
}

@_cdecl("VixDiskLib_EndAccess")
public func VixDiskLib_EndAccess(
  _ params: UnsafePointer<VixDiskLibConnectParams>?, _ identity: UnsafePointer<CChar>?
) -> UInt64 {
  vixCall { try checkLocal(params) }
}

@_cdecl("VixDiskLib_GetErrorText")
public func VixDiskLib_GetErrorText(_ error: UInt64, _ locale: UnsafePointer<CChar>?) -> UnsafeMutablePointer<CChar>? {
  let code = error & 0xFFFF
  let text = lastErrorText(for: code) ?? "\(codeName(code)) (\(code))"
  return mallocString(text)
}

@_cdecl("VixDiskLib_FreeErrorText")
public func VixDiskLib_FreeErrorText(_ text: UnsafeMutablePointer<CChar>?) {
  free(text)
}
