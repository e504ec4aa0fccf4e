// nbdCheck alone: every request is judged before it reaches the disk.

import NBDServer
import Testing

struct RequestCheckTests {
  let p = NBDProtocol.self
  let ro = NBDSession(
    exportSize: 1 << 20, readOnly: true, structuredReplies: true, contextCount: 1, maxPayload: 32 << 20)
  var rw: NBDSession {
    var s = ro
    s.readOnly = false
    return s
  }

  func req(_ type: UInt16, _ offset: UInt64, _ length: UInt32, flags: UInt16 = 0) -> NBDRequest {
    NBDRequest(flags: flags, type: type, cookie: 1, offset: offset, length: length)
  }

  @Test func reads() {
    #expect(nbdCheck(req(p.cmdRead, 0, 4096), session: ro) == .serve)
    #expect(nbdCheck(req(p.cmdRead, (1 << 20) - 512, 512), session: ro) == .serve)
    #expect(nbdCheck(req(p.cmdRead, (1 << 20) - 512, 513), session: ro) == .reject(p.eInval))
    #expect(nbdCheck(req(p.cmdRead, UInt64.max, 1), session: ro) == .reject(p.eInval))
    #expect(nbdCheck(req(p.cmdRead, 0, 0), session: ro) == .reject(p.eInval))
    #expect(nbdCheck(req(p.cmdRead, 0, 64 << 20), session: ro) == .reject(p.eOverflow))
    #expect(nbdCheck(req(p.cmdRead, 0, 512, flags: p.cmdFlagDF), session: ro) == .serve)
    #expect(nbdCheck(req(p.cmdRead, 0, 512, flags: p.cmdFlagFUA), session: ro) == .reject(p.eInval))
  }

  @Test func writes() {
    #expect(nbdCheck(req(p.cmdWrite, 0, 512), session: ro) == .reject(p.ePerm))
    #expect(nbdCheck(req(p.cmdWrite, 0, 512, flags: p.cmdFlagFUA), session: rw) == .serve)
    #expect(nbdCheck(req(p.cmdWrite, 1 << 20, 1), session: rw) == .reject(p.eNoSpc))
    #expect(nbdCheck(req(p.cmdWrite, 0, 64 << 20), session: rw) == .rejectAndClose(p.eOverflow))
    #expect(nbdCheck(req(p.cmdWrite, 0, 64 << 20), session: ro) == .rejectAndClose(p.eOverflow))
    #expect(nbdCheck(req(p.cmdWrite, 0, 512, flags: 0x8000), session: rw) == .reject(p.eInval))
    #expect(nbdCheck(req(p.cmdWriteZeroes, 0, 512, flags: p.cmdFlagNoHole), session: rw) == .serve)
    #expect(nbdCheck(req(p.cmdWriteZeroes, 0, 512, flags: p.cmdFlagFastZero), session: rw) == .reject(p.eNotSup))
    #expect(nbdCheck(req(p.cmdTrim, 0, 512), session: ro) == .reject(p.ePerm))
  }

  @Test func others() {
    #expect(nbdCheck(req(p.cmdFlush, 0, 0), session: ro) == .serve)
    #expect(nbdCheck(req(p.cmdFlush, 0, 1), session: ro) == .reject(p.eInval))
    #expect(nbdCheck(req(p.cmdBlockStatus, 0, 1 << 20, flags: p.cmdFlagReqOne), session: ro) == .serve)
    var none = ro
    none.contextCount = 0
    #expect(nbdCheck(req(p.cmdBlockStatus, 0, 512), session: none) == .reject(p.eInval))
    #expect(nbdCheck(req(99, 0, 512), session: ro) == .reject(p.eInval))
    #expect(nbdCheck(req(p.cmdCache, 0, 512), session: ro) == .serve)
  }

  @Test func requestHeaderRoundTripAndTruncation() throws {
    let r = req(p.cmdRead, 4096, 512, flags: p.cmdFlagDF)
    #expect(try NBDRequest(parsing: r.encoded) == r)
    for n in 0..<28 {
      #expect(throws: NBDParseError.self) { try NBDRequest(parsing: Array(r.encoded[0..<n])) }
    }
    var bad = r.encoded
    bad[3] ^= 0xff
    #expect(throws: NBDParseError.self) { try NBDRequest(parsing: bad) }
  }

  @Test func extentsMergeAndClamp() {
    var w = [NBDExtent]()
    nbdAppendExtent(&w, length: 10, flags: 0)
    nbdAppendExtent(&w, length: 5, flags: 0)
    nbdAppendExtent(&w, length: 5, flags: 3)
    #expect(w == [NBDExtent(length: 15, flags: 0), NBDExtent(length: 5, flags: 3)])
    var big = [NBDExtent]()
    nbdAppendExtent(&big, length: UInt64(UInt32.max) + 10, flags: 1)
    #expect(big == [NBDExtent(length: UInt32.max, flags: 1), NBDExtent(length: 10, flags: 1)])
  }
}
