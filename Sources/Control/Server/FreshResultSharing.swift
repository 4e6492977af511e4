import Foundation

/// Shares one computation among callers that ask at the same time, without handing anyone a
/// stale answer: a caller gets the result of a computation that started after it asked. Ten
/// monitor clients asking `query-pci` together cost one or two walks of the machine, not ten
/// walks racing each other (and the guest) for the same device locks.
///
/// A condition variable is what this needs (wait for the next computation); NSCondition is that,
/// so the type is checked by hand: every stored property is touched only with `condition` locked.
final class FreshResultSharing<Value: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var running = false
    /// Computations started so far; the one running (if any) is number `started`.
    private var started = 0
    private var finished = 0
    private var latest: Value?
    private let compute: @Sendable () -> Value

    init(_ compute: @escaping @Sendable () -> Value) { self.compute = compute }

    /// A value computed entirely after this call began.
    func value() -> Value {
        condition.lock()
        // A computation already running began before us: ours is the next one.
        let wanted = started + 1
        while true {
            if finished >= wanted, let latest {
                condition.unlock()
                return latest
            }
            if !running {
                running = true
                started += 1
                let number = started
                condition.unlock()
                let result = compute()
                condition.lock()
                running = false
                finished = number
                latest = result
                condition.broadcast()
                continue
            }
            condition.wait()
        }
    }
}
