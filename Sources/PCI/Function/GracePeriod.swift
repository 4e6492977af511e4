import Synchronization

/// Calls in progress into something that may be taken away (a function reached by a config
/// cycle, a DMA port), counted by the epoch they began in. Whoever takes it away starts a new
/// epoch and waits until `hasCallsBefore` is false: from then on no call that could still see
/// the old state is running, while calls that began later are not waited for (so a steady
/// stream of accesses cannot hold the waiter off). The waiting itself is the caller's (the
/// machine sleeps between checks; this module never blocks the host thread).
public final class GracePeriod: Sendable {
    private struct State {
        var epoch = 0
        var inFlight: [Int: Int] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    /// Marks a call as begun; pass the result to `leave`.
    public func enter() -> Int {
        state.withLock { s in
            s.inFlight[s.epoch, default: 0] += 1
            return s.epoch
        }
    }

    public func leave(_ epoch: Int) {
        state.withLock { s in
            let remaining = (s.inFlight[epoch] ?? 1) - 1
            s.inFlight[epoch] = remaining > 0 ? remaining : nil
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
            s.epoch += 1
            return s.epoch
        }
    }

    /// Whether a call that began before `epoch` is still running.
    public func hasCallsBefore(_ epoch: Int) -> Bool {
        state.withLock { s in s.inFlight.keys.contains { $0 < epoch } }
    }
}
