import Synchronization

/// Calls in progress into something that may be taken away (a function reached by a config
/// cycle, a DMA port), counted by the epoch they began in. Whoever takes it away starts a new
/// epoch and waits until `hasCallsBefore` is false: from then on no call that could still see
/// the old state is running, while calls that began later are not waited for (so a steady
/// stream of accesses cannot hold the waiter off). The waiting itself is the caller's (the
/// machine sleeps between checks; this module never blocks the host thread).
public final class GracePeriod: Sendable {
    /// Calls are counted in two heaps, not per epoch: those that began in the current epoch and
    /// all older ones. `advance` moves the current ones to the older heap. Two integers under
    /// the lock keep a config cycle's cost at a lock and an add (a table per epoch cost more than
    /// the cycle itself).
    private struct State {
        var epoch = 0
        var current = 0
        var older = 0
    }
    private let state = Mutex(State())

    public init() {}

    /// Marks a call as begun; pass the result to `leave`.
    public func enter() -> Int {
        state.withLock { s in
            s.current += 1
            return s.epoch
        }
    }

    public func leave(_ epoch: Int) {
        state.withLock { s in
            if epoch == s.epoch { s.current -= 1 } else { s.older -= 1 }
        }
    }

    /// Runs `body` as one call.
    public func during<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let epoch = enter()
        defer { leave(epoch) }
        return try body()
    }

    /// Starts a new epoch; returns it for `hasCallsBefore`.
    public func advance() -> Int {
        state.withLock { s in
            s.older += s.current
            s.current = 0
            s.epoch += 1
            return s.epoch
        }
    }

    /// Whether a call that began before `epoch` may still be running. After a later `advance`
    /// this also counts calls that began between the two (they are short, and new ones are not
    /// counted, so the wait still ends).
    public func hasCallsBefore(_ epoch: Int) -> Bool {
        state.withLock { $0.older > 0 }
    }
}
