import Interrupts
import PCI
import Synchronization
import VMMBase

/// The ICH9 LPC bridge (00:1f.0, 8086:2918 rev 2) as QEMU 10 presents it: PCI interrupt
/// routing (PIRQA-H), the ACPI power-management I/O base, the GEN_PMCON registers with the
/// SMI lock, and the root complex base address (RCBA) whose chipset configuration block
/// holds the D25IR-D31IR interrupt-pin routing.
///
/// Reset values and write masks are those QEMU shows (see
/// DeviceTables/fixtures/qemu-10.0-q35-*). As in QEMU, every device-specific byte
/// (0x40-0xFF) is plain read/write except PMBASE and the SMI lock.
public final class ICH9LPC: PCIFunction {
    /// Which platform-visible state a config (or chipset-configuration) write changed.
    public struct Change: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// PMBASE or ACPI_CNTL changed: the PM I/O block moved, appeared, vanished, or the
        /// SCI interrupt changed.
        public static let acpi = Change(rawValue: 1 << 0)
        /// RCBA changed: the chipset configuration block moved, appeared or vanished.
        public static let rcba = Change(rawValue: 1 << 1)
        /// A PIRQx_ROUT register changed.
        public static let pirqRoutes = Change(rawValue: 1 << 2)
        /// A DxxIR register in the chipset configuration block changed (pin to PIRQ mapping).
        public static let pinRouting = Change(rawValue: 1 << 3)
        /// GEN_PMCON_1-3 changed (including the SMI lock).
        public static let pmControl = Change(rawValue: 1 << 4)
    }

    /// Config register offsets (ICH9 datasheet, chapter 13.1).
    public enum Register {
        public static let pmBase = 0x40
        public static let acpiControl = 0x44
        public static let pirqARoute = 0x60
        public static let pirqERoute = 0x68
        public static let genPMCon1 = 0xA0
        public static let genPMCon2 = 0xA2
        public static let genPMCon3 = 0xA4
        public static let rcba = 0xF0

        /// The PIRQx_ROUT register of `pirq`: A-D at 0x60-0x63, E-H at 0x68-0x6B.
        public static func route(_ pirq: PIRQ) -> Int {
            pirq.rawValue < 4 ? pirqARoute + pirq.rawValue : pirqERoute + pirq.rawValue - 4
        }
    }

    public enum Bits {
        /// PMBASE bits 15:7: a 128-byte block in I/O space.
        public static let pmBaseMask: UInt32 = 0xFF80
        public static let acpiEnable: UInt8 = 0x80
        public static let sciSelectMask: UInt8 = 0x07
        /// PIRQx_ROUT bit 7: set means the PIRQ is *not* routed to an ISA interrupt.
        public static let routeDisable: UInt8 = 0x80
        public static let routeIRQMask: UInt8 = 0x0F
        public static let smiLock: UInt8 = 1 << 4
        public static let rcbaEnable: UInt32 = 1
        public static let rcbaBaseMask: UInt32 = 0xFFFF_C000
    }

    /// Offsets in the 16 KiB chipset configuration block behind RCBA.
    public enum ChipsetConfig {
        public static let size = 16 * 1024
        public static let d31IR = 0x3140
        public static let d30IR = 0x3142
        public static let d29IR = 0x3144
        public static let d28IR = 0x3146
        public static let d27IR = 0x3148
        public static let d26IR = 0x314C
        public static let d25IR = 0x3150
        public static let gcs = 0x3410
        /// INTA -> PIRQA, INTB -> PIRQB, INTC -> PIRQC, INTD -> PIRQD (3 bits per nibble).
        public static let irDefault: UInt16 = 0x3210
        /// General Control and Status: NO_REBOOT (bit 5) as QEMU resets it.
        public static let gcsDefault: UInt32 = 0x20

        /// The DxxIR register for `slot`, for the slots that have one (25-29 and 31).
        public static func interruptRouteRegister(slot: UInt8) -> Int? {
            switch slot {
            case 25: d25IR
            case 26: d26IR
            case 27: d27IR
            case 28: d28IR
            case 29: d29IR
            case 31: d31IR
            default: nil
            }
        }
    }

    public static let identity = PCIIdentity(vendorID: 0x8086, deviceID: 0x2918, revision: 0x02,
                                             classCode: 0x06_0100, subsystemVendorID: 0x1AF4,
                                             subsystemID: 0x1100)

    /// Config space and the chipset configuration block; also the snapshot.
    public struct State: Sendable, Hashable, Codable {
        var config: ConfigSpace
        /// The chipset configuration block (QEMU keeps it as plain bytes; only the DxxIR
        /// registers have meaning).
        var chipsetConfig: [UInt8]
    }

    public let name: String
    private let state: Mutex<State>
    private let powerOn: State

    public init(name: String = "lpc") {
        self.name = name
        var config = ConfigSpace(layout: .endpoint, express: false)
        config.setIdentity(Self.identity)
        config.setMultiFunction(true)
        config.setWritable(Reg.command, width: 2, mask: 0x0507)
        for offset in Reg.firstCapability..<ConfigSpace.conventionalSize {
            config.setWritable(offset, width: 1, mask: 0xFF)
        }
        // QEMU sets PMBASE's mask to bits 15:7 and then, meaning to make ACPI_CNTL's
        // ACPI_EN and SCI select writable, writes 0x87 over PMBASE's low byte instead. So
        // PMBASE bits 7 and 2:0 (including the read-only-one RTE bit 0) are writable, bits
        // 31:16 are not, and ACPI_CNTL keeps the default all-writable mask.
        config.setWritable(Register.pmBase, width: 4, mask: 0x0000_FF87)
        config.set(Register.pmBase, width: 4, value: 1)  // RTE: resource type I/O
        for pirq in PIRQ.allCases {
            config.set(Register.route(pirq), width: 1, value: UInt64(Bits.routeDisable))
        }
        config.captureResetState()
        var chipsetConfig = [UInt8](repeating: 0, count: ChipsetConfig.size)
        // DxxIR registers are 16 bits wide and some sit only 2 bytes apart (D28IR at
        // 0x3146 follows D29IR at 0x3144), so each is stored as a word.
        for slot: UInt8 in [25, 26, 27, 28, 29, 31] {
            let offset = ChipsetConfig.interruptRouteRegister(slot: slot)!
            LittleEndian.store(UInt64(ChipsetConfig.irDefault), into: &chipsetConfig, at: offset, count: 2)
        }
        LittleEndian.store(UInt64(ChipsetConfig.gcsDefault), into: &chipsetConfig, at: ChipsetConfig.gcs, count: 4)
        powerOn = State(config: config, chipsetConfig: chipsetConfig)
        state = Mutex(powerOn)
    }

    // MARK: PCIFunction

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { $0.config.read(offset, width: width) }
    }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        configWriteReportingChanges(offset, width: width, value: value).effects
    }

    /// A guest config write, returning the generic effects (with `.deviceSpecific` when any
    /// platform-visible LPC state changed) and which of that state changed.
    public func configWriteReportingChanges(_ offset: Int, width: AccessWidth, value: UInt32)
        -> (effects: ConfigWriteEffects, changes: Change)
    {
        state.withLock { state in
            let before = state.config
            var effects = state.config.write(offset, width: width, value: value)
            // SMI_LOCK locks itself: once set, GEN_PMCON_1 bit 4 stays set until reset.
            if state.config.bytes[Register.genPMCon1] & Bits.smiLock != 0 {
                state.config.setWritable(Register.genPMCon1, width: 1,
                                         mask: UInt64(state.config.writable[Register.genPMCon1] & ~Bits.smiLock))
            }
            let changes = Self.changes(from: before, to: state.config)
            if !changes.isEmpty { effects.insert(.deviceSpecific) }
            return (effects, changes)
        }
    }

    public func configSnapshot() -> ConfigSpace { state.withLock { $0.config } }

    /// Power-on reset: registers, the SMI lock and the chipset configuration block return to
    /// their initial values. (QEMU's system reset restores PIRQ routes, PMBASE, ACPI_CNTL,
    /// RCBA and the chipset configuration block but leaves the other bytes, such as
    /// GEN_PMCON and its lock, as they were.)
    public func reset() { state.withLock { $0 = powerOn } }

    private static func changes(from old: ConfigSpace, to new: ConfigSpace) -> Change {
        func differs(_ offset: Int, _ count: Int) -> Bool {
            old.bytes[offset..<(offset + count)] != new.bytes[offset..<(offset + count)]
        }
        var change: Change = []
        if differs(Register.pmBase, 4) || differs(Register.acpiControl, 1) { change.insert(.acpi) }
        if differs(Register.rcba, 4) { change.insert(.rcba) }
        if differs(Register.pirqARoute, 4) || differs(Register.pirqERoute, 4) { change.insert(.pirqRoutes) }
        if differs(Register.genPMCon1, 6) { change.insert(.pmControl) }
        return change
    }

    // MARK: Chipset configuration block (memory behind RCBA)

    /// A read at `offset` in the 16 KiB block; like QEMU, the offset wraps within the block
    /// and an access running past its end is cut short (the missing bytes read as zero).
    public func chipsetConfigRead(_ offset: UInt64, width: AccessWidth) -> UInt64 {
        let (start, count) = Self.clip(offset, width)
        return state.withLock { LittleEndian.load($0.chipsetConfig, at: start, count: count) }
    }

    /// A write at `offset` in the 16 KiB block. Every byte is plain storage, so a guest can
    /// rewrite the DxxIR pin routing; returns `.pinRouting` when that routing changed.
    @discardableResult
    public func chipsetConfigWrite(_ offset: UInt64, width: AccessWidth, value: UInt64) -> Change {
        let (start, count) = Self.clip(offset, width)
        return state.withLock { state in
            let before = Self.pinTable(state.chipsetConfig)
            LittleEndian.store(value, into: &state.chipsetConfig, at: start, count: count)
            return Self.pinTable(state.chipsetConfig) == before ? [] : .pinRouting
        }
    }

    private static func clip(_ offset: UInt64, _ width: AccessWidth) -> (Int, Int) {
        let start = Int(offset & UInt64(ChipsetConfig.size - 1))
        return (start, min(width.bytes, ChipsetConfig.size - start))
    }

    private static func pinTable(_ block: [UInt8]) -> [UInt16] {
        [25, 26, 27, 28, 29, 31].map { UInt16(LittleEndian.load(block, at: ChipsetConfig.interruptRouteRegister(slot: $0)!, count: 2)) }
    }

    // MARK: Typed read-back

    /// The ISA IRQ `pirq` is steered to, or nil when its route has bit 7 (IRQEN, active
    /// high "disable") set. A PIRQ without an ISA route still drives its IOAPIC input,
    /// GSI 16 + index (`PIRQ.apicGSI`).
    public func pirqRoute(_ pirq: PIRQ) -> UInt8? {
        let value = state.withLock { $0.config.bytes[Register.route(pirq)] }
        return value & Bits.routeDisable != 0 ? nil : value & Bits.routeIRQMask
    }

    /// The PIRQ that INTx `pin` of a device in `slot` on bus 0 drives, by QEMU's rule:
    /// slots 25-29 and 31 use their DxxIR register (3 bits per pin, reset value 0x3210,
    /// i.e. INTA-D -> PIRQA-D); slot 30 (the DMI-to-PCI bridge) always uses PIRQE-H;
    /// every other slot rotates through PIRQE-H by slot number: PIRQ E + (slot + pin) mod 4.
    public func pirq(forSlot device: UInt8, pin: INTxPin) -> PIRQ {
        let slot = device & 0x1F
        if slot == 30 { return PIRQ(rawValue: 4 + pin.rawValue)! }
        if let register = ChipsetConfig.interruptRouteRegister(slot: slot) {
            let ir = state.withLock { LittleEndian.load($0.chipsetConfig, at: register, count: 2) }
            return PIRQ(rawValue: Int((ir >> (4 * UInt64(pin.rawValue))) & 0x7))!
        }
        return PIRQ(rawValue: 4 + (Int(slot) + pin.rawValue) % 4)!
    }

    /// The PM I/O base when ACPI decoding is on (ACPI_CNTL.ACPI_EN) and the base is not 0,
    /// as QEMU maps it: PMBASE bits 15:7, a 128-port block.
    public var pmBase: UInt16? {
        state.withLock { state in
            guard state.config.bytes[Register.acpiControl] & Bits.acpiEnable != 0 else { return nil }
            let base = UInt32(state.config.get(Register.pmBase, width: 4)) & Bits.pmBaseMask
            return base == 0 ? nil : UInt16(base)
        }
    }

    /// The SCI interrupt selected by ACPI_CNTL bits 2:0 (9, 10, 11, 20 or 21), nil for a
    /// reserved selection (QEMU then keeps the previous SCI interrupt).
    public var sciIRQ: UInt8? {
        let select = state.withLock { $0.config.bytes[Register.acpiControl] } & Bits.sciSelectMask
        return [0: 9, 1: 10, 2: 11, 4: 20, 5: 21][select]
    }

    public var genPMCon1: UInt16 { state.withLock { UInt16($0.config.get(Register.genPMCon1, width: 2)) } }
    public var genPMCon2: UInt16 { state.withLock { UInt16($0.config.get(Register.genPMCon2, width: 2)) } }
    public var genPMCon3: UInt16 { state.withLock { UInt16($0.config.get(Register.genPMCon3, width: 2)) } }
    /// GEN_PMCON_1.SMI_LOCK: set once, stays until reset. (QEMU also freezes SMI_EN.GBL_SMI_EN
    /// in the PM I/O block then; that block is not modelled here.)
    public var smiLocked: Bool { state.withLock { $0.config.bytes[Register.genPMCon1] & Bits.smiLock != 0 } }

    /// The chipset configuration block's base when RCBA.EN is set (bits 31:14, 16 KiB aligned).
    public var rcba: UInt64? {
        state.withLock { state in
            let value = UInt32(state.config.get(Register.rcba, width: 4))
            return value & Bits.rcbaEnable != 0 ? UInt64(value & Bits.rcbaBaseMask) : nil
        }
    }
}

extension ICH9LPC: DeviceStateSnapshotting {
    public func snapshot() -> State { state.withLock { $0 } }

    /// The machine reroutes PIRQs and rebuilds its platform mappings after a restore, as
    /// after any write to these registers.
    public func restore(_ snapshot: State) throws(DeviceStateError) {
        try state.withLock { s throws(DeviceStateError) in
            try s.config.checkLayout(of: snapshot.config, device: name)
            guard snapshot.chipsetConfig.count == s.chipsetConfig.count else {
                throw .layoutMismatch(device: name, reason: "\(snapshot.chipsetConfig.count) chipset configuration bytes, not \(s.chipsetConfig.count)")
            }
            s = snapshot
        }
    }
}
