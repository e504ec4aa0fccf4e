// A writable open right after a close, while another thread of the process spawns children:
// each child shares the process's open file descriptions (and their OFD locks) from its fork
// until its exec, so the lock just closed can still be held for that while. The open must
// wait it out (FileLock.patience), not report `alreadyLocked`. Before, about one open in 60
// failed here.
import Foundation
import Glibc
import Testing
import VMDKBlock
import VMDKCore

@Suite struct FileLockSpawnTests {
  @Test func reopenForWritingWhileChildrenAreSpawned() throws {
    let folder = try TempFolder()
    let path = try TrackedDisk.base(folder)
    let stop = Locked(false)
    let spawned = Locked(0)
    let spawner = Thread {
      let program = strdup("/bin/true")
      defer { free(program) }
      while !stop.withLock({ $0 }) {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [program, nil]
        guard posix_spawn(&pid, "/bin/true", nil, nil, argv, environ) == 0 else { continue }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        spawned.withLock { $0 += 1 }
      }
    }
    spawner.start()
    defer { stop.withLock { $0 = true } }
    var failures: [String] = []
    let clock = ContinuousClock()
    let end = clock.now.advanced(by: .seconds(2))
    var rounds = 0
    while clock.now < end {
      do {
        let disk = try Disk.open(path, options: writableOptions())
        try disk.close()
      } catch {
        failures.append("\(error)")
      }
      rounds += 1
    }
    stop.withLock { $0 = true }
    #expect(spawned.withLock { $0 } > 100, "the spawning thread must have run")
    let failed = failures.count
    #expect(failed == 0, "\(failed) of \(rounds) writable opens failed: \(failures.first ?? "")")
  }
}
