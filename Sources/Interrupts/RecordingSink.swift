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
    private let observer: (@Sendable (Event) -> Void)?

    public init(observer: (@Sendable (Event) -> Void)? = nil) { self.observer = observer }

    public func setLevel(_ gsi: GSI, high: Bool) {
        let changed = state.withLock { s -> Bool in
            guard s.levels[gsi, default: false] != high else { return false }
            s.levels[gsi] = high
            s.events.append(.level(gsi, high: high))
            return true
        }
        if changed { observer?(.level(gsi, high: high)) }
    }

    public func signal(_ message: MSIMessage) {
        state.withLock { $0.events.append(.msi(message)) }
        observer?(.msi(message))
    }

    public func isHigh(_ gsi: GSI) -> Bool { state.withLock { $0.levels[gsi, default: false] } }
    public var events: [Event] { state.withLock { $0.events } }
    public func clearEvents() { state.withLock { $0.events.removeAll() } }
}
