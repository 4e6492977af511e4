import Dispatch
import Foundation
import Machine
import Synchronization
import VMMBase

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

/// What a reset request does (QEMU's -action reboot=...: -no-reboot is `shutdown`).
public enum RebootAction: Sendable, Hashable {
    case reset
    case shutdown
}

/// Who asked for a reset, with QEMU's names for it (ShutdownCause in QMP events).
public enum ResetCause: Sendable, Hashable {
    /// The guest: reset registers, keyboard controller, triple fault.
    case guest
    /// QMP `system_reset`.
    case hostQMP

    public var byGuest: Bool { self == .guest }
    public var qmpReason: String {
        switch self {
        case .guest: "guest-reset"
        case .hostQMP: "host-qmp-system-reset"
        }
    }
}

/// What became of a reset request: the machine reset, or (-no-reboot) the session ends.
public enum ResetOutcome: Sendable, Hashable {
    case reset(ResetCause)
    case shutdown(ResetCause)
}

/// What every monitor of one machine shares: the machine, the run state, and the way out
/// (`quit`, or the qtest socket closing).
public final class VMController: Sendable {
    public let machine: Machine
    private let state: Mutex<RunState>
    private let exitCode = Mutex<Int32?>(nil)
    private let exitSignal = DispatchSemaphore(value: 0)

    public init(machine: Machine, startPaused: Bool, rebootAction: RebootAction = .reset) {
        self.machine = machine
        self.rebootAction = rebootAction
        state = Mutex(startPaused ? .prelaunch : .running)
        let token = machine.addEventListener { [weak self] event in
            switch event {
            case .resetRequested: self?.requestGuestReset()
            case .assignedDeviceFailed(let id, let host):
                // As QEMU does: the VM stops, for the operator to look at it and then end it.
                if self?.setRunState(.paused) == .running {
                    GuestErrorLog.report(device: id, kind: "vfio-error",
                                         "the host reported an unrecoverable error on \(host); the VM is stopped: collect what you need (QMP), then end it")
                }
            case .deviceDeleted, .powerOff: break
            }
        }
        listenerToken.withLock { $0 = token }
    }

    deinit {
        if let token = listenerToken.withLock({ $0 }) { machine.removeEventListener(token) }
    }

    private let listenerToken = Mutex<Int?>(nil)

    public var runState: RunState { state.withLock { $0 } }

    /// What a reset request does: reset the machine and carry on (QEMU's default), or end the
    /// session (-no-reboot).
    public let rebootAction: RebootAction

    /// How the machine resets: by default to its power-on state (no vCPU, or a test driving
    /// it); a session with a KVM guest reboots the guest (`KVMLinuxGuest.reboot`).
    private let resetAction = Mutex<(@Sendable () throws -> Void)?>(nil)
    /// Resets run here, one at a time, off the vCPU threads that ask for them.
    private let resetQueue = DispatchQueue(label: "switchyard-reset")
    /// A guest request queued or running: more requests until it is done are the same reset
    /// (Linux tries the reset register, then the keyboard controller, then a triple fault).
    private let guestResetPending = Mutex(false)
    private let resetObservers = Mutex<[@Sendable (ResetOutcome) -> Void]>([])

    /// What a guest's request does on the spot, before the reset runs (a KVM guest holds its
    /// vCPUs: `VCPURunner.holdForReset`).
    private let stopOnRequest = Mutex<(@Sendable () -> Void)?>(nil)

    /// `action` resets the machine; `stopNow`, if given, runs as soon as the guest asks for a
    /// reset (on the asking thread, which must not wait), so the guest runs no further.
    public func setResetAction(_ action: @escaping @Sendable () throws -> Void, stopNow: (@Sendable () -> Void)? = nil) {
        resetAction.withLock { $0 = action }
        stopOnRequest.withLock { $0 = stopNow }
    }

    /// Calls `observer` after every reset (QMP RESET) and when a reset request ends the
    /// session instead (SHUTDOWN).
    public func observeResets(_ observer: @escaping @Sendable (ResetOutcome) -> Void) {
        resetObservers.withLock { $0.append(observer) }
    }

    /// QMP `system_reset`: returns once the machine is reset (RESET sent) or, with
    /// -no-reboot, once SHUTDOWN is sent and the run state is `shutdown`; the caller then ends
    /// the session with `requestExit` after its reply, as QEMU replies before it exits.
    public func systemReset() {
        if rebootAction == .shutdown {
            shutDown(.hostQMP)
            return
        }
        resetQueue.sync { performReset(.hostQMP) }
    }

    /// A reset the guest asked for (reset registers, triple fault), from any thread: carried
    /// out on the reset queue (a vCPU thread does not wait for it); with -no-reboot the
    /// session ends.
    public func requestGuestReset() {
        if rebootAction == .shutdown {
            shutDown(.guest)
            requestExit(code: 0)
            return
        }
        let first = guestResetPending.withLock { p in defer { p = true }; return !p }
        guard first else { return }
        if resetAction.withLock({ $0 == nil }) {
            // No vCPU: the request came from a test driving the machine (qtest), which sees the
            // reset done before its access returns, as on QEMU.
            resetQueue.sync { performReset(.guest) }
        } else {
            stopOnRequest.withLock { $0 }?()
            resetQueue.async { [self] in performReset(.guest) }
        }
    }

    /// Runs `body` with no reset in progress (QMP stop and cont must not interleave with one).
    @discardableResult
    public func withoutResetInProgress<T>(_ body: () throws -> T) rethrows -> T {
        try resetQueue.sync { try body() }
    }

    private func performReset(_ cause: ResetCause) {
        let action = resetAction.withLock { $0 }
        do {
            if let action { try action() } else { machine.reset() }
        } catch {
            FileHandle.standardError.write(Data("switchyard: reset failed: \(error)\n".utf8))
            requestExit(code: 1)
            return
        }
        if cause == .guest { guestResetPending.withLock { $0 = false } }
        for observer in resetObservers.withLock({ $0 }) { observer(.reset(cause)) }
    }

    /// Set by the first reset request that ends the session: later ones (Linux tries several
    /// ways to reset) send no second SHUTDOWN.
    private let shuttingDown = Mutex(false)

    private func shutDown(_ cause: ResetCause) {
        guard shuttingDown.withLock({ s in defer { s = true }; return !s }) else { return }
        for observer in resetObservers.withLock({ $0 }) { observer(.shutdown(cause)) }
        setRunState(.shutdown)
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
