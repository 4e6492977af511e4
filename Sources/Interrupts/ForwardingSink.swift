import Synchronization
import VMMBase

/// An interrupt sink that passes everything to a replaceable downstream sink: the machine hands
/// this one to its devices and later attaches KVM's irqchip (or a test's recorder) behind it.
///
/// Replacing the downstream does not replay line levels: attach before the lines can be high
/// (before the guest runs, or right after a reset).
public final class ForwardingSink: InterruptSink {
    private let target: Mutex<any InterruptSink>

    public init(_ downstream: any InterruptSink) { target = Mutex(downstream) }

    /// The sink interrupts currently go to.
    public var downstream: any InterruptSink { target.withLock { $0 } }

    /// Sends everything from now on to `sink`; returns the previous downstream.
    @discardableResult
    public func attach(_ sink: any InterruptSink) -> any InterruptSink {
        target.withLock { current in
            let previous = current
            current = sink
            return previous
        }
    }

    public func setLevel(_ gsi: GSI, high: Bool) { downstream.setLevel(gsi, high: high) }
    public func signal(_ message: MSIMessage) { downstream.signal(message) }
}
