// vmdk-serve with TLS (NBD_OPT_STARTTLS, x509): nbdinfo, nbdcopy and qemu-img over TLS with
// certificates made at test time, our own client through nbds://, a wrong CA refused, and
// --tls=require refusing plain clients.

import Foundation
import Testing
import VMDKBlock

#if canImport(Glibc)
  import Glibc
#endif

@Suite(.serialized) struct ServeTLSTests {
  let image = "\(testImagesFolder)/vdiskmanager/monolithicSparse.vmdk"
  let sha = "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727"

  @Test func libnbdQemuAndOurClientOverTLS() throws {
    try withTestPKI { pki in
      let server = try VMDKServeProcess(
        [image, "--tls=require", "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-ca", pki.caCert])
      defer { server.stop() }
      let uri = "nbds://127.0.0.1:\(server.port)/?tls-certificates=\(pki.folder)"
      let info = try runChecked(try requireTool("nbdinfo"), ["--json", uri]).output
      #expect(info.contains("\"TLS\": true"))
      #expect(try ServeTests.nbdcopyDigest(uri, in: pki.folder, connections: 4) == sha)
      let qemu = try Qemu.img(
        "compare", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir=\(pki.folder)", "--image-opts",
        "driver=nbd,host=127.0.0.1,port=\(server.port),export=,tls-creds=tls0",
        "driver=vmdk,file.driver=file,file.filename=\(image)"
      ).output
      #expect(qemu.contains("Images are identical."))
      // Plain NBD to a server that requires TLS: refused.
      let plain = try runProcess(try requireTool("nbdinfo"), ["nbd://127.0.0.1:\(server.port)/"])
      #expect(plain.status != 0)
    }
  }

  @Test func ourClientOverTLSAndAWrongCAIsRefused() throws {
    try withTestPKI { pki in
      let server = try VMDKServeProcess([image, "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey])
      defer { server.stop() }
      var options = OpenOptions()
      options.transport.tls.caFile = pki.caCert
      let disk = try Disk.open("nbds://127.0.0.1:\(server.port)/", options: options)
      #expect(disk.transport == .nbds)
      #expect(try disk.digest(.sha256) == sha)
      try disk.close()
      // --tls=on: plain clients are still served.
      #expect(try ServeTests.nbdcopyDigest("nbd://127.0.0.1:\(server.port)/", in: pki.folder) == sha)
      var wrong = OpenOptions()
      wrong.transport.tls.caFile = pki.otherCACert
      wrong.transport.retries = 0
      let e = expectVMDKError(.tlsFailure) { _ = try Disk.open("nbds://127.0.0.1:\(server.port)/", options: wrong) }
      #expect(e != nil)
    }
  }

  @Test func clientCertificateRequiredWhenACAIsGiven() throws {
    try withTestPKI { pki in
      let server = try VMDKServeProcess(
        [image, "--tls=require", "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-ca", pki.caCert])
      defer { server.stop() }
      // Trusts the server but has no client certificate: the handshake fails.
      var options = OpenOptions()
      options.transport.tls.caFile = pki.caCert
      options.transport.retries = 0
      #expect(throws: VMDKError.self) { _ = try Disk.open("nbds://127.0.0.1:\(server.port)/", options: options) }
      // vmdk-inspect digest nbds://… with the client certificate in its configuration file.
      let config = "\(pki.folder)/client.conf"
      try """
      tls.caFile = "\(pki.caCert)"
      tls.certFile = "\(pki.clientCert)"
      tls.keyFile = "\(pki.clientKey)"

      """.write(toFile: config, atomically: true, encoding: .utf8)
      let r = try vmdkInspect("digest", "--config", config, "nbds://127.0.0.1:\(server.port)/")
      #expect(r.status == 0, "\(r.errorOutput)")
      #expect(r.output.hasPrefix(sha))
    }
  }

  @Test func pskWithLibnbdAndOurClientAndAWrongKeyRefused() throws {
    try withTemporaryFolder { folder in
      let keys = "\(folder)/keys.psk"
      let wrong = "\(folder)/wrong.psk"
      try "alice:\(String(repeating: "3c", count: 32))\n".write(toFile: keys, atomically: true, encoding: .utf8)
      try "alice:\(String(repeating: "3d", count: 32))\n".write(toFile: wrong, atomically: true, encoding: .utf8)
      let server = try VMDKServeProcess([image, "--tls=require", "--tls-psk", keys])
      defer { server.stop() }
      let uri = "nbds://alice@127.0.0.1:\(server.port)/?tls-psk-file=\(keys)"
      #expect(try ServeTests.nbdcopyDigest(uri, in: folder) == sha)
      // One connection with 16 requests in flight, 64 KiB each: replies may come in any order.
      let out = "\(folder)/pipelined.raw"
      try runChecked(
        try requireTool("nbdcopy"), ["--connections=1", "--requests=16", "--request-size=65536", uri, out])
      #expect(try fileDigest(out, .sha256) == sha)
      let config = "\(folder)/psk.conf"
      try "tls.pskFile = \"\(keys)\"\n".write(toFile: config, atomically: true, encoding: .utf8)
      let ours = try vmdkInspect("digest", "--config", config, "nbds://127.0.0.1:\(server.port)/")
      #expect(ours.status == 0 && ours.output.hasPrefix(sha), "\(ours.errorOutput)")
      let refused = try runProcess(
        try requireTool("nbdinfo"), ["nbds://alice@127.0.0.1:\(server.port)/?tls-psk-file=\(wrong)"])
      #expect(refused.status != 0)
      // The server is still there for the right key.
      #expect(try ServeTests.nbdcopyDigest(uri, in: folder) == sha)
    }
  }
}
