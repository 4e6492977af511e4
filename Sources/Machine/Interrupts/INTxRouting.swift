import Interrupts
import PCI
import Synchronization
import VMMBase

/// Shared level-triggered lines: a GSI is high while any source routed to it asserts. Each
/// source has one route (its GSI, or none) and one level; moving a source's route while it
/// asserts lowers the old GSI (unless another source holds it) and raises the new one, so no
/// line is left stuck high when the guest rewrites interrupt routing.
final class SharedLines: Sendable {
    private struct Source {
        var gsi: GSI?
        var asserted = false
    }
    private struct State {
        var sources: [ObjectIdentifier: Source] = [:]
        var holders: [GSI: Set<ObjectIdentifier>] = [:]

        /// Applies `change` to `source` and returns the GSIs whose level changed, in order. A
        /// source not registered (or removed: an unplugged function's late INTx) changes nothing.
        mutating func update(_ source: ObjectIdentifier, _ change: (inout Source) -> Void) -> [(GSI, Bool)] {
            guard let old = sources[source] else { return [] }
            var new = old
            change(&new)
            sources[source] = new
            var edges: [(GSI, Bool)] = []
            if old.asserted, let gsi = old.gsi, !(new.asserted && new.gsi == gsi) {
                holders[gsi]?.remove(source)
                if holders[gsi]?.isEmpty == true {
                    holders[gsi] = nil
                    edges.append((gsi, false))
                }
            }
            if new.asserted, let gsi = new.gsi, !(old.asserted && old.gsi == gsi) {
                if holders[gsi] == nil { edges.append((gsi, true)) }
                holders[gsi, default: []].insert(source)
            }
            return edges
        }
    }
    private let state = Mutex(State())
    private let sink: any InterruptSink

    init(sink: any InterruptSink) { self.sink = sink }

    /// Adds `source`, routed to `gsi` (nil: not routed) and not asserting.
    func register(_ source: ObjectIdentifier, routedTo gsi: GSI?) {
        state.withLock { $0.sources[source] = Source(gsi: gsi) }
    }

    /// Sets the level `source` drives on its route.
    func set(_ source: ObjectIdentifier, asserted on: Bool) {
        deliver(state.withLock { $0.update(source) { $0.asserted = on } })
    }

    /// Moves `source` to `gsi` (nil: not routed), carrying its level along.
    func route(_ source: ObjectIdentifier, to gsi: GSI?) {
        deliver(state.withLock { $0.update(source) { $0.gsi = gsi } })
    }

    /// Forgets `source`, lowering what it held.
    func remove(_ source: ObjectIdentifier) {
        deliver(state.withLock { s in
            let edges = s.update(source) { $0.asserted = false }
            s.sources[source] = nil
            return edges
        })
    }

    /// The GSI `source` is routed to now.
    func gsi(of source: ObjectIdentifier) -> GSI? { state.withLock { $0.sources[source]?.gsi } }

    /// The level each GSI was last given at the sink.
    private let delivered = Mutex<[GSI: Bool]>([:])

    /// Hands the sink the GSIs whose level changed, outside the state lock. Two threads may
    /// compute opposite edges of one GSI and reach here in the other order, so deliveries are
    /// serialized and each gives the GSI's level as it is now, not the edge it computed: the
    /// sink always ends at the lines' level. The sink (KVM, the IOAPIC, a recorder) never calls
    /// back into the lines.
    private func deliver(_ edges: [(GSI, Bool)]) {
        guard !edges.isEmpty else { return }
        delivered.withLock { delivered in
            var seen: Set<GSI> = []
            for (gsi, _) in edges where seen.insert(gsi).inserted {
                let high = state.withLock { $0.holders[gsi] != nil }
                guard delivered[gsi, default: false] != high else { continue }
                delivered[gsi] = high
                sink.setLevel(gsi, high: high)
            }
        }
    }

    /// Sources currently asserting, per GSI (for tests and leak checks).
    var snapshot: [GSI: Int] { state.withLock { $0.holders.mapValues(\.count) } }
}

/// INTx routing on q35: a pin is swizzled by the device number at every bridge on the way up
/// (PCI-to-PCI Bridge spec, table 9-1), then the root-bus slot and pin select a PIRQ link in
/// the LPC, and each link drives its own IOAPIC input (GSI 16-23).
struct INTxRoute: Hashable, Sendable {
    let rootSlot: UInt8
    let rootPin: INTxPin

    /// `slotPath` lists device numbers from the function's own slot up to its root-bus slot.
    init(pin: INTxPin, slotPath: [UInt8]) {
        var pin = pin
        // Every hop except the last (the root bus itself) is a bridge's secondary bus.
        for device in slotPath.dropLast() { pin = pin.swizzled(throughSlot: device) }
        rootSlot = slotPath.last ?? 0
        rootPin = pin
    }
}

/// What a placed function is handed to raise interrupts. Its INTx route lives in the shared
/// lines, so the machine can move it when the guest rewrites the pin routing; an MSI is a memory
/// write, so it goes out through the function's bus-master port. A function whose pin the host
/// kernel drives (an assigned device) asks for a kernel line instead, which moves with the route.
final class FunctionInterrupts: PCIInterruptOutput {
    private let lines: SharedLines
    private let kernelLines: KernelINTxLines
    private let port: BusMasterPort
    private let kernelLine = Mutex<KernelINTxLines.Line?>(nil)
    /// The function's id, for log lines.
    private let owner: String

    init(owner: String, gsi: GSI?, lines: SharedLines, kernelLines: KernelINTxLines, port: BusMasterPort) {
        self.owner = owner
        self.lines = lines
        self.kernelLines = kernelLines
        self.port = port
        lines.register(ObjectIdentifier(self), routedTo: gsi)
    }

    /// The GSI the INTx pin reaches now.
    var gsi: GSI? { lines.gsi(of: ObjectIdentifier(self)) }

    func signal(_ message: MSIMessage) { port.deliver(message) }

    func setINTx(_ asserted: Bool) { lines.set(ObjectIdentifier(self), asserted: asserted) }

    func kernelINTx() throws(KernelINTxError) -> (any KernelINTxLine)? {
        try kernelLine.withLock { (line) throws(KernelINTxError) -> KernelINTxLines.Line in
            if let line { return line }
            let made = try kernelLines.make(for: owner, routedTo: gsi)
            line = made
            return made
        }
    }

    /// Moves the INTx pin to `gsi`; an asserted pin lowers the old GSI and raises the new one.
    func reroute(to gsi: GSI?) {
        lines.route(ObjectIdentifier(self), to: gsi)
        if let line = kernelLine.withLock({ $0 }) { kernelLines.move(line, to: gsi) }
    }

    /// Drops this function's contribution (on unplug); an INTx change still in flight from the
    /// function is ignored after this.
    func release() {
        lines.remove(ObjectIdentifier(self))
        if let line = kernelLine.withLock({ l in defer { l = nil }; return l }) { kernelLines.remove(line) }
    }
}
