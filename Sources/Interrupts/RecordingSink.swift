import Synchronization
import VMMBase

/// An interrupt sink that remembers line levels and the MSIs it received: what the no-vCPU
/// harness and the qtest server use in place of an irqchip.
public final class RecordingSink: InterruptSink {
    public enum Event: Hashable, Sendable {
        case level(GSI, high: Bool)
        case msi(MSIMessage)
    }

    private struct State {
        var levels: [GSI: Bool] = [:]
        var events: [Event] = []
    }
    private let state = Mutex(State())
    private let observers = Mutex<[Int: @Sendable (Event) -> Void]>([:])
    private let nextToken = Mutex(0)

    public init(observer: (@Sendable (Event) -> Void)? = nil) {
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
            s.events.append(.level(gsi, high: high))
            return true
        }
        if changed { notify(.level(gsi, high: high)) }
    }

    public func signal(_ message: MSIMessage) {
        state.withLock { $0.events.append(.msi(message)) }
        notify(.msi(message))
    }

    public func isHigh(_ gsi: GSI) -> Bool { state.withLock { $0.levels[gsi, default: false] } }
    public var events: [Event] { state.withLock { $0.events } }
    public func clearEvents() { state.withLock { $0.events.removeAll() } }
}
