import AddressSpace
import Interrupts
import Synchronization
import VMMBase

/// The registers of an I/O APIC (82093AA; version 0x20, with the EOI register), as QEMU 10's
/// userspace IOAPIC presents them: IOREGSEL at 0x00, IOWIN at 0x10, EOI at 0x40; ID (bits
/// 27:24 writable), version 0x00170020, arbitration 0, and 24 redirection entries that come
/// out of reset masked.
public struct IOAPICRegisters: Sendable, Hashable, Codable {
    public static let pins = 24
    public static let version: UInt32 = 0x20

    public enum Offset {
        public static let select: UInt64 = 0x00
        public static let window: UInt64 = 0x10
        public static let eoi: UInt64 = 0x40
    }

    public enum Index {
        public static let id: UInt8 = 0x00
        public static let version: UInt8 = 0x01
        public static let arbitration: UInt8 = 0x02
        public static let firstRedirection: UInt8 = 0x10
    }

    /// Redirection entry bits (82093AA datasheet, 3.2.4).
    public enum Entry {
        public static let vectorMask: UInt64 = 0xFF
        public static let destinationMode: UInt64 = 1 << 11
        public static let deliveryStatus: UInt64 = 1 << 12
        public static let remoteIRR: UInt64 = 1 << 14
        public static let levelTriggered: UInt64 = 1 << 15
        public static let masked: UInt64 = 1 << 16
        /// Bits software cannot write.
        public static let readOnly: UInt64 = deliveryStatus | remoteIRR
    }

    public var select: UInt8 = 0
    public var id: UInt8 = 0
    public var entries = [UInt64](repeating: Entry.masked, count: pins)
    /// Input requests not yet delivered (edge) or still asserted (level), one bit per pin.
    public var requests: UInt32 = 0

    public init() {}

    /// The message entry `pin` sends (Intel SDM vol. 3, 11.11: destination ID in address bits
    /// 19:12, destination mode in bit 2; vector, delivery mode and trigger mode in the data).
    public static func message(for entry: UInt64) -> MSIMessage {
        let destination = (entry >> 56) & 0xFF
        let address = 0xFEE0_0000 | destination << 12 | (entry & Entry.destinationMode != 0 ? 1 << 2 : 0)
        let data = UInt32(entry & Entry.vectorMask) | UInt32((entry >> 8) & 0x7) << 8
            | (entry & Entry.levelTriggered != 0 ? 1 << 15 : 0)
        return MSIMessage(address: address, data: data)
    }
}

/// A userspace I/O APIC: GSIs come in as levels, unmasked entries go out as MSIs to the local
/// APICs; level-triggered entries hold Remote IRR until the local APIC's EOI (a write of the
/// vector to the EOI register, or `endOfInterrupt`). Guest accesses are taken whole or ignored:
/// IOWIN only as a dword, everything else reads 0.
public final class IOAPIC: IORegionHandler, Sendable {
    public static let base: UInt64 = 0xFEC0_0000
    public static let size: UInt64 = 0x1000

    private let state = Mutex(IOAPICRegisters())
    private let output: any InterruptSink
    /// Told the redirection entries after a guest write to one, and after a reset.
    private let redirectionObserver = Mutex<(@Sendable ([UInt64]) -> Void)?>(nil)
    /// Which pin each GSI drives (a PC's wiring: ISA IRQ 0 arrives on pin 2).
    private let wiring: GSIRouteTable

    public init(output: any InterruptSink, wiring: GSIRouteTable = .pc) {
        self.output = output
        self.wiring = wiring
    }

    public var registers: IOAPICRegisters { state.withLock { $0 } }

    public func reset() {
        let entries = state.withLock { s -> [UInt64] in
            s = IOAPICRegisters()
            return s.entries
        }
        redirectionsChanged(entries)
    }

    /// Calls `observer` (outside the IOAPIC's lock) with every redirection entry whenever the
    /// guest writes one or the IOAPIC is reset: a split irqchip's KVM routes follow them. Nil
    /// removes it.
    public func observeRedirections(_ observer: (@Sendable ([UInt64]) -> Void)?) {
        redirectionObserver.withLock { $0 = observer }
    }

    private func redirectionsChanged(_ entries: [UInt64]) {
        redirectionObserver.withLock { $0 }?(entries)
    }

    // MARK: Inputs

    /// A GSI changed level.
    public func setLevel(_ gsi: GSI, high: Bool) {
        guard case .controllers(let pin?, _) = wiring.routes[gsi], pin < IOAPICRegisters.pins else { return }
        deliver(state.withLock { s -> [MSIMessage] in
            let bit = UInt32(1) << pin
            if s.entries[Int(pin)] & IOAPICRegisters.Entry.levelTriggered != 0 {
                if high { s.requests |= bit } else { s.requests &= ~bit }
            } else if high {
                s.requests |= bit
            }
            return high ? Self.service(&s) : []
        })
    }

    /// The local APIC's EOI broadcast for `vector`: level-triggered entries with that vector
    /// drop Remote IRR, and one whose input is still asserted is delivered again.
    public func endOfInterrupt(vector: UInt8) {
        deliver(state.withLock { s -> [MSIMessage] in
            for pin in 0..<IOAPICRegisters.pins {
                let entry = s.entries[pin]
                guard entry & IOAPICRegisters.Entry.vectorMask == UInt64(vector),
                      entry & IOAPICRegisters.Entry.levelTriggered != 0,
                      entry & IOAPICRegisters.Entry.remoteIRR != 0 else { continue }
                s.entries[pin] = entry & ~IOAPICRegisters.Entry.remoteIRR
            }
            return Self.service(&s)
        })
    }

    /// Sends every pending, unmasked request: edge requests are consumed, level ones set
    /// Remote IRR and wait for the EOI.
    private static func service(_ s: inout IOAPICRegisters) -> [MSIMessage] {
        var messages: [MSIMessage] = []
        for pin in 0..<IOAPICRegisters.pins where s.requests & (1 << UInt32(pin)) != 0 {
            let entry = s.entries[pin]
            guard entry & IOAPICRegisters.Entry.masked == 0 else { continue }
            if entry & IOAPICRegisters.Entry.levelTriggered != 0 {
                guard entry & IOAPICRegisters.Entry.remoteIRR == 0 else { continue }
                s.entries[pin] = entry | IOAPICRegisters.Entry.remoteIRR
            } else {
                s.requests &= ~(1 << UInt32(pin))
            }
            messages.append(IOAPICRegisters.message(for: entry))
        }
        return messages
    }

    private func deliver(_ messages: [MSIMessage]) {
        for message in messages { output.signal(message) }
    }

    // MARK: Guest accesses

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        state.withLock { s -> UInt64 in
            switch offset & 0xFF {
            case IOAPICRegisters.Offset.select: return UInt64(s.select)
            case IOAPICRegisters.Offset.window where width == .dword: return UInt64(Self.windowRead(s))
            default: return 0
            }
        }
    }

    private static func windowRead(_ s: IOAPICRegisters) -> UInt32 {
        switch s.select {
        case IOAPICRegisters.Index.id: return UInt32(s.id) << 24
        case IOAPICRegisters.Index.version: return UInt32(IOAPICRegisters.pins - 1) << 16 | IOAPICRegisters.version
        case IOAPICRegisters.Index.arbitration: return 0
        default:
            guard let (pin, high) = redirection(s.select) else { return 0 }
            return UInt32(truncatingIfNeeded: high ? s.entries[pin] >> 32 : s.entries[pin])
        }
    }

    /// The entry and half a register index selects, for indices 0x10-0x3F.
    private static func redirection(_ index: UInt8) -> (Int, Bool)? {
        guard index >= IOAPICRegisters.Index.firstRedirection else { return nil }
        let pin = Int(index - IOAPICRegisters.Index.firstRedirection) / 2
        return pin < IOAPICRegisters.pins ? (pin, index & 1 != 0) : nil
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        switch offset & 0xFF {
        case IOAPICRegisters.Offset.select:
            state.withLock { $0.select = UInt8(truncatingIfNeeded: value) }
        case IOAPICRegisters.Offset.window where width == .dword:
            let (messages, entries) = state.withLock { s -> ([MSIMessage], [UInt64]?) in
                let touchesEntry = Self.redirection(s.select) != nil
                return (Self.windowWrite(&s, UInt32(truncatingIfNeeded: value)), touchesEntry ? s.entries : nil)
            }
            // The routes first, so a delivery the write caused finds the new EOI routing.
            if let entries { redirectionsChanged(entries) }
            deliver(messages)
        case IOAPICRegisters.Offset.eoi:
            endOfInterrupt(vector: UInt8(truncatingIfNeeded: value))
        default:
            break
        }
    }

    private static func windowWrite(_ s: inout IOAPICRegisters, _ value: UInt32) -> [MSIMessage] {
        if s.select == IOAPICRegisters.Index.id {
            s.id = UInt8((value >> 24) & 0xF)
            return []
        }
        guard let (pin, high) = redirection(s.select) else { return [] }
        var entry = s.entries[pin]
        if high {
            entry = entry & 0xFFFF_FFFF | UInt64(value) << 32
        } else {
            let kept = entry & IOAPICRegisters.Entry.readOnly
            entry = entry & ~0xFFFF_FFFF | UInt64(value) & ~IOAPICRegisters.Entry.readOnly | kept
            // An edge-triggered entry has no Remote IRR.
            if entry & IOAPICRegisters.Entry.levelTriggered == 0 { entry &= ~IOAPICRegisters.Entry.remoteIRR }
        }
        s.entries[pin] = entry
        // Unmasking (or retargeting) an entry whose input is asserted delivers it.
        return service(&s)
    }
}

extension IOAPIC: DeviceStateSnapshotting {
    public func snapshot() -> IOAPICRegisters { registers }

    /// Pending requests come back as they were: a level request waits for its EOI, an edge
    /// one for its pin to be unmasked, as before the snapshot.
    public func restore(_ snapshot: IOAPICRegisters) throws(DeviceStateError) {
        guard snapshot.entries.count == IOAPICRegisters.pins else {
            throw .layoutMismatch(device: "ioapic", reason: "\(snapshot.entries.count) redirection entries, not \(IOAPICRegisters.pins)")
        }
        state.withLock { $0 = snapshot }
    }
}
