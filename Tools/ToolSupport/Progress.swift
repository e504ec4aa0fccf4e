// A one-line progress bar on a terminal: percent, bytes, rate and time left. Nothing when
// standard error is not a terminal (piped, redirected) or when the user asked for quiet.

import Foundation

#if canImport(Glibc)
  import Glibc
#endif

public final class ProgressBar: @unchecked Sendable {
  private let total: UInt64
  private let enabled: Bool
  private let started = Date()
  private var lastDraw = Date.distantPast
  private var drawn = false
  private let lock = NSLock()

  /// A bar for `total` bytes, shown only on a terminal and when not `quiet`.
  public init(total: UInt64, quiet: Bool) {
    self.total = max(total, 1)
    self.enabled = !quiet && isatty(2) != 0
  }

  /// Reports `done` bytes; redraws at most five times a second.
  public func update(_ done: UInt64) {
    guard enabled else { return }
    lock.withLock {
      let now = Date()
      guard done >= total || now.timeIntervalSince(lastDraw) >= 0.2 else { return }
      lastDraw = now
      draw(done, now: now)
    }
  }

  /// Ends the line (after the last update).
  public func finish() {
    guard enabled else { return }
    lock.withLock {
      if drawn { printError("") }
      drawn = false
    }
  }

  private func draw(_ done: UInt64, now: Date) {
    let fraction = min(1, Double(done) / Double(total))
    let elapsed = now.timeIntervalSince(started)
    let rate = elapsed > 0 ? Double(done) / elapsed : 0
    let left = rate > 0 ? Double(total - min(done, total)) / rate : 0
    let width = 30
    let filled = Int(fraction * Double(width))
    let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
    let text = String(
      format: "\r[%@] %3d%%  %@ of %@  %@/s  %@ left ", bar, Int(fraction * 100), humanSize(done),
      humanSize(total), humanSize(UInt64(rate)), Self.clock(left))
    text.withCString { _ = write(2, $0, strlen($0)) }
    drawn = true
  }

  static func clock(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return s >= 3600
      ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
  }
}
