import CLinux
import Glibc
import Synchronization

/// A POSIX thread running a closure, for work that must stay on one OS thread (a vCPU's
/// KVM_RUN loop) and be reachable by a signal.
///
/// `signal(_:)` is safe from any thread at any time: once the body has returned it does
/// nothing, so it never targets a thread id that `join()` may have released. A thread that is
/// never joined is detached when this object goes away.
public final class HostThread: Sendable {
    private let handle: pthread_t
    private let state: ThreadState
    private let joinClaimed = Atomic<Bool>(false)

    /// Starts a thread that runs `body`.
    public init(_ body: @escaping @Sendable () -> Void) throws(SystemError) {
        let state = ThreadState()
        let start = Unmanaged.passRetained(ThreadStart(body: body, state: state))
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { argument in
            let start = Unmanaged<ThreadStart>.fromOpaque(argument!).takeRetainedValue()
            start.body()
            start.state.finished.withLock { $0 = true }
            return nil
        }, start.toOpaque())
        if rc != 0 {
            start.release()
            throw SystemError(Errno(rawValue: rc), operation: "pthread_create")
        }
        self.handle = thread
        self.state = state
    }

    deinit {
        if joinClaimed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            _ = pthread_detach(handle)
        }
    }

    /// Sends `signal` to the thread (pthread_kill) unless its body has already returned.
    /// Returns false when the thread had finished.
    @discardableResult
    public func signal(_ signal: Int32) throws(SystemError) -> Bool {
        let handle = self.handle
        let rc: Int32 = state.finished.withLock { finished in
            finished ? -1 : pthread_kill(handle, signal)
        }
        if rc == -1 { return false }
        if rc != 0 { throw SystemError(Errno(rawValue: rc), operation: "pthread_kill", context: "signal \(signal)") }
        return true
    }

    /// True once the body has returned.
    public var hasFinished: Bool { state.finished.withLock { $0 } }

    /// Waits for the body to return (pthread_join). Only the first call joins; later calls
    /// return at once. Do not call it from the thread itself.
    public func join() {
        guard joinClaimed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return }
        _ = pthread_join(handle, nil)
    }
}

private final class ThreadState: Sendable {
    let finished = Mutex(false)
}

private final class ThreadStart: Sendable {
    let body: @Sendable () -> Void
    let state: ThreadState
    init(body: @escaping @Sendable () -> Void, state: ThreadState) {
        self.body = body
        self.state = state
    }
}

/// Process-wide signal dispositions and the calling thread's signal mask.
public enum Signals {
    /// SIGUSR1: the signal Switchyard uses to kick a thread out of a blocking call.
    public static let kick: Int32 = SIGUSR1

    /// Installs a handler that does nothing for `signal`, without SA_RESTART, so a blocking
    /// system call in the thread that receives it fails with EINTR instead of the process
    /// dying of the default action. Idempotent.
    public static func installNoOpHandler(for signal: Int32) throws(SystemError) {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        try nothingOrError("sigaction", "signal \(signal)") { sigaction(signal, &action, nil) }
    }

    /// Unblocks `signal` in the calling thread (threads inherit their creator's mask).
    public static func unblockInCurrentThread(_ signal: Int32) throws(SystemError) {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, signal)
        let rc = pthread_sigmask(SIG_UNBLOCK, &set, nil)
        if rc != 0 { throw SystemError(Errno(rawValue: rc), operation: "pthread_sigmask", context: "signal \(signal)") }
    }
}
