// How transports behave on the network: timeouts, retries with bounded exponential backoff,
// socket buffers, requests in flight and their size, and TLS. The configuration file
// (TransportConfig) fills these in; library callers may set them directly.

import Logging

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// TLS settings for `nbds://` and `https://`.
public struct TLSOptions: Sendable, Equatable {
  /// Verify the server's certificate chain and host name (on by default).
  public var verifyPeer = true
  /// PEM file of trusted CA certificates; nil: the system's default store.
  public var caFile: String? = nil
  /// PEM client certificate, for servers that require one.
  public var certificateFile: String? = nil
  /// PEM private key of the client certificate.
  public var privateKeyFile: String? = nil
  /// A PSK file in the format qemu and nbdkit use (`identity:hexkey` lines); TLS-PSK instead of
  /// certificates.
  public var pskFile: String? = nil
  /// Which identity of `pskFile` to use (default: the first line's).
  public var pskIdentity: String? = nil
  /// The name to check the certificate against (default: the host of the URI).
  public var serverName: String? = nil

  public init() {}
}

/// Network behaviour of the NBD and HTTP transports.
public struct TransportOptions: Sendable, Equatable {
  /// Seconds to wait for a connection (and the handshake).
  public var connectTimeout: Double = 30
  /// Seconds a read may wait for the server.
  public var readTimeout: Double = 60
  /// Seconds a write may wait for the server.
  public var writeTimeout: Double = 60
  /// Retries after a retryable failure (0: fail at the first).
  public var retries: Int = 5
  /// Seconds before the first retry; doubled for each later one.
  public var backoffInitial: Double = 0.25
  /// Longest wait between two retries, in seconds.
  public var backoffMax: Double = 8
  /// SO_SNDBUF in bytes; nil: the system's default.
  public var sendBufferBytes: Int? = nil
  /// SO_RCVBUF in bytes; nil: the system's default.
  public var receiveBufferBytes: Int? = nil
  /// Requests an NBD connection keeps in flight.
  public var requestsInFlight: Int = 16
  /// Bytes per NBD read or write request (at most 32 MiB). 512 KiB × 16 in flight read a 4 GiB
  /// qemu-nbd export on loopback at 2.5–3.6 GiB/s, at or above nbdcopy on the same machine;
  /// 2 MiB and larger requests were 20–40 % slower (the data in flight leaves the CPU caches).
  public var requestBytes: Int = 512 << 10
  /// TLS for nbds:// and https://.
  public var tls = TLSOptions()

  public init() {}

  /// The largest request size allowed.
  public static let maxRequestBytes = 32 << 20

  /// The one retry policy of the transports: whether retry number `attempt` (1-based) after
  /// the retryable `error` is allowed; if so it is logged and slept for first (`backoff`).
  /// `what` names the operation in the log line.
  public func pauseBeforeRetry(_ attempt: Int, after error: VMDKError, name: String, what: String) -> Bool {
    guard attempt <= retries else { return false }
    let wait = backoff(attempt: attempt)
    Logger(label: LogLabel.transport).warning(
      "\(name): \(what) failed: \(error.message) [\(error.code.name)]; retry \(attempt) of \(retries) in \(wait) s")
    TransportOptions.sleep(seconds: wait)
    return true
  }

  /// Sleeps `seconds` (through signals).
  static func sleep(seconds: Double) {
    guard seconds > 0 else { return }
    var left = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
    var asked = left
    while nanosleep(&asked, &left) != 0 && errno == EINTR { asked = left }
  }

  /// The wait before retry number `attempt` (1-based): backoffInitial · 2^(attempt-1), capped.
  public func backoff(attempt: Int) -> Double {
    guard attempt > 0 else { return 0 }
    var d = backoffInitial
    for _ in 1..<attempt {
      d *= 2
      if d >= backoffMax { return backoffMax }
    }
    return min(d, backoffMax)
  }
}
