import PCI
import Synchronization
import VMMBase

/// The q35 host bridge (MCH, 00:00.0) as QEMU 10 presents it: an Intel 82P35 DRAM
/// controller identity (8086:29c0) with a conventional 256-byte config space, and the
/// registers that steer the platform's memory map: PCIEXBAR (the ECAM window), PAM0-PAM6
/// (the legacy BIOS area), SMRAM/ESMRAMC (SMM memory), QEMU's extended-TSEG size register
/// and its SMBASE-in-SMRAM register.
///
/// Reset values and write masks are those QEMU shows (see
/// DeviceTables/fixtures/qemu-10.0-q35-*.lspci/-wmask.txt, measured by
/// Tests/Oracle/qemu_q35.py). Like QEMU, every device-specific byte (0x40-0xFF) is plain
/// read/write unless a register below says otherwise.
public final class Q35HostBridge: PCIFunction {
    /// Which platform-visible state a config write changed; the machine remaps accordingly.
    public struct Change: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// The decoded ECAM window (enable, base or size) changed.
        public static let ecam = Change(rawValue: 1 << 0)
        /// At least one PAM segment's attribute changed.
        public static let pam = Change(rawValue: 1 << 1)
        /// SMRAM or ESMRAMC changed (legacy/high SMRAM visibility, TSEG, lock).
        public static let smram = Change(rawValue: 1 << 2)
        /// The SMBASE register changed (QEMU's SMRAM-at-SMBASE window).
        public static let smbase = Change(rawValue: 1 << 3)
    }

    /// Config register offsets and bits (Intel 3 Series MCH datasheet; QEMU's q35.h for the
    /// QEMU-specific registers).
    public enum Register {
        /// QEMU extension: TSEG size in MiB when ESMRAMC.TSEG_SZ = 11b. Writing 0xFFFF asks
        /// for the size, which replaces the written value.
        public static let extendedTSEGMegabytes = 0x50
        /// 64-bit PCI Express register range base address.
        public static let pciexbar = 0x60
        public static let pam0 = 0x90
        /// QEMU extension: SMRAM at SMBASE (0x30000, 128 KiB). 0xFF queries, 0x01 answers
        /// "supported", 0x02 locks.
        public static let smbase = 0x9C
        public static let smram = 0x9D
        public static let esmramc = 0x9E
        /// Top of low usable DRAM, 16 bits: bits 15:4 are address bits 31:20.
        public static let tolud = 0xB0
    }

    public enum PCIEXBARBits {
        public static let enable: UInt64 = 1 << 0
        public static let lengthShift: UInt64 = 1
        public static let lengthMask: UInt64 = 0x3 << 1
        /// Address bits 35:28, always part of the base.
        public static let baseMask256: UInt64 = 0xF_F000_0000
    }

    public enum SMRAMBits {
        public static let open: UInt8 = 1 << 6        // D_OPEN
        public static let closed: UInt8 = 1 << 5      // D_CLS
        public static let locked: UInt8 = 1 << 4      // D_LCK
        public static let globalEnable: UInt8 = 1 << 3  // G_SMRAME
        /// C_BASE_SEG, hard-wired to 010b (the 0xA0000 compatible SMRAM).
        public static let compatibleBaseSegment: UInt8 = 0x2
        static let writable: UInt8 = open | closed | locked | globalEnable
        static let writableWhenLocked: UInt8 = closed
    }

    public enum ESMRAMCBits {
        public static let highEnable: UInt8 = 1 << 7   // H_SMRAME
        public static let error: UInt8 = 1 << 6        // E_SMERR
        public static let cacheable: UInt8 = 1 << 5    // SM_CACHE
        public static let l1: UInt8 = 1 << 4           // SM_L1
        public static let l2: UInt8 = 1 << 3           // SM_L2
        public static let tsegSizeMask: UInt8 = 0x3 << 1
        public static let tsegEnable: UInt8 = 1 << 0   // T_EN
        static let reset: UInt8 = cacheable | l1 | l2
        static let writable: UInt8 = highEnable | tsegSizeMask | tsegEnable
    }

    enum SMBASEValues {
        static let query: UInt8 = 0xFF
        static let inRAM: UInt8 = 0x01
        static let lock: UInt8 = 0x02
    }

    /// QEMU's ECAM default base (PCIEXBAR's reset value, with EN clear).
    public static let defaultECAMBase: UInt64 = 0xB000_0000
    public static let identity = PCIIdentity(vendorID: 0x8086, deviceID: 0x29C0, revision: 0,
                                             classCode: 0x06_0000, subsystemVendorID: 0x1AF4,
                                             subsystemID: 0x1100)

    struct ECAM: Sendable, Hashable, Codable {
        var base: UInt64
        var size: UInt64
    }

    /// Config space and the decoded ECAM window; also the snapshot.
    public struct State: Sendable, Hashable, Codable {
        var config: ConfigSpace
        /// The window as last decoded: a write with the reserved length leaves it alone.
        var ecam: ECAM?
    }

    public let name: String
    /// The size answered through the extended-TSEG register (QEMU 10.0's default is 16).
    public let extendedTSEGMegabytes: UInt16
    private let state: Mutex<State>
    private let powerOn: State

    /// - Parameter extendedTSEGMegabytes: QEMU's `extended-tseg-mbytes`; 0 disables the
    ///   query register (it then reads and writes as plain storage).
    public init(name: String = "mch", extendedTSEGMegabytes: UInt16 = 16) {
        precondition(extendedTSEGMegabytes <= 0xFFF, "QEMU rejects extended TSEG sizes above 4095 MiB")
        self.name = name
        self.extendedTSEGMegabytes = extendedTSEGMegabytes
        var config = ConfigSpace(layout: .endpoint, express: false)
        config.setIdentity(Self.identity)
        Self.applyQEMUMasks(&config)
        config.set(Register.pciexbar, width: 8, value: Self.defaultECAMBase)
        config.set(Register.smbase, width: 1, value: 0)
        config.set(Register.smram, width: 1, value: UInt64(SMRAMBits.compatibleBaseSegment))
        config.set(Register.esmramc, width: 1, value: UInt64(ESMRAMCBits.reset))
        if extendedTSEGMegabytes > 0 {
            config.set(Register.extendedTSEGMegabytes, width: 2, value: UInt64(extendedTSEGMegabytes))
        }
        config.captureResetState()
        powerOn = State(config: config, ecam: nil)
        state = Mutex(powerOn)
    }

    /// QEMU's masks for a plain PCI function plus the MCH's own: the command register takes
    /// I/O, memory, bus master, SERR and INTx disable; cache line size and interrupt line
    /// are read/write; all of 0x40-0xFF is read/write except SMRAM and ESMRAMC.
    static func applyQEMUMasks(_ config: inout ConfigSpace) {
        config.setWritable(Reg.command, width: 2, mask: 0x0507)
        for offset in Reg.firstCapability..<ConfigSpace.conventionalSize {
            config.setWritable(offset, width: 1, mask: 0xFF)
        }
        config.setWritable(Register.smram, width: 1, mask: UInt64(SMRAMBits.writable))
        config.setWritable(Register.esmramc, width: 1, mask: UInt64(ESMRAMCBits.writable))
    }

    // MARK: PCIFunction

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { $0.config.read(offset, width: width) }
    }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        configWriteReportingChanges(offset, width: width, value: value).effects
    }

    /// A guest config write, returning the generic effects (with `.deviceSpecific` when any
    /// platform-visible MCH state changed) and which of that state changed.
    public func configWriteReportingChanges(_ offset: Int, width: AccessWidth, value: UInt32)
        -> (effects: ConfigWriteEffects, changes: Change)
    {
        state.withLock { state in
            let before = Decoded(state)
            var effects = state.config.write(offset, width: width, value: value)
            let touched = offset..<(offset + width.bytes)
            // The same order as QEMU's mch_write_config: the generic write first, then each
            // register the access overlapped.
            if touched.overlaps(Register.pciexbar..<(Register.pciexbar + 8)) {
                Self.updateECAM(&state)
            }
            if touched.overlaps(Register.smram..<(Register.esmramc + 1)) {
                Self.applySMRAMLock(&state.config)
            }
            if touched.overlaps(Register.extendedTSEGMegabytes..<(Register.extendedTSEGMegabytes + 2)) {
                answerExtendedTSEGQuery(&state.config)
            }
            if touched.contains(Register.smbase) {
                Self.updateSMBASE(&state.config)
            }
            let changes = before.changes(to: Decoded(state))
            if !changes.isEmpty { effects.insert(.deviceSpecific) }
            return (effects, changes)
        }
    }

    public func configSnapshot() -> ConfigSpace { state.withLock { $0.config } }

    /// Power-on reset: every register, write mask and lock returns to its initial state.
    /// (QEMU's system reset only restores the registers its reset handler names, so PAM,
    /// TOLUD and the other plain bytes keep their values there; a power cycle clears them.)
    public func reset() { state.withLock { $0 = powerOn } }

    // MARK: Register side effects

    /// Decodes PCIEXBAR as QEMU does. QEMU treats address bit 26 as the extra base bit of a
    /// 128 MiB window and bit 25 as that of a 64 MiB window (the datasheet's 128ADMSK and
    /// 64ADMSK are bits 27 and 26); for a 128 MiB window it also keeps bit 25. We follow
    /// QEMU so that the two decode the same windows. The reserved length (11b) leaves the
    /// previous window in place.
    static func decodePCIEXBAR(_ value: UInt64) -> (enabled: Bool, window: ECAM)? {
        var mask = PCIEXBARBits.baseMask256
        let size: UInt64
        switch (value & PCIEXBARBits.lengthMask) >> PCIEXBARBits.lengthShift {
        case 0: size = 256 << 20
        case 1: size = 128 << 20; mask |= 1 << 26 | 1 << 25
        case 2: size = 64 << 20; mask |= 1 << 25
        default: return nil
        }
        return (value & PCIEXBARBits.enable != 0, ECAM(base: value & mask, size: size))
    }

    private static func updateECAM(_ state: inout State) {
        guard let decoded = decodePCIEXBAR(state.config.get(Register.pciexbar, width: 8)) else { return }
        state.ecam = decoded.enabled ? decoded.window : nil
    }

    /// D_LCK: once set it can only be cleared by reset; it closes D_OPEN and leaves only
    /// D_CLS writable in SMRAM, and nothing writable in ESMRAMC.
    private static func applySMRAMLock(_ config: inout ConfigSpace) {
        let smram = UInt8(config.get(Register.smram, width: 1))
        guard smram & SMRAMBits.locked != 0 else { return }
        config.set(Register.smram, width: 1, value: UInt64(smram & ~SMRAMBits.open))
        config.setWritable(Register.smram, width: 1, mask: UInt64(SMRAMBits.writableWhenLocked))
        config.setWritable(Register.esmramc, width: 1, mask: 0)
    }

    private func answerExtendedTSEGQuery(_ config: inout ConfigSpace) {
        guard extendedTSEGMegabytes > 0,
              config.get(Register.extendedTSEGMegabytes, width: 2) == 0xFFFF else { return }
        config.set(Register.extendedTSEGMegabytes, width: 2, value: UInt64(extendedTSEGMegabytes))
    }

    /// QEMU's SMBASE handshake: at reset the byte is 0 and fully writable, but any value
    /// other than the query 0xFF is discarded. The query answers 0x01 and leaves only the
    /// lock bit writable; setting the lock makes the byte read 0x02 and read-only.
    private static func updateSMBASE(_ config: inout ConfigSpace) {
        var value = UInt8(config.get(Register.smbase, width: 1))
        if value == SMBASEValues.query {
            config.setWritable(Register.smbase, width: 1, mask: UInt64(SMBASEValues.lock))
            config.set(Register.smbase, width: 1, value: UInt64(SMBASEValues.inRAM))
            return
        }
        if config.writable[Register.smbase] == 0xFF { value = 0 }
        if value & SMBASEValues.lock != 0 {
            config.setWritable(Register.smbase, width: 1,
                               mask: UInt64(config.writable[Register.smbase] & ~SMBASEValues.lock))
            value = SMBASEValues.lock
        }
        config.set(Register.smbase, width: 1, value: UInt64(value))
    }

    /// The platform-visible state, compared before and after a write.
    private struct Decoded: Equatable {
        var ecam: ECAM?
        var pam: [UInt8]
        var smram: UInt8
        var esmramc: UInt8
        var smbase: UInt8

        init(_ state: State) {
            ecam = state.ecam
            pam = (0..<7).map { UInt8(state.config.get(Register.pam0 + $0, width: 1)) }
            smram = UInt8(state.config.get(Register.smram, width: 1))
            esmramc = UInt8(state.config.get(Register.esmramc, width: 1))
            smbase = UInt8(state.config.get(Register.smbase, width: 1))
        }

        func changes(to new: Decoded) -> Change {
            var change: Change = []
            if ecam != new.ecam { change.insert(.ecam) }
            if PAMSegment.all.contains(where: { Q35HostBridge.attribute($0, pam) != Q35HostBridge.attribute($0, new.pam) }) {
                change.insert(.pam)
            }
            if smram != new.smram || esmramc != new.esmramc { change.insert(.smram) }
            if smbase != new.smbase { change.insert(.smbase) }
            return change
        }
    }

    private static func attribute(_ segment: PAMSegment, _ pam: [UInt8]) -> PAMAttribute {
        PAMAttribute(rawValue: (pam[segment.register - Register.pam0] >> UInt8(segment.shift)) & 0x3)!
    }

    // MARK: Typed read-back

    /// The ECAM (MMCONFIG) window the MCH decodes now, or nil when PCIEXBAR.EN is clear.
    public var ecamWindow: (base: UInt64, size: UInt64)? {
        state.withLock { state in state.ecam.map { ($0.base, $0.size) } }
    }

    /// The raw 64-bit PCIEXBAR value.
    public var pciexbar: UInt64 { state.withLock { $0.config.get(Register.pciexbar, width: 8) } }

    /// The attribute of each of the 13 PAM segments, in `PAMSegment.all` order.
    public var pam: [PAMAttribute] {
        state.withLock { state in
            let raw = (0..<7).map { UInt8(state.config.get(Register.pam0 + $0, width: 1)) }
            return PAMSegment.all.map { Self.attribute($0, raw) }
        }
    }

    /// The attribute of the PAM segment containing `address`, or nil outside 0xC0000-0xFFFFF.
    public func pamAttribute(at address: UInt64) -> PAMAttribute? {
        guard let segment = PAMSegment.all.first(where: { $0.range.contains(address) }) else { return nil }
        return pam[segment.index]
    }

    public var smram: SMRAMControl {
        state.withLock {
            SMRAMControl(smram: UInt8($0.config.get(Register.smram, width: 1)),
                         esmramc: UInt8($0.config.get(Register.esmramc, width: 1)),
                         extendedTSEGMegabytes: extendedTSEGMegabytes)
        }
    }

    /// QEMU's SMRAM-at-SMBASE window (0x30000, 128 KiB): hidden from non-SMM code and
    /// backed by RAM for SMM once the SMBASE register is locked; nil before that.
    public var smbaseWindow: (base: UInt64, size: UInt64)? {
        state.withLock { state in
            UInt8(state.config.get(Register.smbase, width: 1)) & SMBASEValues.lock != 0 ? (0x3_0000, 0x2_0000) : nil
        }
    }

    /// TOLUD as programmed (bits 15:4 of 0xB0 are address bits 31:20). QEMU implements no
    /// behaviour for it: it resets to 0 and is plain read/write storage.
    public var tolud: UInt64 { state.withLock { ($0.config.get(Register.tolud, width: 2) & 0xFFF0) << 16 } }
}

/// SMRAM (0x9D) and ESMRAMC (0x9E) decoded as QEMU applies them.
public struct SMRAMControl: Sendable, Hashable {
    public let smram: UInt8
    public let esmramc: UInt8
    public let extendedTSEGMegabytes: UInt16

    public init(smram: UInt8, esmramc: UInt8, extendedTSEGMegabytes: UInt16) {
        self.smram = smram
        self.esmramc = esmramc
        self.extendedTSEGMegabytes = extendedTSEGMegabytes
    }

    typealias S = Q35HostBridge.SMRAMBits
    typealias E = Q35HostBridge.ESMRAMCBits

    public var open: Bool { smram & S.open != 0 }
    public var closed: Bool { smram & S.closed != 0 }
    public var locked: Bool { smram & S.locked != 0 }
    public var globalEnable: Bool { smram & S.globalEnable != 0 }
    public var highEnable: Bool { esmramc & E.highEnable != 0 }
    public var tsegEnable: Bool { esmramc & E.tsegEnable != 0 }

    /// Non-SMM accesses to 0xA0000-0xBFFFF reach RAM (instead of PCI/VGA): D_OPEN with
    /// H_SMRAME clear.
    public var legacyRAMVisibleOutsideSMM: Bool { open && !highEnable }
    /// RAM 0xA0000-0xBFFFF is also visible at 0xFEDA0000 to non-SMM code: D_OPEN with H_SMRAME.
    public var highSMRAMVisibleOutsideSMM: Bool { open && highEnable }
    /// SMM sees RAM at 0xA0000 (G_SMRAME, not H_SMRAME).
    public var lowSMRAMInSMM: Bool { globalEnable && !highEnable }
    /// SMM sees RAM 0xA0000-0xBFFFF at 0xFEDA0000 (G_SMRAME and H_SMRAME).
    public var highSMRAMInSMM: Bool { globalEnable && highEnable }

    /// Bytes of TSEG carved from the top of low RAM: needs T_EN and G_SMRAME; size field
    /// 00b = 1 MiB, 01b = 2 MiB, 10b = 8 MiB, 11b = QEMU's extended size.
    public var tsegSize: UInt64 {
        guard tsegEnable && globalEnable else { return 0 }
        switch (esmramc & E.tsegSizeMask) >> 1 {
        case 0: return 1 << 20
        case 1: return 2 << 20
        case 2: return 8 << 20
        default: return UInt64(extendedTSEGMegabytes) << 20
        }
    }
}

extension Q35HostBridge: DeviceStateSnapshotting {
    public func snapshot() -> State { state.withLock { $0 } }

    /// The machine rebuilds its platform mappings (ECAM, PAM, SMRAM) after a restore, as
    /// after any write to these registers.
    public func restore(_ snapshot: State) throws(DeviceStateError) {
        try state.withLock { s throws(DeviceStateError) in
            try s.config.checkLayout(of: snapshot.config, device: name)
            s = snapshot
        }
    }
}
