// libFuzzer entry point for the NBD server's parsers of what a client sends (built by
// Fuzz/run.sh server with Sources/NBDServer/NBDProtocol.swift and NBDMessages.swift as one
// module). The input is read as a client's byte stream, nbdkit-style: option headers and
// their data, then request headers judged by nbdCheck; and each parser also gets the whole
// input. Every parser must return or throw NBDParseError; a trap, an out-of-bounds access, a
// hang or a large allocation is a finding.

private func exercise(_ bytes: [UInt8]) {
  _ = try? NBDOptionHeader(parsing: bytes)
  _ = try? NBDExportQuery(parsing: bytes)
  _ = try? NBDMetaContextQuery(parsing: bytes)
  _ = try? NBDRequest(parsing: bytes)

  // The stream: options (16-byte header, then its data) until one is GO or EXPORT_NAME, then
  // 28-byte requests, each judged against a session whose size the input's first bytes give.
  var r = NBDReader(bytes)
  let exportSize = (try? r.u64("size")) ?? 0
  var structured = false
  var contextCount = 0
  var index = r.index
  while index + NBDOptionHeader.bytes <= bytes.count {
    guard let header = try? NBDOptionHeader(parsing: Array(bytes[index..<(index + NBDOptionHeader.bytes)])) else {
      break
    }
    index += NBDOptionHeader.bytes
    guard header.length <= UInt32(NBDProtocol.maxOptionBytes), Int(header.length) <= bytes.count - index else {
      return
    }
    let data = Array(bytes[index..<(index + Int(header.length))])
    index += Int(header.length)
    switch header.option {
    case NBDProtocol.optStructuredReply: structured = true
    case NBDProtocol.optSetMetaContext, NBDProtocol.optListMetaContext:
      if let q = try? NBDMetaContextQuery(parsing: data) {
        contextCount =
          nbdSelectContexts(
            q.queries, available: [NBDProtocol.baseAllocation, NBDProtocol.qemuAllocationDepth],
            listing: header.option == NBDProtocol.optListMetaContext
          ).count
      }
    case NBDProtocol.optGo, NBDProtocol.optInfo: _ = try? NBDExportQuery(parsing: data)
    default: break
    }
    _ = nbdOptionError(option: header.option, type: NBDProtocol.repErrInvalid, String(decoding: data, as: UTF8.self))
  }
  let session = NBDSession(
    exportSize: exportSize, readOnly: exportSize & 1 == 0, structuredReplies: structured,
    contextCount: contextCount, maxPayload: NBDProtocol.maxPayloadBytes)
  while index + NBDProtocol.requestHeaderBytes <= bytes.count {
    guard let request = try? NBDRequest(parsing: Array(bytes[index..<(index + NBDProtocol.requestHeaderBytes)]))
    else { return }
    index += NBDProtocol.requestHeaderBytes
    let verdict = nbdCheck(request, session: session)
    if verdict == .serve {
      // What the server relies on once a request is served: in range, within the payload.
      let end = request.offset.addingReportingOverflow(UInt64(request.length))
      if request.type != NBDProtocol.cmdDisc && request.type != NBDProtocol.cmdFlush {
        require(!end.overflow && end.partialValue <= exportSize, "served a request past the end")
      }
      if request.type == NBDProtocol.cmdRead || request.type == NBDProtocol.cmdWrite {
        require(request.length > 0 && Int(request.length) <= NBDProtocol.maxPayloadBytes, "payload not bounded")
        require(request.type == NBDProtocol.cmdRead || !session.readOnly, "a write served on a read-only export")
      }
    }
    if request.type == NBDProtocol.cmdWrite, case .rejectAndClose = verdict { return }
    if request.type == NBDProtocol.cmdWrite {
      // The payload follows.
      index += min(Int(request.length), bytes.count - index)
    }
    var extents: [NBDExtent] = []
    nbdAppendExtent(&extents, length: UInt64(request.length) << 12, flags: UInt32(request.flags))
    _ = nbdBlockStatusChunk(cookie: request.cookie, done: true, contextID: 1, extents: extents)
  }
}

/// A finding unless `condition` holds (a trap that libFuzzer records, with the message).
private func require(_ condition: Bool, _ message: StaticString) {
  if !condition { fatalError("invariant broken: \(message)") }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  exercise(Array(UnsafeBufferPointer(start: data, count: size)))
  return 0
}
