import Synchronization
import VMMBase

/// A device's interrupt-line changes, handed to the sink in the order the device made them.
///
/// A device computes its line changes under its own lock and delivers them after releasing it
/// (the sink may be slow, or reach other locks). Two threads doing that can pass each other
/// between the two steps: one computes "lower", the other "raise", and the raise arrives
/// first. On an edge-triggered input (the ISA lines: COM1, the keyboard, the RTC, the SCI when
/// edge-programmed) the raise is then lost, the guest waits for an interrupt that already came.
///
/// So the device enqueues its changes while it still holds its lock (the queue's order is the
/// order of the changes) and calls `deliver()` after releasing it. One thread at a time
/// delivers; a thread that finds another delivering leaves its changes to it, so delivery never
/// waits on the device and a sink that calls back into the device cannot deadlock.
public final class OrderedLineChanges: Sendable {
    private struct Queue {
        var pending: [(GSI, Bool)] = []
        var delivering = false
    }
    private let queue = Mutex(Queue())
    private let sink: any InterruptSink

    public init(sink: any InterruptSink) { self.sink = sink }

    /// Records a change. Call it with the device's lock held.
    public func enqueue(_ gsi: GSI, high: Bool) {
        queue.withLock { $0.pending.append((gsi, high)) }
    }

    /// Records changes in order. Call it with the device's lock held.
    public func enqueue(_ changes: [(GSI, Bool)]) {
        guard !changes.isEmpty else { return }
        queue.withLock { $0.pending += changes }
    }

    /// Hands the sink every recorded change, oldest first. Call it after releasing the device's
    /// lock. Returns at once when another thread is delivering: that thread takes these too.
    public func deliver() {
        var batch = queue.withLock { q -> [(GSI, Bool)] in
            guard !q.delivering, !q.pending.isEmpty else { return [] }
            q.delivering = true
            defer { q.pending.removeAll(keepingCapacity: true) }
            return q.pending
        }
        while !batch.isEmpty {
            for (gsi, high) in batch { sink.setLevel(gsi, high: high) }
            // Changes enqueued meanwhile are ours to deliver; stop only on an empty queue, in the
            // same critical section that clears the flag, so none is left behind.
            batch = queue.withLock { q -> [(GSI, Bool)] in
                guard !q.pending.isEmpty else {
                    q.delivering = false
                    return []
                }
                defer { q.pending.removeAll(keepingCapacity: true) }
                return q.pending
            }
        }
    }
}

/// What a line source's update under its lock returns: its other effects, and the line changes
/// to hand on in order.
public protocol LineChangingEffects {
    /// (line, level) in the order the device made them.
    var lineChanges: [(GSI, Bool)] { get }
}

/// A line source's state behind its lock, with the one rule for its interrupt lines: changes an
/// update makes are queued while the lock is held and delivered, in order, after it is released
/// (see `OrderedLineChanges`). The UART, the keyboard controller, the RTC and PM's SCI use it.
public final class LineSourceState<State: Sendable>: Sendable {
    private let state: Mutex<State>
    private let lines: OrderedLineChanges

    public init(_ initial: State, sink: any InterruptSink) {
        state = Mutex(initial)
        lines = OrderedLineChanges(sink: sink)
    }

    /// Runs `body` under the lock; its line changes reach the sink after the lock is released
    /// and before this returns. The caller applies the other effects.
    @discardableResult
    public func update<Effects: LineChangingEffects>(_ body: (inout State) -> Effects) -> Effects {
        let effects = state.withLock { s in
            let effects = body(&s)
            lines.enqueue(effects.lineChanges)
            return effects
        }
        lines.deliver()
        return effects
    }

    /// Runs `body` under the lock, for reads and changes that move no line.
    public func withLock<R>(_ body: (inout State) -> R) -> R {
        state.withLock { body(&$0) }
    }
}
