import Chipset
import Foundation
import Interrupts
import Synchronization
import Testing
import VMMBase

/// A sink that checks what a wire would: a line rises only when low and falls only when high.
/// A raise that arrives while the sink thinks the line is already high is an edge the IOAPIC
/// never sees (for an edge-triggered ISA input, an interrupt the guest waits for forever).
final class EdgeCheckingSink: InterruptSink {
    struct Counts { var levels: [GSI: Bool] = [:]; var raises = 0; var raisesWhileHigh = 0; var lowersWhileLow = 0 }
    let counts = Mutex(Counts())
    /// Called after each change is counted, outside the lock (a sink that calls back).
    let onLevel: @Sendable (GSI, Bool) -> Void

    init(onLevel: @escaping @Sendable (GSI, Bool) -> Void = { _, _ in }) { self.onLevel = onLevel }

    func setLevel(_ gsi: GSI, high: Bool) {
        counts.withLock { c in
            let was = c.levels[gsi, default: false]
            if high { c.raises += 1; if was { c.raisesWhileHigh += 1 } } else if !was { c.lowersWhileLow += 1 }
            c.levels[gsi] = high
        }
        onLevel(gsi, high)
    }
    func signal(_ message: MSIMessage) {}
    var snapshot: Counts { counts.withLock { $0 } }
}

/// Threads that wait for each other before they start their work.
private final class StartLine: Sendable {
    private let arrived = Atomic<Int>(0)
    private let runners: Int
    init(runners: Int) { self.runners = runners }
    func wait() {
        arrived.add(1, ordering: .sequentiallyConsistent)
        while arrived.load(ordering: .sequentiallyConsistent) < runners {}
    }
}

/// Runs `bodies` on threads of their own, started together (a short body cannot finish before
/// the others begin), and waits for all.
private func concurrently(_ bodies: [@Sendable () -> Void]) {
    let start = StartLine(runners: bodies.count)
    let group = DispatchGroup()
    for body in bodies {
        group.enter()
        Thread {
            start.wait()
            body()
            group.leave()
        }.start()
    }
    group.wait()
}

@Suite struct InterruptOrderTests {
    /// Two vCPUs on COM1: one transmits (each THR write lowers and raises IRQ 4: the byte goes
    /// out at once and THR is empty again), the other reads IIR (which clears a pending THRE,
    /// lowering it). Linux's 8250 driver does exactly this from two CPUs once it prints from both.
    @Test func theUARTsEdgesReachTheSinkInTheOrderTheyHappened() {
        let sink = EdgeCheckingSink()
        let uart = UART16550(interrupts: sink, backend: NullSerialBackend(), clock: ManualClock())
        uart.write(offset: 1, width: .byte, value: UInt64(UART16550.IER.thrEmpty))
        let rounds = 100_000
        concurrently([
            { for _ in 0..<rounds { uart.write(offset: 0, width: .byte, value: 0x41) } },
            { for _ in 0..<rounds { _ = uart.read(offset: 2, width: .byte) } },
        ])
        let counts = sink.snapshot
        #expect(counts.raises > 1000, "the two threads did not interleave enough to test anything")
        #expect(counts.raisesWhileHigh == 0, "raises that were no edge at the sink")
        #expect(counts.lowersWhileLow == 0, "lowers that were no edge at the sink")
        #expect(counts.levels[UART16550.com1GSI, default: false] == uart.interruptAsserted,
                "the sink ends where the UART's line is")
    }

    /// Changes queued in one order from many threads (under a lock standing in for a device's)
    /// arrive in that order, and none is lost.
    @Test func changesArriveInTheOrderTheyWereQueued() {
        let received = Mutex<[Int]>([])
        let sink = EdgeCheckingSink { gsi, _ in received.withLock { $0.append(Int(gsi.number)) } }
        let lines = OrderedLineChanges(sink: sink)
        let device = Mutex(0)
        let perThread = 20_000
        let work: @Sendable () -> Void = {
            for _ in 0..<perThread {
                device.withLock { n in
                    n += 1
                    lines.enqueue(GSI(UInt32(n)), high: n % 2 == 1)
                }
                lines.deliver()
            }
        }
        concurrently([work, work])
        let order = received.withLock { $0 }
        #expect(order.count == 2 * perThread)
        #expect(order == Array(1...(2 * perThread)))
    }

    /// A sink that calls back into the device (which queues and delivers again) neither
    /// deadlocks nor reorders: the inner change is delivered after the outer one returns.
    @Test func aSinkThatCallsBackIsServedInOrder() {
        let order = Mutex<[String]>([])
        let linesBox = Mutex<OrderedLineChanges?>(nil)
        let sink = EdgeCheckingSink { gsi, high in
            order.withLock { $0.append("\(gsi.number)\(high ? "+" : "-")") }
            guard gsi == GSI(4), high, let lines = linesBox.withLock({ $0 }) else { return }
            lines.enqueue(GSI(4), high: false)
            lines.deliver()
            order.withLock { $0.append("callback returned") }
        }
        let lines = OrderedLineChanges(sink: sink)
        linesBox.withLock { $0 = lines }
        lines.enqueue(GSI(4), high: true)
        lines.deliver()
        #expect(order.withLock { $0 } == ["4+", "callback returned", "4-"])
        linesBox.withLock { $0 = nil }
    }
}
