import Synchronization

/// Calls in progress into something that may be taken away (a function reached by a config
/// cycle, a DMA port). Whoever takes it away first makes it unreachable for new calls, then
/// `waitForCallsInProgress`: when that returns, no call that could still see the old state is
/// running. Calls that begin during the wait are not waited for, so a steady stream of
/// accesses cannot hold the waiter off.
///
/// Calls cost two atomic adds and no lock (a config cycle is ~150 ns; a lock pair was a tenth
/// of that). Calls are counted by the parity of the epoch they began in; the waiter flips the
/// epoch, so new calls count on the other side, and waits for the old side to empty. This is
/// the scheme of Linux's SRCU, reduced to one waiter at a time.
public final class GracePeriod: Sendable {
    private let epoch = Atomic<Int>(0)
    private let evenCalls = Atomic<Int>(0)
    private let oddCalls = Atomic<Int>(0)
    /// One waiter at a time: a second flip during a wait would put new calls on the side
    /// being waited for.
    private let waiters = Mutex(())

    public init() {}

    /// Marks a call as begun; pass the result to `leave`.
    public func enter() -> Int {
        while true {
            let begun = epoch.load(ordering: .sequentiallyConsistent)
            add(1, parity: begun)
            // Counted before the flip (the waiter will see it) or seen the flip: count again
            // on the new side. Both sides are sequentially consistent, so one of the two holds.
            if epoch.load(ordering: .sequentiallyConsistent) == begun { return begun }
            add(-1, parity: begun)
        }
    }

    public func leave(_ begun: Int) {
        add(-1, parity: begun)
    }

    /// Runs `body` as one call.
    public func during<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let begun = enter()
        defer { leave(begun) }
        return try body()
    }

    /// Returns once every call that began before this was called has left. `pause` is how the
    /// caller waits between checks (the machine sleeps; this module never blocks on its own).
    /// Must not be called from inside a call of this grace period.
    public func waitForCallsInProgress(pause: () -> Void) {
        waiters.withLock { _ in
            let old = epoch.load(ordering: .sequentiallyConsistent)
            // The side new calls are about to use may still hold calls that were just backing
            // out of an earlier flip; let them go first.
            while calls(parity: old &+ 1) > 0 { pause() }
            epoch.store(old &+ 1, ordering: .sequentiallyConsistent)
            while calls(parity: old) > 0 { pause() }
        }
    }

    /// Calls in progress, for tests and diagnostics.
    public var callsInProgress: Int { calls(parity: 0) &+ calls(parity: 1) }

    private func add(_ delta: Int, parity: Int) {
        if parity & 1 == 0 {
            evenCalls.wrappingAdd(delta, ordering: .sequentiallyConsistent)
        } else {
            oddCalls.wrappingAdd(delta, ordering: .sequentiallyConsistent)
        }
    }

    private func calls(parity: Int) -> Int {
        parity & 1 == 0
            ? evenCalls.load(ordering: .sequentiallyConsistent)
            : oddCalls.load(ordering: .sequentiallyConsistent)
    }
}
