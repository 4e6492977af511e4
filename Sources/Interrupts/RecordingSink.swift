import Synchronization
import VMMBase

/// An interrupt sink that remembers line levels and the MSIs it received: what the no-vCPU
/// harness and the qtest server use in place of an irqchip. Levels are state and kept; the
/// event history is a window of the most recent `historyLimit` events, so a machine that runs
/// for days under qtest does not grow with every interrupt (observers see every event live).
public final class RecordingSink: InterruptSink {
    public enum Event: Hashable, Sendable {
        case level(GSI, high: Bool)
        case msi(MSIMessage)
    }

    private struct State {
        var levels: [GSI: Bool] = [:]
        /// A ring: `events[next]` is the oldest once it has wrapped.
        var events: [Event] = []
        var next = 0
        var dropped = 0

        mutating func record(_ event: Event, limit: Int) {
            if events.count < limit {
                events.append(event)
            } else {
                events[next] = event
                next = (next + 1) % limit
                dropped += 1
            }
        }

        var ordered: [Event] { Array(events[next...] + events[..<next]) }
    }
    private let state = Mutex(State())
    /// How many of the newest events `events` keeps.
    public let historyLimit: Int
    private let observers = Mutex<[Int: @Sendable (Event) -> Void]>([:])
    private let nextToken = Mutex(0)

    public init(historyLimit: Int = 4096, observer: (@Sendable (Event) -> Void)? = nil) {
        self.historyLimit = max(1, historyLimit)
        if let observer { _ = addObserver(observer) }
    }

    /// Calls `observer` for every level change and MSI from now on (the qtest server's
    /// irq_intercept uses this). Returns a token for `removeObserver`.
    public func addObserver(_ observer: @escaping @Sendable (Event) -> Void) -> Int {
        let token = nextToken.withLock { $0 += 1; return $0 }
        observers.withLock { $0[token] = observer }
        return token
    }

    public func removeObserver(_ token: Int) { _ = observers.withLock { $0.removeValue(forKey: token) } }

    private func notify(_ event: Event) {
        for observer in observers.withLock({ Array($0.values) }) { observer(event) }
    }

    public func setLevel(_ gsi: GSI, high: Bool) {
        let changed = state.withLock { s -> Bool in
            guard s.levels[gsi, default: false] != high else { return false }
            s.levels[gsi] = high
            s.record(.level(gsi, high: high), limit: historyLimit)
            return true
        }
        if changed { notify(.level(gsi, high: high)) }
    }

    public func signal(_ message: MSIMessage) {
        state.withLock { $0.record(.msi(message), limit: historyLimit) }
        notify(.msi(message))
    }

    public func isHigh(_ gsi: GSI) -> Bool { state.withLock { $0.levels[gsi, default: false] } }
    /// The newest events, oldest first (at most `historyLimit`).
    public var events: [Event] { state.withLock { $0.ordered } }
    /// Events that fell out of the history window.
    public var droppedEvents: Int { state.withLock { $0.dropped } }
    public func clearEvents() {
        state.withLock {
            $0.events.removeAll()
            $0.next = 0
        }
    }
}
