import Interrupts
import PCI
import Synchronization
import VMMBase

/// Shared level-triggered lines: a GSI is high while any source routed to it asserts.
final class SharedLines: Sendable {
    private let asserted = Mutex<[GSI: Set<ObjectIdentifier>]>([:])
    private let sink: any InterruptSink

    init(sink: any InterruptSink) { self.sink = sink }

    func set(_ gsi: GSI, source: ObjectIdentifier, asserted on: Bool) {
        let edge: Bool? = asserted.withLock { lines in
            var sources = lines[gsi, default: []]
            let wasHigh = !sources.isEmpty
            if on { sources.insert(source) } else { sources.remove(source) }
            lines[gsi] = sources.isEmpty ? nil : sources
            let isHigh = !sources.isEmpty
            return wasHigh == isHigh ? nil : isHigh
        }
        // Deliver outside the lock.
        if let edge { sink.setLevel(gsi, high: edge) }
    }

    /// Sources currently asserting, per GSI (for tests and leak checks).
    var snapshot: [GSI: Int] { asserted.withLock { $0.mapValues(\.count) } }
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

/// What a placed function is handed to raise interrupts. An MSI is a memory write, so it
/// goes out through the function's bus-master port.
final class FunctionInterrupts: PCIInterruptOutput {
    let gsi: GSI?
    private let lines: SharedLines
    private let port: BusMasterPort

    init(gsi: GSI?, lines: SharedLines, port: BusMasterPort) {
        self.gsi = gsi
        self.lines = lines
        self.port = port
    }

    func signal(_ message: MSIMessage) { port.deliver(message) }

    func setINTx(_ asserted: Bool) {
        guard let gsi else { return }
        lines.set(gsi, source: ObjectIdentifier(self), asserted: asserted)
    }

    /// Drops this function's contribution (on unplug).
    func release() { setINTx(false) }
}
