import Dispatch
import Machine
import Synchronization

/// QEMU's run states that Switchyard reports (query-status).
public enum RunState: String, Sendable, Hashable {
    /// Started with -S: built, not yet running.
    case prelaunch
    case running
    /// Stopped by `stop`.
    case paused
    /// `quit` was requested.
    case shutdown
}

/// What every monitor of one machine shares: the machine, the run state, and the way out
/// (`quit`, or the qtest socket closing).
public final class VMController: Sendable {
    public let machine: Machine
    private let state: Mutex<RunState>
    private let exitCode = Mutex<Int32?>(nil)
    private let exitSignal = DispatchSemaphore(value: 0)

    public init(machine: Machine, startPaused: Bool) {
        self.machine = machine
        state = Mutex(startPaused ? .prelaunch : .running)
    }

    public var runState: RunState { state.withLock { $0 } }

    /// What QMP `system_reset` does: by default the machine returns to its power-on state (no
    /// vCPU, or a test driving it). A session with a running KVM guest ends instead, as QEMU
    /// does with -no-reboot: resetting devices under a running kernel would only corrupt it,
    /// and the guest is not rebooted in place.
    private let resetAction = Mutex<(@Sendable () -> Void)?>(nil)

    public func setResetAction(_ action: @escaping @Sendable () -> Void) { resetAction.withLock { $0 = action } }

    public func performReset() {
        if let action = resetAction.withLock({ $0 }) { action() } else { machine.reset() }
    }

    private let observers = Mutex<[@Sendable (_ old: RunState, _ new: RunState) -> Void]>([])

    /// Changes the run state; returns the previous one. Observers run after the change,
    /// on the caller's thread.
    @discardableResult
    public func setRunState(_ new: RunState) -> RunState {
        let old = state.withLock { s in
            let old = s
            s = new
            return old
        }
        for observer in observers.withLock({ $0 }) { observer(old, new) }
        return old
    }

    /// Calls `observer` with the old and new state on every `setRunState`.
    public func observeRunState(_ observer: @escaping @Sendable (_ old: RunState, _ new: RunState) -> Void) {
        observers.withLock { $0.append(observer) }
    }

    /// Asks the process to end with `code`. The first request wins.
    public func requestExit(code: Int32 = 0) {
        let first = exitCode.withLock { c -> Bool in
            guard c == nil else { return false }
            c = code
            return true
        }
        if first { exitSignal.signal() }
    }

    public var exitRequested: Bool { exitCode.withLock { $0 != nil } }

    /// Blocks until `requestExit`; returns its code.
    public func waitForExit() -> Int32 {
        exitSignal.wait()
        exitSignal.signal()  // let other waiters through too
        return exitCode.withLock { $0 ?? 0 }
    }
}
