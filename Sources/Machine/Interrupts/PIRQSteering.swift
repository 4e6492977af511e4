import Chipset
import Interrupts
import Synchronization
import VMMBase

/// The ICH9's PIRQ steering into the 8259s, in front of an irqchip that has both PICs and the
/// IOAPIC (KVM's): a PIRQ link's level (GSI 16-23) goes to its IOAPIC pin as it is, and also to
/// the ISA IRQ its PIRQx_ROUT register selects, OR-ed with the other links steered there and
/// with the ISA device wired to that IRQ. A guest in PIC mode (no ACPI, no MP table) gets its
/// PCI INTx interrupts this way, on the IRQ firmware wrote into Interrupt Line.
///
/// A route the guest changes while a link is asserted moves the link's level at once
/// (`routesChanged()`, which the machine calls after a PIRQx_ROUT write), so the old IRQ is not
/// left high. (QEMU re-evaluates only at the link's next level change.)
public final class PIRQSteeringSink: InterruptSink {
    private let downstream: any InterruptSink
    /// The ISA IRQ a link is steered to now, or nil (routing disabled).
    private let route: @Sendable (PIRQ) -> UInt8?

    private struct State {
        var links: [PIRQ: Bool] = [:]
        /// Where each asserted link was steered when it was asserted.
        var steered: [PIRQ: UInt8] = [:]
        var isaDevices: [UInt8: Bool] = [:]
        /// What the ISA IRQ lines carry now.
        var output: [UInt8: Bool] = [:]
    }
    private let state = Mutex(State())

    public init(downstream: any InterruptSink, route: @escaping @Sendable (PIRQ) -> UInt8?) {
        self.downstream = downstream
        self.route = route
    }

    /// Steering as `lpc`'s PIRQA-H routing registers say.
    public convenience init(downstream: any InterruptSink, lpc: ICH9LPC) {
        self.init(downstream: downstream, route: { lpc.pirqRoute($0) })
    }

    /// The IRQs the 8259s can take from a link (ICH9 reserves 0-2, 8 and 13).
    static func steerable(_ irq: UInt8) -> Bool { irq < 16 && ![0, 1, 2, 8, 13].contains(irq) }

    public func setLevel(_ gsi: GSI, high: Bool) {
        var changes: [(UInt8, Bool)] = []
        if gsi.number >= 16, gsi.number < 24, let link = PIRQ(rawValue: Int(gsi.number) - 16) {
            downstream.setLevel(gsi, high: high)
            let target = route(link).flatMap { Self.steerable($0) ? $0 : nil }
            changes = state.withLock { s in
                var touched: Set<UInt8> = []
                if let old = s.steered[link] { touched.insert(old) }
                s.links[link] = high
                s.steered[link] = high ? target : nil
                if let target { touched.insert(target) }
                return Self.recompute(&s, touched)
            }
        } else if gsi.number < 16 {
            let irq = UInt8(gsi.number)
            changes = state.withLock { s in
                s.isaDevices[irq] = high
                return Self.recompute(&s, [irq])
            }
        } else {
            downstream.setLevel(gsi, high: high)
        }
        for (irq, level) in changes { downstream.setLevel(GSI(UInt32(irq)), high: level) }
    }

    public func signal(_ message: MSIMessage) { downstream.signal(message) }

    /// The guest rewrote PIRQx_ROUT: every asserted link is steered where its route says now.
    public func routesChanged() {
        let targets = Dictionary(uniqueKeysWithValues: PIRQ.allCases.map { link in
            (link, route(link).flatMap { Self.steerable($0) ? $0 : nil })
        })
        let changes = state.withLock { s -> [(UInt8, Bool)] in
            var touched: Set<UInt8> = []
            for (link, high) in s.links where high && s.steered[link] != targets[link] ?? nil {
                if let old = s.steered[link] { touched.insert(old) }
                s.steered[link] = targets[link] ?? nil
                if let new = targets[link] ?? nil { touched.insert(new) }
            }
            return Self.recompute(&s, touched)
        }
        for (irq, level) in changes { downstream.setLevel(GSI(UInt32(irq)), high: level) }
    }

    private static func recompute(_ s: inout State, _ irqs: Set<UInt8>) -> [(UInt8, Bool)] {
        var changes: [(UInt8, Bool)] = []
        for irq in irqs.sorted() {
            let level = s.isaDevices[irq, default: false] || s.steered.contains { $0.value == irq && s.links[$0.key] == true }
            if s.output[irq, default: false] != level {
                s.output[irq] = level
                changes.append((irq, level))
            }
        }
        return changes
    }
}
