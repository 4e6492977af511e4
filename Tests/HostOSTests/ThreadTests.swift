import Glibc
import HostOS
import Synchronization
import Testing

@Suite struct HostThreadTests {
    /// I/O threads run under SCHED_BATCH (3 in linux/sched.h), as the kernel reports it to
    /// the thread itself; vCPU and control threads stay SCHED_OTHER (0).
    @Test(arguments: [(SandboxThreadKind.io, Int32(3)), (.vcpu, 0), (.control, 0), (.signal, 0)])
    func ioThreadsDoNotPreemptOnWakeUp(kind: SandboxThreadKind, policy: Int32) throws {
        let seen = Mutex<Int32>(-1)
        let thread = try HostThread(kind: kind, name: "policy-test") { seen.withLock { $0 = sched_getscheduler(0) } }
        thread.join()
        #expect(seen.withLock { $0 } == policy, "\(kind)")
    }

    @Test func runsTheBodyAndJoins() throws {
        let counter = Atomic<Int>(0)
        let thread = try HostThread { counter.add(1, ordering: .relaxed) }
        thread.join()
        thread.join()  // a second join returns at once
        #expect(counter.load(ordering: .relaxed) == 1)
        #expect(thread.hasFinished)
        // Signalling a finished thread does nothing.
        #expect(try thread.signal(Signals.kick) == false)
    }

    @Test func aKickInterruptsABlockingCall() throws {
        try Signals.installNoOpHandler(for: Signals.kick)
        let pipe = try FileDescriptor.pipe()
        let readFD = pipe.readEnd.rawValue
        let result = Mutex<Errno?>(nil)
        let thread = try HostThread {
            do throws(SystemError) {
                try Signals.unblockInCurrentThread(Signals.kick)
                // An epoll wait returns no events when a signal interrupts it.
                let poll = try Epoll()
                try poll.add(readFD, events: .readable, data: 0)
                let events = try poll.wait(timeoutMilliseconds: 10_000)
                result.withLock { $0 = events.isEmpty ? .interrupted : nil }
            } catch {
                result.withLock { $0 = error.errno }
            }
        }
        let clock = ContinuousClock()
        let start = clock.now
        // Keep kicking until the thread is out (the first kick may land before it blocks).
        while !thread.hasFinished && clock.now - start < .seconds(5) {
            try thread.signal(Signals.kick)
            usleep(10_000)
        }
        thread.join()
        #expect(result.withLock { $0 } == .interrupted)
        #expect(clock.now - start < .seconds(5))
        _ = consume pipe
    }
}
