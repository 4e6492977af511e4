import CLinux
import VMMBase
import HostOS
import Synchronization

/// Wiring a machine to it (Machine's four exit entry points already have the protocol's exact
/// signatures, so the conformance is empty; Machine's target needs "KVM" in its dependencies):
///
/// ```swift
/// extension Machine: VCPUExitHandler {}
///
/// let kvm = try KVMSystem()
/// let vm = try kvm.createVirtualMachine()            // .init(irqchip: .full) for a real guest
/// let ram = SharedMapping(try MemoryMapping.anonymous(count: 1 << 20))
/// try vm.mapMemory(guestAddress: 0, mapping: ram)     // the same mapping GuestMemory uses
/// let code = try FileSystem.readFile("Firmware/realmode-probe/probe.bin")
/// ram.bytes.baseAddress!.advanced(by: 0x7C00).copyMemory(from: code, byteCount: code.count)
/// let vcpu = try vm.createVCPU(id: 0)
/// var sregs = try vcpu.specialRegisters()
/// sregs.cs = .realMode(selector: 0, code: true)
/// try vcpu.setSpecialRegisters(sregs)
/// var regs = Registers(); regs.rip = 0x7C00; regs.rflags = 2
/// try vcpu.setRegisters(regs)
/// let runner = try VCPURunner(vcpus: [vcpu], handler: machine)
/// try runner.start()
/// guard runner.waitUntilFinished(timeoutMilliseconds: 5000) else { runner.requestStop(); ... }
/// let reasons = runner.join()                         // [.halted]; the UART holds the lines
/// ```
///
/// Without an in-kernel irqchip (the default) the probe's final HLT exits to user space and
/// stops the runner; with `.full` or `.split`, KVM keeps a halted vCPU in the kernel, so the
/// caller stops the runner itself once the expected output has arrived.
///
/// Runs each vCPU on its own thread, sending port and MMIO exits to a `VCPUExitHandler`, until
/// the guest halts (when `stopOnHalt`), shuts down or resets (unless `onResetRequest` takes
/// those), fails, or `requestStop()` is called.
///
/// When one vCPU stops, the runner stops the others (the machine stops as a whole). Stopping
/// kicks each thread: it sets kvm_run.immediate_exit and sends `Signals.kick` (SIGUSR1, with a
/// no-op handler installed by `start()`), so a vCPU inside KVM_RUN returns with EINTR and one
/// about to enter it returns at once.
public final class VCPURunner: Sendable {
    public struct Options: Sendable {
        /// Stop at a HLT exit. HLT exits only without an in-kernel LAPIC; when false, HLT is
        /// treated as a no-op and the vCPU re-enters the guest.
        public var stopOnHalt: Bool
        /// The signal that kicks a vCPU thread out of KVM_RUN.
        public var kickSignal: Int32
        /// Writes KVM coalesced instead of exiting: replayed before every exit is handled, and
        /// at least every `coalescedFlushMilliseconds` by a flusher thread, so a write that no
        /// exit follows (a reset request at 0xCF9, next to CONFIG_ADDRESS) still takes effect.
        public var coalescedWrites: CoalescedWriteRing?
        public var coalescedFlushMilliseconds: Int
        /// Called (on the vCPU's thread) when a vCPU asks for a platform reset itself: a triple
        /// fault (KVM_EXIT_SHUTDOWN) or a reset system event. The vCPU then stays out of the
        /// guest (`holdForReset`) until `resetCompleted()`. Nil: such an exit ends the vCPU's thread.
        public var onResetRequest: (@Sendable () -> Void)?
        /// Called (on the vCPU's thread) with the vector of a KVM_EXIT_IOAPIC_EOI: under a split
        /// irqchip the userspace IOAPIC takes the EOI. Nil: such an exit ends the vCPU's thread.
        public var onIOAPICEOI: (@Sendable (UInt8) -> Void)?

        public init(stopOnHalt: Bool = true, kickSignal: Int32 = Signals.kick,
                    coalescedWrites: CoalescedWriteRing? = nil, coalescedFlushMilliseconds: Int = 5,
                    onResetRequest: (@Sendable () -> Void)? = nil,
                    onIOAPICEOI: (@Sendable (UInt8) -> Void)? = nil) {
            self.onIOAPICEOI = onIOAPICEOI
            self.stopOnHalt = stopOnHalt
            self.kickSignal = kickSignal
            self.coalescedWrites = coalescedWrites
            self.coalescedFlushMilliseconds = coalescedFlushMilliseconds
            self.onResetRequest = onResetRequest
        }
    }

    /// Exits that reached user space, by kind, over every vCPU.
    public struct ExitCounts: Hashable, Sendable {
        public var portIO: UInt64 = 0
        public var mmio: UInt64 = 0
        public var other: UInt64 = 0
        public var total: UInt64 { portIO + mmio + other }
    }

    /// Why a vCPU's thread ended.
    public enum StopReason: Hashable, Sendable {
        case halted
        case shutdown
        case systemEvent(SystemEvent)
        case stopRequested
        case internalError(suberror: UInt32, data: [UInt64])
        case failEntry(hardwareReason: UInt64, cpu: UInt32)
        case unknownExit(hardwareReason: UInt64)
        /// An exit reason the runner does not handle.
        case unhandledExit(reason: UInt32)
        /// kvm_run held values that failed the bounds checks.
        case malformedExit(KVMExitError)
        /// KVM_RUN itself failed.
        case runFailed(SystemError)
    }

    public let vcpus: [KVMVCPU]
    public let options: Options
    private let handler: any VCPUExitHandler

    private struct State: ~Copyable {
        var threads: [HostThread] = []
        var flusher: HostThread?
        var reasons: [StopReason?]
        var started = false
    }
    private let state: Mutex<State>
    private let stopRequested = Atomic<Bool>(false)
    /// While set, vCPU threads stay out of KVM_RUN (QMP `stop`); `parkedThreads` counts those
    /// that have noticed.
    private let pauseRequested = Atomic<Bool>(false)
    private let parkedThreads = Atomic<Int>(0)
    /// While set, vCPU threads stay out of KVM_RUN until a reset is done (`holdForReset`),
    /// apart from a QMP pause, which the reset leaves as it found it.
    private let resetHold = Atomic<Bool>(false)
    private let portExits = Atomic<UInt64>(0)
    private let mmioExits = Atomic<UInt64>(0)
    private let otherExits = Atomic<UInt64>(0)

    public var exitCounts: ExitCounts {
        ExitCounts(portIO: portExits.load(ordering: .relaxed), mmio: mmioExits.load(ordering: .relaxed),
                   other: otherExits.load(ordering: .relaxed))
    }
    /// Signalled by each thread as it ends; `waitUntilFinished` sleeps on it.
    private let finishedEvent: EventFD
    private let finishedPoll: Epoll

    public init(vcpus: [KVMVCPU], handler: any VCPUExitHandler, options: Options = .init()) throws(SystemError) {
        self.vcpus = vcpus
        self.handler = handler
        self.options = options
        self.state = Mutex(State(reasons: Array(repeating: nil, count: vcpus.count)))
        let event = try EventFD()
        let poll = try Epoll()
        try poll.add(event.rawValue, events: .readable, data: 0)
        self.finishedEvent = event
        self.finishedPoll = poll
    }

    /// Starts one thread per vCPU. Call once.
    public func start() throws(SystemError) {
        try Signals.installNoOpHandler(for: options.kickSignal)
        try state.withLock { (state) throws(SystemError) in
            precondition(!state.started, "VCPURunner.start() called twice")
            state.started = true
            for index in vcpus.indices {
                let thread = try HostThread(kind: .vcpu, name: "switchyard-vcpu\(index)") { [self] in self.threadMain(index) }
                state.threads.append(thread)
            }
            if let ring = options.coalescedWrites {
                state.flusher = try HostThread(kind: .io, name: "switchyard-flush") { [self] in self.flushCoalescedWrites(ring) }
            }
        }
    }

    /// Asks every vCPU to stop and kicks it out of KVM_RUN. Returns at once; `join()` waits.
    public func requestStop() {
        stopRequested.store(true, ordering: .sequentiallyConsistent)
        for index in vcpus.indices { kick(index) }
    }

    public var isStopRequested: Bool { stopRequested.load(ordering: .sequentiallyConsistent) }

    /// Takes every vCPU out of KVM_RUN and keeps it out until `resume()`, as QEMU's `stop`
    /// does; returns once every running vCPU thread is parked (true), or false when that took
    /// longer than the timeout. Device state may then be inspected or changed without a vCPU
    /// racing it.
    @discardableResult
    public func pause(timeoutMilliseconds: Int = 2000) -> Bool {
        pauseRequested.store(true, ordering: .sequentiallyConsistent)
        for index in vcpus.indices { kick(index) }
        let deadline = HostClock.monotonicNanoseconds() + UInt64(max(timeoutMilliseconds, 0)) * 1_000_000
        while true {
            let running = state.withLock { s in s.started ? s.reasons.filter { $0 == nil }.count : 0 }
            if parkedThreads.load(ordering: .sequentiallyConsistent) >= running { return true }
            if HostClock.monotonicNanoseconds() >= deadline { return false }
            HostClock.sleep(milliseconds: 1)
        }
    }

    /// Lets paused vCPUs run again.
    public func resume() {
        pauseRequested.store(false, ordering: .sequentiallyConsistent)
    }

    public var isPaused: Bool { pauseRequested.load(ordering: .sequentiallyConsistent) }

    /// Parks the calling vCPU thread while a pause or a reset hold is requested (polled every
    /// 2 ms: resuming is rare and a few milliseconds late is fine; a stop request ends the wait).
    private func parkWhilePaused() {
        guard isPaused || isHeldForReset else { return }
        parkedThreads.add(1, ordering: .sequentiallyConsistent)
        while (isPaused || isHeldForReset) && !isStopRequested { HostClock.sleep(milliseconds: 2) }
        parkedThreads.subtract(1, ordering: .sequentiallyConsistent)
    }

    /// Takes every vCPU out of the guest at once, without waiting, until `resetCompleted()`:
    /// what a reset request does on the spot (as QEMU stops the current vCPU), so the guest
    /// runs no further (Linux would go on to other ways of resetting, a triple fault last).
    public func holdForReset() {
        resetHold.store(true, ordering: .sequentiallyConsistent)
        for index in vcpus.indices { kick(index) }
    }

    public var isHeldForReset: Bool { resetHold.load(ordering: .sequentiallyConsistent) }

    /// Ends `holdForReset`: the vCPUs run again, once their state is reset (unless paused).
    public func resetCompleted() {
        resetHold.store(false, ordering: .sequentiallyConsistent)
    }

    /// Makes vCPU `index` leave KVM_RUN (it re-enters unless a stop was requested).
    public func kick(_ index: Int) {
        vcpus[index].requestImmediateExit(true)
        let thread = state.withLock { $0.threads.indices.contains(index) ? $0.threads[index] : nil }
        _ = try? thread?.signal(options.kickSignal)
    }

    /// Waits until every vCPU thread has ended or `timeoutMilliseconds` pass (-1: forever).
    /// Returns true when all have ended.
    public func waitUntilFinished(timeoutMilliseconds: Int) -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .milliseconds(timeoutMilliseconds))
        while true {
            if allFinished { return true }
            var wait: Int32 = -1
            if timeoutMilliseconds >= 0 {
                let remaining = clock.now.duration(to: deadline)
                if remaining <= .zero { return allFinished }
                let (seconds, attoseconds) = remaining.components
                wait = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
            }
            _ = try? finishedPoll.wait(maxEvents: 1, timeoutMilliseconds: wait)
            _ = try? finishedEvent.consume()
        }
    }

    private var allFinished: Bool {
        state.withLock { $0.started && $0.reasons.allSatisfy { $0 != nil } }
    }

    /// Joins every vCPU thread and returns why each ended (in vCPU order). Call after
    /// `requestStop()` or once the guest has stopped; it blocks until the threads end.
    public func join() -> [StopReason] {
        let (threads, flusher) = state.withLock { ($0.threads, $0.flusher) }
        for thread in threads { thread.join() }
        stopRequested.store(true, ordering: .sequentiallyConsistent)  // ends the flusher
        flusher?.join()
        options.coalescedWrites?.replay(into: handler)
        return state.withLock { $0.reasons.map { $0 ?? .stopRequested } }
    }

    // MARK: The vCPU thread

    private func threadMain(_ index: Int) {
        let vcpu = vcpus[index]
        var reason: StopReason
        do throws(SystemError) {
            try Signals.unblockInCurrentThread(options.kickSignal)
            reason = runLoop(vcpu)
        } catch {
            reason = .runFailed(error)
        }
        state.withLock { $0.reasons[index] = reason }
        if reason != .stopRequested { requestStop() }
        _ = try? finishedEvent.signal()
    }

    private func flushCoalescedWrites(_ ring: CoalescedWriteRing) {
        while !isStopRequested {
            ring.replay(into: handler)
            HostClock.sleep(milliseconds: options.coalescedFlushMilliseconds)
        }
    }

    private func runLoop(_ vcpu: KVMVCPU) -> StopReason {
        let area = vcpu.runArea
        let ring = options.coalescedWrites
        while true {
            if isStopRequested { return .stopRequested }
            parkWhilePaused()
            if isStopRequested { return .stopRequested }
            let exit: VCPUExit
            do throws(SystemError) {
                exit = try vcpu.run()
            } catch {
                return .runFailed(error)
            }
            // Writes KVM coalesced happened before this exit: they go first.
            ring?.replay(into: handler)
            switch exit {
            case .portIO:
                portExits.add(1, ordering: .relaxed)
                area.complete(exit, with: handler)
            case .mmio:
                mmioExits.add(1, ordering: .relaxed)
                area.complete(exit, with: handler)
            case .interrupted:
                // A kick: clear immediate_exit, then look at the stop flag at the loop's top
                // (the kicker sets the flag before immediate_exit, so no stop is missed).
                vcpu.requestImmediateExit(false)
            case .halt:
                otherExits.add(1, ordering: .relaxed)
                if options.stopOnHalt { return .halted }
            case .shutdown:
                otherExits.add(1, ordering: .relaxed)
                guard let request = options.onResetRequest else { return .shutdown }
                // Re-entering a vCPU that triple-faulted would only fault again.
                holdForReset()
                request()
            case .systemEvent(let event) where event.kind == .reset:
                otherExits.add(1, ordering: .relaxed)
                guard let request = options.onResetRequest else { return .systemEvent(event) }
                holdForReset()
                request()
            case .ioapicEOI(let vector):
                otherExits.add(1, ordering: .relaxed)
                guard let endOfInterrupt = options.onIOAPICEOI else { return .unhandledExit(reason: UInt32(KVM_EXIT_IOAPIC_EOI)) }
                endOfInterrupt(vector)
            case .systemEvent(let event): return .systemEvent(event)
            case .internalError(let suberror, let data): return .internalError(suberror: suberror, data: data)
            case .failEntry(let reason, let cpu): return .failEntry(hardwareReason: reason, cpu: cpu)
            case .unknown(let reason): return .unknownExit(hardwareReason: reason)
            case .other(let reason): return .unhandledExit(reason: reason)
            case .malformed(let error):
                GuestErrorLog.report(device: "vcpu", kind: "malformed-exit", "stopping on a malformed exit: \(error)")
                return .malformedExit(error)
            }
        }
    }
}
