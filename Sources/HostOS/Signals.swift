import Glibc

/// Synchronous signal handling: block a set of signals in the calling thread (threads it
/// creates afterwards inherit the mask), then take them one at a time with `wait()` on a
/// thread of your choice. No async-signal-safety concerns, no handlers.
public struct SignalSet: Sendable, Hashable {
    public let numbers: [Int32]
    public init(_ numbers: [Int32]) { self.numbers = numbers }

    public static let terminate = SIGTERM
    public static let interrupt = SIGINT
    public static let hangUp = SIGHUP
    /// SIGTERM, SIGINT and SIGHUP: what asks a server to end.
    public static let termination = SignalSet([SIGTERM, SIGINT, SIGHUP])

    private func withSet<R>(_ body: (inout sigset_t) -> R) -> R {
        var set = sigset_t()
        sigemptyset(&set)
        for n in numbers { sigaddset(&set, n) }
        return body(&set)
    }

    /// Blocks these signals in the calling thread.
    public func block() throws(SystemError) {
        let rc = withSet { set in pthread_sigmask(SIG_BLOCK, &set, nil) }
        if rc != 0 { throw SystemError(Errno(rawValue: rc), operation: "pthread_sigmask") }
    }

    /// Waits for one of these signals (which must be blocked in every thread) and returns it.
    public func wait() -> Int32 {
        withSet { set in
            var signal: Int32 = 0
            while sigwait(&set, &signal) != 0 {}
            return signal
        }
    }
}
