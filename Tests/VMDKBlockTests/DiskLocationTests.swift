// DiskLocation: paths, file: URIs and the NBD URI conventions (libnbd's and qemu's), and the
// errors for malformed ones.

import Testing
import VMDKTransport

@Suite struct DiskLocationTests {
  @Test func pathsAndFileURIs() throws {
    #expect(try DiskLocation(parsing: "disk.vmdk") == .file(path: "disk.vmdk"))
    #expect(try DiskLocation(parsing: "/a/b c.vmdk") == .file(path: "/a/b c.vmdk"))
    #expect(try DiskLocation(parsing: "C:\\vm\\disk.vmdk") == .file(path: "C:\\vm\\disk.vmdk"))
    #expect(try DiskLocation(parsing: "file:///a/b%20c.vmdk") == .file(path: "/a/b c.vmdk"))
    #expect(try DiskLocation(parsing: "file://localhost/a.vmdk") == .file(path: "/a.vmdk"))
    #expect(try DiskLocation(parsing: "file:rel/a.vmdk") == .file(path: "rel/a.vmdk"))
    #expect(throws: VMDKError.self) { try DiskLocation(parsing: "file://otherhost/a.vmdk") }
    #expect(throws: VMDKError.self) { try DiskLocation(parsing: "file:///a%zz") }
  }

  @Test func nbdURIs() throws {
    #expect(
      try DiskLocation(parsing: "nbd://example.com/disk")
        == .nbd(address: .tcp(host: "example.com", port: 10809), export: "disk", tls: false))
    #expect(
      try DiskLocation(parsing: "nbd://127.0.0.1:10900")
        == .nbd(address: .tcp(host: "127.0.0.1", port: 10900), export: "", tls: false))
    #expect(
      try DiskLocation(parsing: "nbds://[::1]:9000/a%2Fb%20c")
        == .nbd(address: .tcp(host: "::1", port: 9000), export: "a/b c", tls: true))
    #expect(
      try DiskLocation(parsing: "nbd+unix:///exp?socket=/tmp/s.sock")
        == .nbd(address: .unix(path: "/tmp/s.sock"), export: "exp", tls: false))
    #expect(
      try DiskLocation(parsing: "nbds+unix://?socket=/tmp/s.sock")
        == .nbd(address: .unix(path: "/tmp/s.sock"), export: "", tls: true))
    #expect(try DiskLocation(parsing: "NBD://h/x").transport == .nbd)
    #expect(try DiskLocation(parsing: "nbds://h/x").transport == .nbds)
  }

  @Test func httpURLs() throws {
    #expect(
      try DiskLocation(parsing: "http://h:8080/d/disk.vmdk") == .http(url: "http://h:8080/d/disk.vmdk", tls: false))
    #expect(try DiskLocation(parsing: "https://h/disk.vmdk").transport == .https)
  }

  @Test func malformedURIsAreInvalidArguments() {
    for bad in [
      "nbd:/host", "nbd://h:0/x", "nbd://h:70000/x", "nbd://h:port/x", "nbd://[::1/x", "nbd://user@h/x",
      "nbd+unix:///x", "nbd+unix://host/x?socket=/s", "nbd://h/%g0", "http:/x",
      // Not escapes: a sign (once read as the number 1) and an encoded NUL.
      "nbd://h/%+1", "nbd://h/a%00b", "file:///a%00b",
    ] {
      #expect(throws: VMDKError.self, "\(bad)") { try DiskLocation(parsing: bad) }
      do {
        _ = try DiskLocation(parsing: bad)
      } catch let e as VMDKError {
        #expect(e.code == .invalidArgument && e.message.contains(bad), "\(bad): \(e)")
      } catch {
        Issue.record("\(bad): \(error)")
      }
    }
  }

  @Test func descriptionRoundTrips() throws {
    for text in ["nbd://127.0.0.1:10809/disk", "nbds://[::1]:9000/a%20b", "nbd+unix:///e?socket=/tmp/x.sock"] {
      let parsed = try DiskLocation(parsing: text)
      #expect(parsed.description == text)
      #expect(try DiskLocation(parsing: parsed.description) == parsed)
    }
  }
}
