import AddressSpace
import Synchronization
import VMMBase

/// QEMU's ACPI PCI hot-plug register block (hw/acpi/pcihp.c, docs/specs/acpi_pci_hotplug.rst)
/// as the q35 ICH9 has it: 24 bytes at I/O 0x0CC0 (QEMU 10; QEMU 6.1-6.2 used 0x0CC4, which
/// overlapped the CPU hot-plug block at 0x0CD8), dword accesses only:
///
/// | port | register | |
/// |---|---|---|
/// | 0x0CC0 | PCIU | slots with a device plugged since the last read (cleared by reading) |
/// | 0x0CC4 | PCID | slots whose removal was requested |
/// | 0x0CC8 | B0EJ | write a slot bitmap: eject the lowest slot set; reads 0 |
/// | 0x0CCC | PCIRMV | slots whose devices can be removed |
/// | 0x0CD0 | BNUM | bus select (BSEL) for the other registers |
/// | 0x0CD4 | PIDX | write a slot bitmap, then read that slot's acpi-index (cleared by reading) |
///
/// Plug and unplug requests set GPE0 status bit 1 (`_E01` in the DSDT's `_GPE` scope).
///
/// **BSEL assignment.** Each ACPI-hot-pluggable bus has a number 0-255 that its AML
/// methods write to BNUM before touching the other registers. QEMU numbers buses
/// depth-first from the root, counting only hot-pluggable ones (on q35 pcie.0 is not, so
/// the first such bus is 0). Here the machine chooses: `addBus(bsel:)` registers a bus
/// under a number, and the firmware tables must describe the same numbers — `_E01` does,
/// for every BSEL N, `BNUM = N` then Notify the slots in PCIU (1, device check) and PCID (3,
/// eject request); each slot's `_EJ0` does `BNUM = N; B0EJ = 1 << slot`.
public final class ACPIHotPlugController: Sendable {
    public static let basePort: UInt16 = 0x0CC0
    public static let size: UInt64 = 0x18
    /// GPE0 bit QEMU uses for PCI hot-plug (ACPI_PCI_HOTPLUG_STATUS = 2).
    public static let gpeBit = 1
    public static let maxBuses: UInt32 = 256

    public enum Offset {
        public static let up: UInt64 = 0x00, down: UInt64 = 0x04, eject: UInt64 = 0x08
        public static let removable: UInt64 = 0x0C, select: UInt64 = 0x10, acpiIndex: UInt64 = 0x14
    }

    struct BusState {
        var up: UInt32 = 0
        var down: UInt32 = 0
    }

    struct State {
        var select: UInt32 = 0
        var acpiIndex: UInt32 = 0
        var status: [UInt32: BusState] = [:]
        var buses: [UInt32: ACPIHotPlugBus] = [:]
    }

    let state = Mutex(State())
    private let gpe: any GeneralPurposeEvents
    private let eventHandler = Mutex<(@Sendable (ACPIHotPlugBus) -> Void)?>(nil)

    public init(gpe: any GeneralPurposeEvents) { self.gpe = gpe }

    /// Registers a bus under `bsel` (0-255) with its hot-pluggable device numbers, replacing
    /// any bus registered under that number.
    @discardableResult
    public func addBus(bsel: UInt32, name: String, slots: [UInt8] = Array(0..<32)) -> ACPIHotPlugBus {
        precondition(bsel < Self.maxBuses, "BSEL \(bsel) out of range")
        let bus = ACPIHotPlugBus(controller: self, bsel: bsel, name: name, slots: slots.filter { $0 < 32 })
        state.withLock {
            $0.buses[bsel] = bus
            $0.status[bsel] = BusState()
        }
        return bus
    }

    public func bus(bsel: UInt32) -> ACPIHotPlugBus? { state.withLock { $0.buses[bsel] } }

    /// Called (without locks held) when a bus has events for `takeEvents()` after a guest
    /// access (an ejection through B0EJ) or a reset.
    public func setEventHandler(_ handler: (@Sendable (ACPIHotPlugBus) -> Void)?) {
        eventHandler.withLock { $0 = handler }
    }

    /// The I/O handler for the 24-byte block.
    public var registers: any IORegionHandler { Registers(controller: self) }

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        // QEMU accepts only dword accesses; others read 0 and write nothing.
        guard width == .dword, offset & 3 == 0 else { return 0 }
        return UInt64(state.withLock { s -> UInt32 in
            let bsel = s.select
            guard bsel < Self.maxBuses else { return 0 }
            switch offset {
            case Offset.up:
                let value = s.status[bsel]?.up ?? 0
                s.status[bsel]?.up = 0
                return value
            case Offset.down: return s.status[bsel]?.down ?? 0
            case Offset.removable: return s.buses[bsel]?.removableMask ?? ~0
            case Offset.select: return bsel
            case Offset.acpiIndex:
                defer { s.acpiIndex = 0 }
                return s.acpiIndex
            default: return 0
            }
        })
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard width == .dword, offset & 3 == 0 else { return }
        let data = UInt32(truncatingIfNeeded: value)
        var ejectFrom: ACPIHotPlugBus?
        var ejectSlot: UInt8 = 0
        state.withLock { s in
            s.acpiIndex = 0
            switch offset {
            case Offset.select:
                s.select = data
            case Offset.acpiIndex:
                guard data != 0, s.select < Self.maxBuses, let bus = s.buses[s.select] else { return }
                s.acpiIndex = bus.acpiIndex(slot: UInt8(data.trailingZeroBitCount))
            case Offset.eject:
                guard data != 0, s.select < Self.maxBuses else { return }
                let slot = UInt8(data.trailingZeroBitCount)
                s.status[s.select]?.down &= ~(1 << UInt32(slot))
                s.status[s.select]?.up &= ~(1 << UInt32(slot))
                ejectFrom = s.buses[s.select]
                ejectSlot = slot
            default:
                break
            }
        }
        if let bus = ejectFrom, bus.eject(slot: ejectSlot) { notify(bus) }
    }

    /// System reset: pending removals complete (as QEMU's acpi_pcihp_reset does) and the
    /// plug notifications are dropped.
    public func reset() {
        let pending = state.withLock { s -> [(ACPIHotPlugBus, UInt32)] in
            var pending: [(ACPIHotPlugBus, UInt32)] = []
            for (bsel, status) in s.status {
                if status.down != 0, let bus = s.buses[bsel] { pending.append((bus, status.down)) }
                s.status[bsel] = BusState()
            }
            s.acpiIndex = 0
            return pending
        }
        for (bus, down) in pending {
            var ejected = false
            for slot in 0..<UInt8(32) where down & (1 << UInt32(slot)) != 0 {
                ejected = bus.eject(slot: slot) || ejected
            }
            if ejected { notify(bus) }
        }
    }

    // MARK: For the per-bus adapters

    func signal(bsel: UInt32, up: UInt32 = 0, down: UInt32 = 0, clear: UInt32 = 0) {
        state.withLock {
            $0.status[bsel, default: BusState()].up = ($0.status[bsel]?.up ?? 0) & ~clear | up
            $0.status[bsel, default: BusState()].down = ($0.status[bsel]?.down ?? 0) & ~clear | down
        }
        gpe.raiseGPE(Self.gpeBit)
    }

    func status(bsel: UInt32) -> (up: UInt32, down: UInt32) {
        state.withLock { ($0.status[bsel]?.up ?? 0, $0.status[bsel]?.down ?? 0) }
    }

    private func notify(_ bus: ACPIHotPlugBus) {
        if let handler = eventHandler.withLock({ $0 }) { handler(bus) }
    }

    private final class Registers: IORegionHandler {
        let controller: ACPIHotPlugController
        init(controller: ACPIHotPlugController) { self.controller = controller }
        func read(offset: UInt64, width: AccessWidth) -> UInt64 { controller.read(offset: offset, width: width) }
        func write(offset: UInt64, width: AccessWidth, value: UInt64) { controller.write(offset: offset, width: width, value: value) }
    }
}

/// One ACPI-hot-pluggable bus (one BSEL) of an `ACPIHotPlugController`, as a
/// `HotPlugController`: `plug` sets the slot's PCIU bit, `requestUnplug(.attentionButton)`
/// its PCID bit, both raising GPE0 bit 1; the guest's `_EJ0` (a B0EJ write) ejects the slot,
/// reported as `.ejected`. A surprise removal ejects at once and then sets PCID so the
/// guest's `_E01` learns of it (its `_EJ0` then finds the slot empty).
public final class ACPIHotPlugBus: HotPlugController {
    public let bsel: UInt32
    public let name: String
    public let hotPlugSlots: [UInt8]
    private weak let controller: ACPIHotPlugController?

    struct State {
        var occupied: Set<UInt8> = []
        /// Slots holding a cold-plugged bridge: ACPI cannot remove those (QEMU's
        /// acpi_pcihp_pc_no_hotplug), so PCIRMV clears their bits and B0EJ leaves them.
        var fixed: Set<UInt8> = []
        var acpiIndex: [UInt8: UInt32] = [:]
        var events: [HotPlugEvent] = []
    }
    let state = Mutex(State())

    init(controller: ACPIHotPlugController, bsel: UInt32, name: String, slots: [UInt8]) {
        self.controller = controller
        self.bsel = bsel
        self.name = name
        self.hotPlugSlots = slots
    }

    /// PCIRMV: every slot but those of cold-plugged bridges, as QEMU reports it.
    var removableMask: UInt32 { state.withLock { $0.fixed.reduce(~0) { $0 & ~(1 << UInt32($1)) } } }

    /// Marks a slot occupied without notifying the guest (a cold-plugged device); a bridge
    /// there stays for good.
    public func coldPlug(device: UInt8, bridge: Bool = false) {
        state.withLock {
            $0.occupied.insert(device)
            if bridge { $0.fixed.insert(device) }
        }
    }

    /// The acpi-index the guest reads back through PIDX for a slot (0 = none).
    public func setACPIIndex(_ index: UInt32, forSlot device: UInt8) { state.withLock { $0.acpiIndex[device] = index } }

    func acpiIndex(slot: UInt8) -> UInt32 { state.withLock { $0.acpiIndex[slot] ?? 0 } }

    /// Removes the device in `slot` if there is one; true when an `.ejected` event was queued.
    func eject(slot: UInt8) -> Bool {
        state.withLock { s in
            guard !s.fixed.contains(slot), s.occupied.remove(slot) != nil else { return false }
            s.events.append(.ejected(device: slot))
            return true
        }
    }

    public func plug(device: UInt8) throws(HotPlugError) {
        guard hotPlugSlots.contains(device) else { throw .noSuchSlot(controller: name, device: device) }
        try state.withLock { (s: inout State) throws(HotPlugError) in
            guard s.occupied.insert(device).inserted else { throw .slotOccupied(controller: name, device: device) }
        }
        controller?.signal(bsel: bsel, up: 1 << UInt32(device), clear: 1 << UInt32(device))
    }

    public func requestUnplug(device: UInt8, mode: UnplugMode) throws(HotPlugError) {
        guard hotPlugSlots.contains(device) else { throw .noSuchSlot(controller: name, device: device) }
        let bit: UInt32 = 1 << UInt32(device)
        guard state.withLock({ $0.occupied.contains(device) }) else { throw .slotEmpty(controller: name, device: device) }
        switch mode {
        case .attentionButton:
            guard (controller?.status(bsel: bsel).down ?? 0) & bit == 0 else {
                throw .unplugInProgress(controller: name, device: device)
            }
            controller?.signal(bsel: bsel, down: bit)
        case .surprise:
            _ = eject(slot: device)
            controller?.signal(bsel: bsel, down: bit, clear: bit)
        }
    }

    public func takeEvents() -> [HotPlugEvent] {
        state.withLock { s in
            defer { s.events.removeAll() }
            return s.events
        }
    }
}
