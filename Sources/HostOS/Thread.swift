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

    /// Starts a thread that runs `body`. With a `kind`, the thread confines itself to that
    /// kind's sandbox list first (`Sandbox.confineCurrentThread`); after lock-down it is
    /// created by `ThreadSpawner`, so it inherits only the base filter, never its creator's.
    /// `name` (15 bytes at most are kept) is what ps and gdb show.
    public init(kind: SandboxThreadKind? = nil, name: String? = nil,
                _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        let state = ThreadState()
        let start = Unmanaged.passRetained(ThreadStart(body: body, state: state, kind: kind, name: name))
        var thread = pthread_t()
        let rc = ThreadSpawner.create(&thread, start.toOpaque(), fromBaseFilter: kind != nil && Sandbox.isLockedDown)
        if rc != 0 {
            start.release()
            throw SystemError(Errno(rawValue: rc), operation: "pthread_create")
        }
        self.handle = thread
        self.state = state
    }

    /// The start routine of every HostThread.
    static let entry: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { argument in
        let start = Unmanaged<ThreadStart>.fromOpaque(argument!).takeRetainedValue()
        if let name = start.name { _ = sy_set_thread_name(String(name.utf8.prefix(15))!) }
        if let kind = start.kind {
            if kind.yieldsToRunningThreads { _ = sy_sched_batch_self() }
            Sandbox.confineCurrentThread(to: kind)
        }
        start.body()
        start.state.finished.withLock { $0 = true }
        return nil
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

extension SandboxThreadKind {
    /// I/O threads run under SCHED_BATCH: woken (a kick, a readable tap), one does not preempt
    /// the thread running on its CPU but waits for it to block or use up its slice. A vCPU that
    /// kicks thus goes on until its guest idles, adding more work to the same wake-up, and where
    /// a CPU is idle the thread runs there at once anyway. On the rig's one-CPU L1 this took
    /// virtio-net's transmit from 0.80-1.26 s to 0.24-0.27 s for 4 MiB (Tests/Rig/README.md):
    /// preempting L2 at each kick kept its TCP's window, and so its frames, small. A host that
    /// refuses the policy leaves the thread as it was.
    public var yieldsToRunningThreads: Bool { self == .io }
}

private final class ThreadState: Sendable {
    let finished = Mutex(false)
}

private final class ThreadStart: Sendable {
    let body: @Sendable () -> Void
    let state: ThreadState
    let kind: SandboxThreadKind?
    let name: String?
    init(body: @escaping @Sendable () -> Void, state: ThreadState, kind: SandboxThreadKind?, name: String?) {
        self.body = body
        self.state = state
        self.kind = kind
        self.name = name
    }
}

/// Creates threads from a thread that has only the sandbox's base filter: a new thread
/// inherits its creator's filters, so a control thread that starts vCPUs (QMP `cont` after
/// -S) or a vCPU whose serial output starts a client's writer would otherwise pass on its own,
/// narrower list. Started by `Sandbox.arm`, before any filter exists.
enum ThreadSpawner {
    private struct Request: @unchecked Sendable {
        // Owned by the requester, which waits on `done` until the spawner has written them.
        let thread: UnsafeMutablePointer<pthread_t>
        let argument: UnsafeMutableRawPointer
        let result: UnsafeMutablePointer<Int32>
        let done: UnsafeMutablePointer<sem_t>
    }

    private static let queue = Mutex<[Request]>([])
    nonisolated(unsafe) private static let pending: UnsafeMutablePointer<sem_t> = {
        let semaphore = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
        return semaphore
    }()
    private static let started = Atomic<Bool>(false)

    /// Starts the spawner thread (once). Call before any filter is loaded.
    static func start() throws(SystemError) {
        guard started.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        _ = pending
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { _ in
            _ = sy_set_thread_name("sy-spawner")
            while true {
                while sem_wait(ThreadSpawner.pending) != 0 {}
                guard let request = ThreadSpawner.queue.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
                request.result.pointee = pthread_create(request.thread, nil, HostThread.entry, request.argument)
                sem_post(request.done)
            }
        }, nil)
        if rc != 0 {
            started.store(false, ordering: .releasing)
            throw SystemError(Errno(rawValue: rc), operation: "pthread_create", context: "the sandbox's thread spawner")
        }
        pthread_detach(thread)
    }

    /// pthread_create, on the spawner when `fromBaseFilter` (and it runs), else right here.
    static func create(_ thread: inout pthread_t, _ argument: UnsafeMutableRawPointer, fromBaseFilter: Bool) -> Int32 {
        guard fromBaseFilter, started.load(ordering: .acquiring) else {
            return pthread_create(&thread, nil, HostThread.entry, argument)
        }
        return withUnsafeMutablePointer(to: &thread) { threadPointer in
            var result: Int32 = 0
            var done = sem_t()
            sem_init(&done, 0, 0)
            defer { sem_destroy(&done) }
            return withUnsafeMutablePointer(to: &result) { resultPointer in
                withUnsafeMutablePointer(to: &done) { donePointer in
                    queue.withLock { $0.append(Request(thread: threadPointer, argument: argument,
                                                       result: resultPointer, done: donePointer)) }
                    sem_post(pending)
                    while sem_wait(donePointer) != 0 {}
                    return resultPointer.pointee
                }
            }
        }
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
