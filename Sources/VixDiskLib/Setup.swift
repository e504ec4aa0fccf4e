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

/// VixDiskLib's configuration file (InitEx's `configFile`): VDDK's keys that have an
/// equivalent here, the toolkit's own keys (README "Configuration file"), and one warning line
/// for every other key.
enum VDDKConfig {
  /// What a configuration file sets.
  struct Loaded {
    var settings = Library.Settings()
    /// `vixDiskLib.transport.LogLevel` (or our `log.level`); nil: the default.
    var level: LogLevel? = nil
    /// The toolkit's `log.file`: the default logger's file.
    var logFile: String? = nil
    /// One line per ignored key, sent through the warn callback once the level is set.
    var warnings: [String] = []
  }

  /// VDDK's `vixDiskLib.transport.LogLevel` (0 panic, 1 error, 2 warning, 3 audit, 4 info,
  /// 5 verbose, 6 trivia) as our levels: the library has no panic or audit lines, so 0 lets
  /// nothing through and 3 (VDDK's default) is errors and warnings; 5 and 6 add debug.
  static func level(vddk n: Int) -> LogLevel {
    switch n {
    case 0: .off
    case 1: .error
    case 2, 3: .warning
    case 4: .info
    default: .debug
    }
  }

  /// Our transport key for a VDDK key of the NFC AIO session and socket options, and the
  /// value in our units; nil for a key that is not one of them.
  static func translate(_ key: String, _ value: String, at: String) throws -> String? {
    let lower = key.lowercased()
    func count(_ range: ClosedRange<Int>) throws -> Int {
      guard let n = Int(value), range.contains(n) else {
        throw VMDKError(
          .invalidConfig,
          "\(at): '\(key)' must be a whole number from \(range.lowerBound) to \(range.upperBound), found '\(value)'")
      }
      return n
    }
    switch lower {
    case "vixdisklib.nfcaio.session.bufsizein64kb", "vixdisklib.nfcaio.session.bufsizein64k":
      // The NFC buffer of one request: our request size, up to our 32 MiB limit.
      return "requestSize = \(try count(1...512) * 64)K"
    case "vixdisklib.nfcaio.session.bufcount":
      return "requestsInFlight = \(try count(1...256))"
    case "vixdisklib.nfcaio.socketoption.sendbuffersize", "vixdisklib.nfcaio.socketoption.sndbuf",
      "vixdisklib.nfcaio.socketoption.so_sndbuf":
      return "socketSendBuffer = \(value)"
    case "vixdisklib.nfcaio.socketoption.receivebuffersize", "vixdisklib.nfcaio.socketoption.recvbuffersize",
      "vixdisklib.nfcaio.socketoption.rcvbuf", "vixdisklib.nfcaio.socketoption.so_rcvbuf":
      return "socketReceiveBuffer = \(value)"
    default:
      return nil
    }
  }

  /// Whether `key` is one of the toolkit's own configuration keys.
  static func isToolkitKey(_ key: String) -> Bool { TransportConfig.isKey(key) }

  /// Parses a configuration file. A bad value of a key that is used, a line without '=' or a
  /// repeated key of the toolkit is an error (20025) naming the line; any key that is neither
  /// VDDK's with an equivalent here nor the toolkit's gives one warning and is ignored.
  static func load(_ path: String) throws -> Loaded {
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
    var loaded = Loaded()
    var ours: [String] = []
    var warned: Set<String> = []
    var tmpDirectory: String? = nil
    let text = String(decoding: bytes, as: UTF8.self)
    for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let at = "\(path):\(index + 1)"
      let line = raw.trimmingCharacters(" \t\r")
      guard !line.isEmpty, !line.hasPrefix("#"), let eq = line.firstIndex(of: "=") else {
        ours.append(String(line))  // one line each: the toolkit's parser names the right line
        continue
      }
      let key = String(line[..<eq]).trimmingCharacters(" \t")
      var value = String(line[line.index(after: eq)...]).trimmingCharacters(" \t")
      if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
      if key == "tmpDirectory" {
        tmpDirectory = try folder(value, at: at)
        ours.append("")
      } else if key == "vixDiskLib.transport.LogLevel" {
        guard let n = Int(value), (0...6).contains(n) else {
          throw VMDKError(.invalidConfig, "\(at): '\(key)' must be 0 to 6, found '\(value)'")
        }
        loaded.level = level(vddk: n)
        ours.append("")
      } else if let translated = try translate(key, value, at: at) {
        ours.append(translated)
      } else if !key.hasPrefix("vixDiskLib.") && isToolkitKey(key) {
        ours.append(String(line))
      } else {
        if warned.insert(key).inserted {
          loaded.warnings.append("\(at): configuration key '\(key)' is not used by this library; ignored")
        }
        ours.append("")
      }
    }
    let config = try TransportConfig(parsing: ours.joined(separator: "\n"), file: path)
    loaded.settings.transport = config.transport
    loaded.settings.tempDirectory = tmpDirectory ?? config.tempDirectory
    loaded.logFile = config.logFile
    if loaded.level == nil, config.logLevel != .off { loaded.level = config.logLevel }
    return loaded
  }

  /// `tmpDirectory`: an existing folder, or one made now (0700) when its parent exists.
  static func folder(_ value: String, at: String) throws -> String {
    guard !value.isEmpty else { throw VMDKError(.invalidConfig, "\(at): 'tmpDirectory' needs a value") }
    var st = stat()
    if stat(value, &st) != 0 && errno == ENOENT { _ = mkdir(value, 0o700) }
    guard stat(value, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, access(value, W_OK | X_OK) == 0 else {
      throw VMDKError(
        .invalidConfig,
        "\(at): 'tmpDirectory' \(value) is not a folder this process can write to (nor could one be made)")
    }
    return value
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
    var loaded = VDDKConfig.Loaded()
    if let configFile {
      loaded = try VDDKConfig.load(String(cString: configFile))
      if let level = loaded.level { callbacks.level = level }
    }
    callbacks.defaultFile = DefaultLogFile.path(folder: loaded.settings.tempDirectory, file: loaded.logFile)
    VixLog.shared.install(callbacks)
    Library.shared.settings.withLock { $0 = loaded.settings }
    for warning in loaded.warnings { VixLog.shared.emit(.warning, warning) }
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
