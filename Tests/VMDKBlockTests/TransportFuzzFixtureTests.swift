// Regression tests for the inputs the transport fuzz target (Fuzz/FuzzTransport.swift) found.
// Each finding is kept in TransportFixtures/ and replayed here through the parsers and the
// invariants the target checks, so a regression fails this test run instead of waiting for
// the next fuzzing session; each also has a test that pins what its input must now give.

import Foundation
import Testing

@testable import VMDKTransport

@Suite struct TransportFuzzFixtureTests {
  static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("TransportFixtures")

  /// A server whose answers are `bytes`; the end of them is the server closing.
  final class FakeServer: ByteChannel {
    let bytes: [UInt8]
    var at = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    func sendAll(_ buffer: UnsafeRawBufferPointer) throws {}
    func recvAll(into buffer: UnsafeMutableRawBufferPointer) throws {
      guard bytes.count - at >= buffer.count else { throw Net.closedError("fake") }
      for i in 0..<buffer.count { buffer[i] = bytes[at + i] }
      at += buffer.count
    }
    func recvSome(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
      let n = min(buffer.count, bytes.count - at)
      for i in 0..<n { buffer[i] = bytes[at + i] }
      at += n
      return n
    }
    func close() {}
  }

  /// What the fuzz target does with one input, and the invariants it checks.
  static func replay(_ bytes: [UInt8], _ name: String) {
    let text = String(decoding: bytes, as: UTF8.self)
    _ = try? HTTPResponse.parse(bytes[...], url: name)
    _ = try? HTTPConnection(channel: FakeServer(bytes), name: name).readHead()
    _ = try? TransportConfig(parsing: text, file: name)
    _ = try? NBDHandshake.run(channel: FakeServer(bytes), export: "disk", name: name)
    for line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).prefix(16)
    {
      let s = String(line)
      if let u = try? HTTPURL(s) {
        #expect(u.description.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f }, "\(name): \(s)")
        #expect((try? HTTPURL(u.description)) == u, "\(name): \(s) printed as \(u.description)")
      }
      if let d = PercentEncoding.decoded(line) {
        #expect(PercentEncoding.decoded(PercentEncoding.encodedPath(d)) == d, "\(name): \(s)")
      }
      if let loc = try? DiskLocation(parsing: s), case .nbd = loc {
        #expect((try? DiskLocation(parsing: loc.description)) == loc, "\(name): \(s) printed as \(loc.description)")
      }
    }
  }

  @Test func everyFixtureReplays() throws {
    let names = try FileManager.default.contentsOfDirectory(atPath: Self.fixtures.path).sorted()
    #expect(names.count >= 4)
    for name in names {
      let bytes = [UInt8](try Data(contentsOf: Self.fixtures.appendingPathComponent(name)))
      Self.replay(bytes, name)
    }
  }

  /// crash-raw-nul-in-location: the decoder refused "%00" but let a raw NUL through, so
  /// `socket=/tmp/nbd.sock<NUL>/../other.sock` parsed, and the socket path the kernel sees ends
  /// at the NUL; written out again it became "%00", which does not parse.
  @Test func aRawNULIsRefused() {
    #expect(PercentEncoding.decoded("a\u{0}b") == nil)
    for bad in ["nbd+unix:///disk?socket=/tmp/nbd.sock\u{0}/../other.sock", "nbd://h/a\u{0}b", "file:///a\u{0}b"] {
      #expect(throws: VMDKError.self, "\(bad)") { try DiskLocation(parsing: bad) }
    }
    #expect(throws: VMDKError.self) { try HTTPURL("http://h/a\u{0}b.vmdk") }
  }

  /// crash-httpurl-without-path: `http://host` had no path segment and printed as
  /// `http://host/`, which parses to one empty segment: the same URL, two values.
  @Test func aURLWithoutPathIsTheRoot() throws {
    let bare = try HTTPURL("http://Host.example")
    #expect(bare == (try HTTPURL("http://host.example/")))
    #expect(bare.segments == [""])
    #expect(bare.description == "http://host.example/")
    #expect(try HTTPURL("http://h/a/..") == HTTPURL("http://h/"))
  }

  /// crash-httpurl-fullwidth-ipv6 (written by hand against the target's invariant that a URL
  /// prints as ASCII): `Character.isHexDigit` takes fullwidth digits and letters, so
  /// `http://[\u{FF41}::1]/x.vmdk` parsed and its host went into the Host header as UTF-8.
  @Test func anIPv6AddressIsASCII() throws {
    #expect(throws: VMDKError.self) { try HTTPURL("http://[\u{FF41}::1]/x.vmdk") }
    #expect(throws: VMDKError.self) { try HTTPURL("http://[\u{FF11}::1]/x.vmdk") }
    #expect(try HTTPURL("http://[FE80::a:1]:8080/x.vmdk").hostHeader == "[fe80::a:1]:8080")
  }

  /// crash-locator-name-with-nul: an extent name with a NUL in a descriptor on a web server
  /// resolved to a URL with "%00", which no URL may hold (HTTPURL refuses it).
  @Test func anExtentNameWithNULIsRefused() throws {
    let base = try HTTPURL("http://h/vms/disk.vmdk")
    do {
      _ = try HTTPLocator.target(of: "disk-s001.vmdk\u{0}/../../secret.vmdk", base: base)
      Issue.record("a name with a NUL resolved")
    } catch let e as VMDKError {
      #expect(e.code == .invalidArgument)
    }
    #expect(try HTTPLocator.target(of: "disk s001.vmdk", base: base).url.description == "http://h/vms/disk%20s001.vmdk")
  }

  /// crash-nbd-host-with-bracket: an NBD URI's host was not checked: `nbds://<U+FFFD>::1]:10810`
  /// gave the host "<U+FFFD>::1]", written out as "[<U+FFFD>::1]]", which does not parse. A host
  /// is now a host name or a bracketed IPv6 address (a zone allowed); a port is digits only.
  @Test func anNBDHostIsAHostName() throws {
    for bad in ["nbds://\u{FFFD}::1]:10810/x", "nbd://a]:b:1/x", "nbd://h h/x", "nbd://[h]/x", "nbd://h:+80/x"] {
      do {
        _ = try DiskLocation(parsing: bad)
        Issue.record("\(bad) parsed")
      } catch let e as VMDKError {
        #expect(e.code == .invalidArgument, "\(bad): \(e)")
      }
    }
    let zoned = try DiskLocation(parsing: "nbd://[fe80::1%eth0]:10809/disk")
    #expect(zoned == .nbd(address: .tcp(host: "fe80::1%eth0", port: 10809), export: "disk", tls: false))
    #expect(try DiskLocation(parsing: zoned.description) == zoned)
    #expect(
      try DiskLocation(parsing: "nbd://nbd_host-1.example/d")
        == .nbd(address: .tcp(host: "nbd_host-1.example", port: 10809), export: "d", tls: false))
  }

  /// crash-nbd-socket-path-with-ampersand: a socket path with "&" was written out with the "&"
  /// as it is, which ends the query parameter: `/tmp/a&b.sock` came back as `/tmp/a`.
  @Test func aSocketPathWithAmpersandRoundTrips() throws {
    let loc = DiskLocation.nbd(address: .unix(path: "/tmp/a&b.sock"), export: "e&f", tls: false)
    #expect(loc.description == "nbd+unix:///e&f?socket=/tmp/a%26b.sock")
    #expect(try DiskLocation(parsing: loc.description) == loc)
  }
}
