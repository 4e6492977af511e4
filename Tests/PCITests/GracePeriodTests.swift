import Foundation
import Synchronization
import Testing
import PCI

/// The grace period's promise, checked from outside: when `waitForCallsInProgress` returns, no
/// call that began before it is still running, and calls that began during it do not hold it.
@Suite struct GracePeriodTests {
    @Test func aCallBegunBeforeTheWaitHoldsItAndOneBegunDuringItDoesNot() {
        let grace = GracePeriod()
        let early = grace.enter()
        var late: Int?
        var pauses = 0
        var earlyLeftAtPause: Int?
        grace.waitForCallsInProgress {
            pauses += 1
            // A call that begins during the wait, and stays open past its end.
            if late == nil { late = grace.enter() }
            if pauses == 3 {
                grace.leave(early)
                earlyLeftAtPause = pauses
            }
        }
        // The wait paused until the early call left, and not after.
        #expect(earlyLeftAtPause == 3)
        #expect(pauses == 3)
        #expect(grace.callsInProgress == 1, "the late call is still open")
        grace.leave(late!)
        #expect(grace.callsInProgress == 0)
    }

    @Test func withNoCallsTheWaitDoesNotPause() {
        let grace = GracePeriod()
        grace.during { }
        var pauses = 0
        grace.waitForCallsInProgress { pauses += 1 }
        grace.waitForCallsInProgress { pauses += 1 }
        #expect(pauses == 0)
    }

    /// Threads keep calling in while a retirer repeatedly unpublishes an object, waits, and
    /// marks it freed: no call that saw the object published may see it freed.
    @Test func noCallSeesWhatWasRetiredUnderConcurrency() {
        let grace = GracePeriod()
        let published = Atomic<Bool>(true)
        let freed = Atomic<Bool>(false)
        let violations = Atomic<Int>(0)
        let callsMade = Atomic<Int>(0)
        let sawPublished = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let finished = Atomic<Int>(0)
        let readers = 2
        for _ in 0..<readers {
            let thread = Thread {
                while !stop.load(ordering: .relaxed) {
                    grace.during {
                        guard published.load(ordering: .sequentiallyConsistent) else { return }
                        sawPublished.add(1, ordering: .relaxed)
                        for _ in 0..<1_000 { _ = callsMade.load(ordering: .relaxed) }
                        if freed.load(ordering: .sequentiallyConsistent) { violations.add(1, ordering: .relaxed) }
                    }
                    callsMade.add(1, ordering: .relaxed)
                }
                finished.add(1, ordering: .sequentiallyConsistent)
            }
            thread.start()
        }
        while callsMade.load(ordering: .relaxed) < 1_000 { sched_yield() }
        var rounds = 0
        let deadline = ContinuousClock.now + .seconds(20)
        while rounds < 2_000 || (sawPublished.load(ordering: .relaxed) < 20_000 && ContinuousClock.now < deadline) {
            rounds += 1
            freed.store(false, ordering: .sequentiallyConsistent)
            published.store(true, ordering: .sequentiallyConsistent)
            for _ in 0..<200 { _ = callsMade.load(ordering: .relaxed) }
            published.store(false, ordering: .sequentiallyConsistent)
            grace.waitForCallsInProgress { sched_yield() }
            freed.store(true, ordering: .sequentiallyConsistent)
        }
        stop.store(true, ordering: .relaxed)
        while finished.load(ordering: .sequentiallyConsistent) < readers { sched_yield() }
        #expect(violations.load(ordering: .relaxed) == 0)
        #expect(sawPublished.load(ordering: .relaxed) >= 20_000, "the readers ran inside published rounds")
        #expect(grace.callsInProgress == 0)
    }
}
