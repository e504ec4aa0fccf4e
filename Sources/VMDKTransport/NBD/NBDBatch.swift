// One call of the client (a read, a write, write-zeroes, trim, flush or block status) as a
// batch of NBD requests, each `pieceSize` bytes, and the state of every request: waiting,
// in flight, or done. The pump (NBDPipeline) keeps several in flight on a link; after a lost
// connection the client resets what was not done and pumps again on a new link.

/// Where a request's payload comes from or its data goes. The buffers are the caller's, used
/// only during the call, under the client's lock (hence @unchecked Sendable).
enum NBDPayload: @unchecked Sendable {
  case none
  /// Read data lands at (request offset − batch start).
  case read(UnsafeMutableRawBufferPointer)
  /// Write data comes from (request offset − batch start).
  case write(UnsafeRawBufferPointer)
  /// Every write request sends the start of this buffer (zeros for write-zeroes without
  /// NBD_CMD_WRITE_ZEROES): memory stays bounded by one request.
  case repeated(UnsafeRawBufferPointer)
}

struct NBDBatch: Sendable {
  enum State: UInt8 { case waiting, inFlight, done }

  /// The state of one request and, for reads, how much of it the reply has covered.
  struct Request {
    var state = State.waiting
    /// The end of the data covered from the request's start, in order (absolute offset).
    var cursor: UInt64 = 0
    /// An error chunk arrived for it: it cannot complete in this round.
    var errored = false
  }

  let command: UInt16
  /// For messages: "read", "write", ...
  let what: String
  let start: UInt64
  let length: UInt64
  let pieceSize: UInt64
  let payload: NBDPayload
  private(set) var requests: [Request]
  /// Chunks that arrived out of order, per request (rare: only then is anything allocated).
  private var scattered: [Int: [(UInt64, UInt64)]] = [:]
  /// Block status answers (for NBD_CMD_BLOCK_STATUS).
  var extents: [NBDExtent] = []
  /// The error the server reported in this round for the lowest offset.
  var failure: VMDKError?
  /// The cookie of request 0 on the current link.
  var cookieBase: UInt64 = 0
  /// The first request that may still be waiting.
  private var nextWaiting = 0
  private(set) var doneCount = 0

  /// `length` bytes at `start` in requests of `pieceSize` bytes (one request of length 0
  /// when `length` is 0, for flush).
  init(command: UInt16, what: String, start: UInt64, length: UInt64, pieceSize: UInt64, payload: NBDPayload) {
    // Invariant: NBDClient passes constants or `requestBytes`, which is at least the
    // negotiated minimum block (checked by the handshake to be a power of two, >= 1) and at
    // most 32 MiB; a server's numbers never reach here unchecked.
    precondition(pieceSize > 0 && pieceSize <= UInt64(UInt32.max))
    self.command = command
    self.what = what
    self.start = start
    self.length = length
    self.pieceSize = pieceSize
    self.payload = payload
    let count = length == 0 ? 1 : Int((length + pieceSize - 1) / pieceSize)
    requests = Array(repeating: Request(), count: count)
  }

  /// Request `i`'s offset and length.
  func range(_ i: Int) -> (offset: UInt64, length: UInt32) {
    let offset = start + UInt64(i) * pieceSize
    return (offset, UInt32(min(pieceSize, start + length - offset)))
  }

  mutating func markSent(_ i: Int) {
    requests[i] = Request(state: .inFlight, cursor: range(i).offset, errored: false)
  }

  mutating func markDone(_ i: Int) {
    requests[i].state = .done
    scattered[i] = nil
    doneCount += 1
  }

  /// A request whose reply ended with an error: it waits to be sent again.
  mutating func markFailed(_ i: Int) {
    requests[i].state = .waiting
    scattered[i] = nil
    nextWaiting = min(nextWaiting, i)
  }

  /// After a lost connection: every request not done waits to be sent again, the next round
  /// starts without an error.
  mutating func resetUnfinished() {
    for i in requests.indices where requests[i].state == .inFlight { requests[i].state = .waiting }
    scattered = [:]
    failure = nil
    nextWaiting = 0
    if command == NBDWire.cmdBlockStatus { extents = [] }
  }

  /// The next waiting request, if any.
  mutating func takeWaiting() -> Int? {
    while nextWaiting < requests.count {
      defer { nextWaiting += 1 }
      if requests[nextWaiting].state == .waiting { return nextWaiting }
    }
    return nil
  }

  /// An error chunk arrived for request `i`.
  mutating func markErrored(_ i: Int) {
    requests[i].errored = true
    scattered[i] = nil
  }

  /// Records `count` bytes at `at` as covered in request `i` (already checked to lie inside
  /// it); in-order data, the usual case, only moves the cursor.
  mutating func cover(_ i: Int, at: UInt64, count: UInt64) {
    if requests[i].errored { return }
    if at == requests[i].cursor {
      requests[i].cursor += count
    } else {
      scattered[i, default: []].append((at, count))
    }
  }

  /// Whether the chunks of request `i` covered it exactly once, without gap or overlap.
  func coveredExactly(_ i: Int) -> Bool {
    let (offset, length) = range(i)
    let end = offset + UInt64(length)
    guard let extra = scattered[i] else { return requests[i].cursor == end }
    var next = offset
    for (at, count) in ([(offset, requests[i].cursor - offset)] + extra).sorted(by: { $0.0 < $1.0 }) {
      guard at == next else { return false }
      next += count
    }
    return next == end
  }
}
