import Synchronization

/// Something a legacy device asks of the whole machine: values, delivered after the device
/// released its lock. The machine decides what to do (reset the platform, stop).
public enum PlatformEvent: Sendable, Hashable {
    case resetRequested(ResetSource)
    /// The guest entered S5 (PM1_CNT.SLP_EN with SLP_TYP = S5).
    case powerOffRequested
}

/// Which register asked for a reset.
public enum ResetSource: Sendable, Hashable {
    /// i8042 command 0xFE (or any 0xF0-0xFE pulse with bit 0 clear), or a write of the
    /// output port with bit 0 (system reset line) clear.
    case keyboardController
    /// RST_CNT (0xCF9) with RST_CPU (bit 2); `full` is SYS_RST (bit 1): a hard reset
    /// rather than a CPU-only (soft) one.
    case resetControl(full: Bool)
    /// A processor shut down (a triple fault), which the chipset turns into a platform reset.
    case processorShutdown
}

/// Where devices send `PlatformEvent`s. Called with no device lock held.
public protocol PlatformEventSink: AnyObject, Sendable {
    func platformEvent(_ event: PlatformEvent)
}

/// A sink that remembers events: for tests and for a machine with no run loop.
public final class PlatformEventLog: PlatformEventSink {
    private let log = Mutex<[PlatformEvent]>([])
    public init() {}
    public func platformEvent(_ event: PlatformEvent) { log.withLock { $0.append(event) } }
    public var events: [PlatformEvent] { log.withLock { $0 } }
    /// Events since the last call.
    public func takeEvents() -> [PlatformEvent] { log.withLock { l in defer { l.removeAll() }; return l } }
}

/// Time as devices see it. The machine hands in the host's clocks; tests a `ManualClock`.
public protocol PlatformClock: Sendable {
    /// Nanoseconds from an arbitrary origin; never decreases (PM timer, UART timeouts, RTC
    /// update cycle).
    func monotonicNanoseconds() -> UInt64
    /// Wall-clock time in nanoseconds since 1970-01-01 00:00 UTC (the RTC's starting time).
    func wallClockNanoseconds() -> Int64
}

/// A clock that moves only when told to.
public final class ManualClock: PlatformClock {
    private struct Now { var monotonic: UInt64; var wall: Int64 }
    private let now: Mutex<Now>

    /// `wall` in nanoseconds since the Unix epoch.
    public init(monotonic: UInt64 = 0, wall: Int64 = 0) { now = Mutex(Now(monotonic: monotonic, wall: wall)) }

    /// Sets the wall clock from seconds since the Unix epoch.
    public convenience init(unixSeconds: Int64, monotonic: UInt64 = 0) {
        self.init(monotonic: monotonic, wall: unixSeconds * 1_000_000_000)
    }

    public func monotonicNanoseconds() -> UInt64 { now.withLock { $0.monotonic } }
    public func wallClockNanoseconds() -> Int64 { now.withLock { $0.wall } }

    /// Moves both clocks forward.
    public func advance(nanoseconds: UInt64) {
        now.withLock {
            $0.monotonic &+= nanoseconds
            $0.wall &+= Int64(clamping: nanoseconds)
        }
    }
}
