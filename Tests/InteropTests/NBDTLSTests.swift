// nbds:// end to end: NBDClient with NBD_OPT_STARTTLS and TLSChannel against qemu-nbd
// (`--object tls-creds-x509` and `tls-creds-psk`) and nbdkit (`--tls=require`), with the
// certificates TLSTests makes at test time. The whole export's digest equals the file's (also
// read as many requests in flight); a write lands in the file; the wrong CA, a missing or
// foreign client certificate and plain NBD to a server that requires TLS are tlsFailure.

import Foundation
import Testing
import VMDKBlock

@testable import VMDKTransport

#if canImport(Glibc)
  import Glibc
#endif

/// A raw file of `size` bytes of a fixed pseudo-random pattern, with a hole in the middle.
private func makeRawFile(_ path: String, size: Int) throws {
  var state: UInt64 = 0x9e37_79b9_7f4a_7c15
  var bytes = [UInt8](repeating: 0, count: size)
  for i in 0..<size where i < size / 3 || i >= 2 * size / 3 {
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    bytes[i] = UInt8(truncatingIfNeeded: state >> 33)
  }
  try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// SHA-256 of the whole export, read through the client in 1 MiB requests.
private func exportDigest(_ client: NBDClient) throws -> String {
  let context = DigestContext(.sha256)
  let size = try client.size()
  var buffer = [UInt8](repeating: 0, count: 1 << 20)
  var offset: UInt64 = 0
  while offset < size {
    let count = Int(min(UInt64(buffer.count), size - offset))
    try buffer.withUnsafeMutableBytes { raw in
      let slice = UnsafeMutableRawBufferPointer(rebasing: raw[0..<count])
      var done = 0
      while done < count {
        let n = try client.read(
          at: offset + UInt64(done), into: UnsafeMutableRawBufferPointer(rebasing: slice[done...]))
        guard n > 0 else { throw ToolFailure("short read at \(offset + UInt64(done))") }
        done += n
      }
      context.update(UnsafeRawBufferPointer(slice))
    }
    offset += UInt64(count)
  }
  return context.finalHex()
}

/// Transport options for nbds:// trusting `caFile`, with short timeouts and no retries.
private func nbdsOptions(caFile: String?) -> TransportOptions {
  var options = TransportOptions()
  options.connectTimeout = 10
  options.readTimeout = 10
  options.writeTimeout = 10
  options.retries = 0
  options.tls.caFile = caFile
  return options
}

/// qemu-nbd serving `file` (raw) on loopback with TLS credentials `object`
/// (`tls-creds-x509,...` or `tls-creds-psk,...`, id tls0).
private func qemuNBD(file: String, object: String) throws -> LoopbackServer {
  try LoopbackServer("qemu-nbd") { port in
    [
      "--object", object, "--tls-creds", "tls0", "-f", "raw", "--bind", "127.0.0.1", "--port", String(port),
      "--export-name", "disk", "--persistent", "--shared", "4", file,
    ]
  }
}

/// nbdkit's file plugin serving `file` on loopback, TLS required, with `tlsArguments`.
private func nbdkit(file: String, _ tlsArguments: [String]) throws -> LoopbackServer {
  try LoopbackServer("nbdkit") { port in
    ["-f", "-i", "127.0.0.1", "-p", String(port), "--tls=require"] + tlsArguments + ["file", file]
  }
}

@Suite struct NBDTLSTests {
  @Test func qemuNBDWithCertificatesServesTheFilesBytesAndTakesWrites() throws {
    try withTestPKI { pki in
      let raw = "\(pki.folder)/disk.raw"
      try makeRawFile(raw, size: 6 << 20)
      let expected = try fileDigest(raw, .sha256)
      let server = try qemuNBD(
        file: raw, object: "tls-creds-x509,id=tls0,endpoint=server,dir=\(pki.folder),verify-peer=off")
      let address = SocketAddress.tcp(host: "127.0.0.1", port: server.port)
      let client = try NBDClient(
        address, export: "disk", writable: true, tls: true, options: nbdsOptions(caFile: pki.caCert))
      #expect(try exportDigest(client) == expected)
      let pattern = [UInt8](repeating: 0xa5, count: 64 << 10)
      try pattern.withUnsafeBytes { try client.write(at: 1 << 20, from: $0) }
      try client.flush()
      client.close()
      server.stop()
      let handle = try #require(FileHandle(forReadingAtPath: raw))
      defer { try? handle.close() }
      try handle.seek(toOffset: 1 << 20)
      #expect(Array(try handle.read(upToCount: pattern.count) ?? Data()) == pattern)
    }
  }

  @Test func qemuNBDRequiresAClientCertificateFromItsCA() throws {
    try withTestPKI { pki in
      let raw = "\(pki.folder)/disk.raw"
      try makeRawFile(raw, size: 1 << 20)
      let server = try qemuNBD(
        file: raw, object: "tls-creds-x509,id=tls0,endpoint=server,dir=\(pki.folder),verify-peer=on")
      let address = SocketAddress.tcp(host: "127.0.0.1", port: server.port)
      var options = nbdsOptions(caFile: pki.caCert)
      options.tls.certificateFile = pki.clientCert
      options.tls.privateKeyFile = pki.clientKey
      let client = try NBDClient(address, export: "disk", tls: true, options: options)
      #expect(try exportDigest(client) == fileDigest(raw, .sha256))
      client.close()
      expectTLSFailure("it asked for a client certificate and none is configured") {
        _ = try NBDClient(address, export: "disk", tls: true, options: nbdsOptions(caFile: pki.caCert))
      }
      // A certificate qemu's CA did not issue (the unrelated CA's own).
      options.tls.certificateFile = pki.otherCACert
      options.tls.privateKeyFile = "\(pki.folder)/other/ca-key.pem"
      expectTLSFailure("did not accept the client certificate \(pki.otherCACert)") {
        _ = try NBDClient(address, export: "disk", tls: true, options: options)
      }
    }
  }

  @Test func theWrongCAIsRefusedByQemuNBDAndNbdkitClients() throws {
    try withTestPKI { pki in
      let raw = "\(pki.folder)/disk.raw"
      try makeRawFile(raw, size: 1 << 20)
      let qemu = try qemuNBD(
        file: raw, object: "tls-creds-x509,id=tls0,endpoint=server,dir=\(pki.folder),verify-peer=off")
      let kit = try nbdkit(file: raw, ["--tls-certificates=\(pki.folder)"])
      for port in [qemu.port, kit.port] {
        expectTLSFailure("certificate verify failed") {
          _ = try NBDClient(
            .tcp(host: "127.0.0.1", port: port), export: "disk", tls: true,
            options: nbdsOptions(caFile: pki.otherCACert))
        }
      }
    }
  }

  @Test func nbdkitWithCertificatesServesTheFilesBytes() throws {
    try withTestPKI { pki in
      let raw = "\(pki.folder)/disk.raw"
      try makeRawFile(raw, size: 6 << 20)
      let server = try nbdkit(file: raw, ["--tls-certificates=\(pki.folder)"])
      let client = try NBDClient(
        .tcp(host: "localhost", port: server.port), export: "", tls: true, options: nbdsOptions(caFile: pki.caCert))
      defer { client.close() }
      let expected = try fileDigest(raw, .sha256)
      #expect(try exportDigest(client) == expected)
      // One read of the whole export as 24 requests of 256 KiB, 16 in flight, over TLS.
      var options = nbdsOptions(caFile: pki.caCert)
      options.requestBytes = 256 << 10
      options.requestsInFlight = 16
      let pipelined = try NBDClient(.tcp(host: "localhost", port: server.port), export: "", tls: true, options: options)
      defer { pipelined.close() }
      var bytes = [UInt8](repeating: 0, count: 6 << 20)
      let count = try bytes.withUnsafeMutableBytes { try pipelined.read(at: 0, into: $0) }
      #expect(count == bytes.count)
      let digest = DigestContext(.sha256)
      bytes.withUnsafeBytes { digest.update($0) }
      #expect(digest.finalHex() == expected)
    }
  }

  @Test func preSharedKeysWithNbdkitAndQemuNBD() throws {
    try withTemporaryFolder { folder in
      let raw = "\(folder)/disk.raw"
      try makeRawFile(raw, size: 3 << 20)
      let expected = try fileDigest(raw, .sha256)
      let (pskFile, _) = try writePSKFile(in: folder, identity: "vmdk")
      var options = nbdsOptions(caFile: nil)
      options.tls.pskFile = pskFile
      let kit = try nbdkit(file: raw, ["--tls-psk=\(pskFile)"])
      let qemu = try qemuNBD(file: raw, object: "tls-creds-psk,id=tls0,endpoint=server,dir=\(folder)")
      for (port, export) in [(kit.port, ""), (qemu.port, "disk")] {
        let client = try NBDClient(.tcp(host: "127.0.0.1", port: port), export: export, tls: true, options: options)
        defer { client.close() }
        #expect(try exportDigest(client) == expected)
      }
    }
  }

  @Test func plainNBDToAServerThatRequiresTLSIsATLSFailure() throws {
    try withTestPKI { pki in
      let raw = "\(pki.folder)/disk.raw"
      try makeRawFile(raw, size: 1 << 20)
      let server = try nbdkit(file: raw, ["--tls-certificates=\(pki.folder)"])
      expectTLSFailure("the server requires TLS") {
        _ = try NBDClient(
          .tcp(host: "127.0.0.1", port: server.port), export: "", tls: false, options: nbdsOptions(caFile: nil))
      }
    }
  }
}
