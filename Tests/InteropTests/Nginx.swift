// A real nginx on loopback for the HTTP transport's tests: a configuration written into the
// test's own folder (pid, logs and temporary files all inside it), one process (no master, no
// daemon) serving the folder's www/ on 127.0.0.1, started and stopped by the test.

import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// An nginx child process serving `root` (PREFIX/www) on 127.0.0.1:`port`.
final class NginxServer {
  let prefix: String
  let port: UInt16
  /// The folder nginx serves: put the files to serve here.
  var root: String { "\(prefix)/www" }
  /// Certificate and key (PEM) when the server speaks https.
  let tls: (certificate: String, key: String)?
  /// `http://127.0.0.1:PORT`, or https.
  var baseURL: String { "\(tls == nil ? "http" : "https")://127.0.0.1:\(port)" }
  private let executable: String
  private let configPath: String
  private var process: Process?

  /// Writes the configuration under `prefix` (made when missing) and starts nginx.
  /// `limitRate` (bytes per second per connection) slows the server down, so that a test can
  /// act in the middle of a transfer.
  /// With `tls`, the server speaks https with that certificate and key.
  init(prefix: String, limitRate: Int? = nil, tls: (certificate: String, key: String)? = nil) throws {
    executable = try NginxServer.binary()
    self.prefix = prefix
    self.tls = tls
    port = try freeLoopbackPort()
    configPath = "\(prefix)/nginx.conf"
    for folder in ["www", "tmp"] {
      try FileManager.default.createDirectory(atPath: "\(prefix)/\(folder)", withIntermediateDirectories: true)
    }
    try NginxServer.config(prefix: prefix, port: port, limitRate: limitRate, tls: tls)
      .write(toFile: configPath, atomically: true, encoding: .utf8)
    try start()
  }

  deinit { stop() }

  /// /usr/sbin/nginx (Debian's nginx-light), else nginx on PATH; missing is a failure.
  private static func binary() throws -> String {
    let debian = "/usr/sbin/nginx"
    return FileManager.default.isExecutableFile(atPath: debian) ? debian : try requireTool("nginx")
  }

  private static func config(
    prefix: String, port: UInt16, limitRate: Int?, tls: (certificate: String, key: String)?
  ) -> String {
    let listen =
      tls.map {
        "listen 127.0.0.1:\(port) ssl;\n    ssl_certificate \($0.certificate);\n    ssl_certificate_key \($0.key);"
      } ?? "listen 127.0.0.1:\(port);"
    // As root nginx would switch to nobody, who cannot read the test's folder.
    let user = geteuid() == 0 ? "user root;\n" : ""
    let rate = limitRate.map { "    limit_rate \($0);\n" } ?? ""
    let temps = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map { "  \($0)_temp_path \(prefix)/tmp/\($0);\n" }
    return """
      \(user)daemon off;
      master_process off;
      worker_processes 1;
      pid \(prefix)/nginx.pid;
      error_log \(prefix)/error.log warn;
      events { worker_connections 64; }
      http {
        log_format ranges '$connection $request_method $uri $http_range $status $body_bytes_sent';
        access_log \(prefix)/access.log ranges;
      \(temps.joined())  default_type application/octet-stream;
        sendfile on;
        keepalive_timeout 30s;
        server {
          \(listen)
          root \(prefix)/www;
      \(rate)  }
      }

      """
  }

  /// Starts nginx and waits (up to 5 s) until it accepts connections.
  func start() throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = ["-c", configPath, "-p", prefix, "-e", "\(prefix)/error.log"]
    p.standardInput = FileHandle.nullDevice
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    process = p
    let deadline = Date().addingTimeInterval(5)
    while !NginxServer.canConnect(port) {
      guard p.isRunning, Date() < deadline else {
        stop()
        let log = (try? String(contentsOfFile: "\(prefix)/error.log", encoding: .utf8)) ?? ""
        throw ToolFailure("nginx did not start listening on 127.0.0.1:\(port): \(log)")
      }
      usleep(20_000)
    }
  }

  /// Stops nginx and waits for it. SIGKILL: nginx inherits the test runner's blocked signal
  /// mask (SIGTERM included) and would ignore a SIGTERM; with no master process there is no
  /// worker left behind.
  func stop() {
    guard let p = process else { return }
    process = nil
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
  }

  /// The access log's lines: `CONNECTION METHOD URI RANGE STATUS BYTES` for each request
  /// answered (CONNECTION: nginx's serial number of the TCP connection).
  func requestLog() throws -> [String] {
    try String(contentsOfFile: "\(prefix)/access.log", encoding: .utf8).split(separator: "\n").map(String.init)
  }

  /// Whether something accepts TCP connections on 127.0.0.1:`port`.
  static func canConnect(_ port: UInt16) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    sa.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    return withUnsafePointer(to: &sa) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
      }
    }
  }
}
