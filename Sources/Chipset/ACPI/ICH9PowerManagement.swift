import AddressSpace
import Interrupts
import Synchronization
import VMMBase

/// Something that can raise a general-purpose event (a GPE0 status bit) and with it the SCI.
public protocol GeneralPurposeEvents: AnyObject, Sendable {
    func raiseGPE(_ bit: Int)
}

/// The ICH9 ACPI power-management I/O block (128 ports at the LPC's PMBASE) and the APM
/// control/status ports (0xB2/0xB3), laid out and behaving as QEMU's hw/acpi/ich9.c and
/// core.c have them:
///
/// | offset | register | |
/// |---|---|---|
/// | 0x00 | PM1_STS (16) | write 1 to clear; TMR_STS sets when PM_TMR bit 23 toggles |
/// | 0x02 | PM1_EN (16) | |
/// | 0x04 | PM1_CNT (16) | SCI_EN (0), SLP_TYP (12:10), SLP_EN (13, write-only) |
/// | 0x08 | PM_TMR (32) | 24-bit count at 3.579545 MHz, read-only |
/// | 0x20 | GPE0_STS (8 bytes) | write 1 to clear |
/// | 0x28 | GPE0_EN (8 bytes) | |
/// | 0x30 | SMI_EN (32) | GBL_SMI_EN (bit 0) frozen by GEN_PMCON_1.SMI_LOCK |
/// | 0x34 | SMI_STS (32) | read-only |
///
/// Other offsets (including the TCO block at 0x60, not modelled) read all ones.
///
/// The SCI is a level on the LPC's SCI interrupt (GSI 9 unless ACPI_CNTL selects another):
/// high while (PM1_STS & PM1_EN & (TMR | GBL | PWRBTN | RTC)) or (GPE0_STS & GPE0_EN) is
/// non-zero. Like QEMU, SCI_EN does not gate it. Writing SLP_EN with SLP_TYP 0 (QEMU's
/// `_S5` is Package {0, 0, 0, 0}) or with the S4 type (2) is `.powerOffRequested`; SLP_TYP 1
/// (S3) is not supported and ignored. Writing ACPI_ENABLE (0x02) to the APM control port
/// sets SCI_EN, ACPI_DISABLE (0x03) clears it.
///
/// The PM timer's overflow (TMR_STS) is computed when the block is accessed and by
/// `serviceTimers()`; an SCI for it while the guest is idle needs the machine to call that.
public final class ICH9PowerManagement: GeneralPurposeEvents {
    public static let blockSize: UInt64 = 128
    public static let apmControlPort: UInt16 = 0xB2
    public static let apmStatusPort: UInt16 = 0xB3
    public static let timerFrequency: UInt64 = 3_579_545
    public static let defaultSCI = GSI(9)

    public enum Offset {
        public static let pm1Status: UInt64 = 0x00, pm1Enable: UInt64 = 0x02, pm1Control: UInt64 = 0x04
        public static let pmTimer: UInt64 = 0x08, gpe0Status: UInt64 = 0x20, gpe0Enable: UInt64 = 0x28
        public static let smiEnable: UInt64 = 0x30, smiStatus: UInt64 = 0x34
        public static let gpe0Length = 8
    }

    public enum PM1 {
        public static let timerStatus: UInt16 = 0x0001, busMasterStatus: UInt16 = 0x0010
        public static let globalStatus: UInt16 = 0x0020, powerButtonStatus: UInt16 = 0x0100
        public static let sleepButtonStatus: UInt16 = 0x0200, rtcStatus: UInt16 = 0x0400
        public static let wakeStatus: UInt16 = 0x8000
        /// The PM1_EN bits that can raise the SCI (ACPI_BITMASK_PM1_COMMON_ENABLED).
        public static let sciEnables: UInt16 = 0x0001 | 0x0020 | 0x0100 | 0x0400
        public static let powerButtonEnable: UInt16 = 0x0100
        public static let sciEnable: UInt16 = 0x0001
        public static let sleepTypeShift: UInt16 = 10
        public static let sleepTypeMask: UInt16 = 0x1C00
        public static let sleepEnable: UInt16 = 0x2000
    }

    /// SLP_TYP values of QEMU's DSDT (`_S3` = 1, `_S4` = 2, `_S5` = 0).
    public enum SleepType {
        public static let s5: UInt8 = 0, s3: UInt8 = 1, s4: UInt8 = 2
    }

    public enum APM {
        public static let acpiEnable: UInt8 = 0x02, acpiDisable: UInt8 = 0x03
    }

    public enum SMI {
        public static let globalEnable: UInt32 = 1 << 0
        /// APMC_EN: what QEMU sets at reset when the machine has no SMM.
        public static let apmcEnable: UInt32 = 1 << 5
    }

    /// The PM1, GPE0, SMI and APM registers and the SCI line; also the snapshot (the timer
    /// overflow tick is the host clock's).
    public struct State: Sendable, Hashable, Codable {
        var pm1Status: UInt16 = 0
        var pm1Enable: UInt16 = 0
        var pm1Control: UInt16 = 0
        /// PM timer tick at which TMR_STS sets next (0 at reset: it reads set).
        var overflowTick: UInt64 = 0
        var gpeStatus = [UInt8](repeating: 0, count: Offset.gpe0Length)
        var gpeEnable = [UInt8](repeating: 0, count: Offset.gpe0Length)
        var smiEnable: UInt32 = 0
        var smiStatus: UInt32 = 0
        var apmControl: UInt8 = 0
        var apmStatus: UInt8 = 0
        var sci: GSI
        var sciHigh = false
    }

    struct Effects: LineChangingEffects {
        var lineChanges: [(GSI, Bool)] = []
        var powerOff = false
    }

    /// The registers, and the SCI's changes in the order they were made.
    private let state: LineSourceState<State>
    private let clock: any PlatformClock
    private let events: any PlatformEventSink
    private let smiLocked: @Sendable () -> Bool
    /// QEMU's "acpi_only" (no SMM): SCI_EN is set at reset and the APM commands leave it.
    public let acpiOnly: Bool

    /// `smmEnabled` as QEMU's q35 under TCG (true): SCI_EN starts clear and the OS sets it
    /// through the APM port. `smiLocked` reports GEN_PMCON_1.SMI_LOCK.
    public init(clock: any PlatformClock, interrupts: any InterruptSink, events: any PlatformEventSink,
                sci: GSI = ICH9PowerManagement.defaultSCI, smmEnabled: Bool = true,
                smiLocked: @escaping @Sendable () -> Bool = { false }) {
        self.clock = clock
        self.events = events
        self.smiLocked = smiLocked
        self.acpiOnly = !smmEnabled
        state = LineSourceState(Self.powerOn(sci: sci, acpiOnly: !smmEnabled), sink: interrupts)
    }

    private static func powerOn(sci: GSI, acpiOnly: Bool) -> State {
        var s = State(sci: sci)
        if acpiOnly {
            s.pm1Control = PM1.sciEnable
            s.smiEnable = SMI.apmcEnable
        }
        return s
    }

    // MARK: Region handlers

    /// The 128-port block, to be mapped at PMBASE while ACPI decoding is enabled.
    public var pmBlock: any IORegionHandler { Block(pm: self) }
    /// Ports 0xB2 (APM control) and 0xB3 (APM status), always decoded.
    public var apmPorts: any IORegionHandler { APMPorts(pm: self) }

    public func readBlock(offset: UInt64, width: AccessWidth) -> UInt64 {
        let now = ticks()
        var value: UInt64 = 0
        let fx = state.update { s -> Effects in
            var fx = Effects()
            Self.updateSCI(&s, now: now, &fx)
            for i in 0..<UInt64(width.bytes) {
                value |= UInt64(Self.readByte(s, offset &+ i, now: now)) << (8 * i)
            }
            return fx
        }
        apply(fx)
        return value
    }

    public func writeBlock(offset: UInt64, width: AccessWidth, value: UInt64) {
        let now = ticks()
        let locked = smiLocked()
        let fx = state.update { s -> Effects in
            var fx = Effects()
            // SMI_EN is one 32-bit register: merge the bytes written into it.
            if offset < Offset.smiEnable + 4 && offset &+ UInt64(width.bytes) > Offset.smiEnable {
                var merged = s.smiEnable
                for i in 0..<UInt64(width.bytes) where (Offset.smiEnable..<Offset.smiEnable + 4).contains(offset + i) {
                    let shift = 8 * (offset + i - Offset.smiEnable)
                    merged = merged & ~(0xFF << shift) | UInt32(truncatingIfNeeded: value >> (8 * i)) & 0xFF << shift
                }
                let writable: UInt32 = locked ? ~SMI.globalEnable : ~0
                s.smiEnable = s.smiEnable & ~writable | merged & writable
            }
            for i in 0..<UInt64(width.bytes) {
                Self.writeByte(&s, offset &+ i, UInt8(truncatingIfNeeded: value >> (8 * i)), now: now, &fx)
            }
            Self.updateSCI(&s, now: now, &fx)
            return fx
        }
        apply(fx)
    }

    // MARK: Host side

    /// Sets GPE0 status bit `bit` (0-63) and updates the SCI.
    public func raiseGPE(_ bit: Int) {
        guard (0..<Offset.gpe0Length * 8).contains(bit) else { return }
        let now = ticks()
        let fx = state.update { s -> Effects in
            var fx = Effects()
            s.gpeStatus[bit / 8] |= 1 << UInt8(bit % 8)
            Self.updateSCI(&s, now: now, &fx)
            return fx
        }
        apply(fx)
    }

    /// The power button (system_powerdown): sets PWRBTN_STS if PWRBTN_EN is set.
    public func pressPowerButton() {
        let now = ticks()
        let fx = state.update { s -> Effects in
            var fx = Effects()
            if s.pm1Enable & PM1.powerButtonEnable != 0 { s.pm1Status |= PM1.powerButtonStatus }
            Self.updateSCI(&s, now: now, &fx)
            return fx
        }
        apply(fx)
    }

    /// Moves the SCI to another GSI (ACPI_CNTL's SCI_IRQ_SEL changed); a raised SCI follows.
    public func routeSCI(to gsi: GSI) {
        let fx = state.update { s -> Effects in
            var fx = Effects()
            guard s.sci != gsi else { return fx }
            if s.sciHigh { fx.lineChanges += [(s.sci, false), (gsi, true)] }
            s.sci = gsi
            return fx
        }
        apply(fx)
    }

    /// Re-evaluates the PM timer overflow (and so the SCI) now.
    public func serviceTimers() {
        let now = ticks()
        let fx = state.update { s -> Effects in
            var fx = Effects()
            Self.updateSCI(&s, now: now, &fx)
            return fx
        }
        apply(fx)
    }

    /// The next monotonic time (ns) at which TMR_STS would set, if PM1_EN.TMR_EN waits for it.
    public var nextTimerDeadline: UInt64? {
        state.withLock { s in
            guard s.pm1Enable & PM1.timerStatus != 0 else { return nil }
            return Self.timerFrequency.dividingFullWidth(s.overflowTick.multipliedFullWidth(by: 1_000_000_000)).quotient
        }
    }

    /// The PM timer's value now (24 bits).
    public var timer: UInt32 { UInt32(truncatingIfNeeded: ticks() & 0xFF_FFFF) }
    public var pm1Control: UInt16 { state.withLock { $0.pm1Control } }
    public var sciEnabled: Bool { pm1Control & PM1.sciEnable != 0 }
    public var sciAsserted: Bool { state.withLock { $0.sciHigh } }
    public var sciGSI: GSI { state.withLock { $0.sci } }

    /// System reset (QEMU's pm_reset): the registers return to power-on values; the SCI
    /// drops. The SCI routing stays.
    public func reset() {
        let fx = state.update { s -> Effects in
            var fx = Effects()
            if s.sciHigh { fx.lineChanges.append((s.sci, false)) }
            s = Self.powerOn(sci: s.sci, acpiOnly: acpiOnly)
            return fx
        }
        apply(fx)
    }


    private func apply(_ fx: Effects) {
        if fx.powerOff { events.platformEvent(.powerOffRequested) }
    }

    /// PM timer ticks since the clock's origin (3.579545 MHz).
    private func ticks() -> UInt64 {
        let ns = clock.monotonicNanoseconds()
        let product = ns.multipliedFullWidth(by: Self.timerFrequency)
        return (1_000_000_000 as UInt64).dividingFullWidth(product).quotient
    }

    // MARK: Semantics (under the lock)

    private static func pm1Status(_ s: State, now: UInt64) -> UInt16 {
        now >= s.overflowTick ? s.pm1Status | PM1.timerStatus : s.pm1Status
    }

    private static func readByte(_ s: State, _ offset: UInt64, now: UInt64) -> UInt8 {
        func byte<T: FixedWidthInteger>(_ v: T, _ index: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: v >> (8 * index)) }
        switch offset {
        case 0x00, 0x01: return byte(pm1Status(s, now: now), offset)
        case 0x02, 0x03: return byte(s.pm1Enable, offset - 2)
        case 0x04, 0x05: return byte(s.pm1Control, offset - 4)
        case 0x08...0x0B: return byte(UInt32(truncatingIfNeeded: now & 0xFF_FFFF), offset - 8)
        case 0x20..<0x28: return s.gpeStatus[Int(offset - 0x20)]
        case 0x28..<0x30: return s.gpeEnable[Int(offset - 0x28)]
        case 0x30...0x33: return byte(s.smiEnable, offset - 0x30)
        case 0x34...0x37: return byte(s.smiStatus, offset - 0x34)
        default: return 0xFF
        }
    }

    private static func writeByte(_ s: inout State, _ offset: UInt64, _ value: UInt8, now: UInt64, _ fx: inout Effects) {
        switch offset {
        case 0x00, 0x01:
            let bits = UInt16(value) << (8 * (offset & 1))
            if bits & PM1.timerStatus != 0 && pm1Status(s, now: now) & PM1.timerStatus != 0 {
                // Clearing TMR_STS: it sets again at the next toggle of the timer's bit 23.
                s.overflowTick = (now &+ 0x80_0000) & ~0x7F_FFFF
            }
            s.pm1Status &= ~bits
        case 0x02, 0x03:
            let shift = 8 * (offset & 1)
            s.pm1Enable = s.pm1Enable & ~(0xFF << shift) | UInt16(value) << shift
        case 0x04:
            s.pm1Control = s.pm1Control & 0xFF00 | UInt16(value)
        case 0x05:
            let high = UInt16(value) << 8
            s.pm1Control = s.pm1Control & 0x00FF | high & ~PM1.sleepEnable
            if high & PM1.sleepEnable != 0 {
                let type = UInt8((high & PM1.sleepTypeMask) >> PM1.sleepTypeShift)
                if type == SleepType.s5 || type == SleepType.s4 { fx.powerOff = true }
            }
        case 0x20..<0x28:
            s.gpeStatus[Int(offset - 0x20)] &= ~value
        case 0x28..<0x30:
            s.gpeEnable[Int(offset - 0x28)] = value
        default:
            break  // PM_TMR and SMI_STS are read-only; SMI_EN is merged by the caller
        }
    }

    private static func updateSCI(_ s: inout State, now: UInt64, _ fx: inout Effects) {
        let pm1 = pm1Status(s, now: now) & s.pm1Enable & PM1.sciEnables != 0
        let gpe = zip(s.gpeStatus, s.gpeEnable).contains { $0 & $1 != 0 }
        let high = pm1 || gpe
        if high != s.sciHigh {
            s.sciHigh = high
            fx.lineChanges.append((s.sci, high))
        }
    }

    fileprivate func apmWrite(_ offset: UInt64, _ value: UInt8) {
        state.withLock { s in
            if offset == 0 {
                s.apmControl = value
                // ACPI 3.0, 4.7.2.5: the OS hands over through SMI_CMD.
                guard !acpiOnly else { return }
                if value == APM.acpiEnable {
                    s.pm1Control |= PM1.sciEnable
                } else if value == APM.acpiDisable {
                    s.pm1Control &= ~PM1.sciEnable
                }
            } else {
                s.apmStatus = value
            }
        }
    }

    fileprivate func apmRead(_ offset: UInt64) -> UInt8 {
        state.withLock { offset == 0 ? $0.apmControl : $0.apmStatus }
    }

    private final class Block: IORegionHandler {
        let pm: ICH9PowerManagement
        init(pm: ICH9PowerManagement) { self.pm = pm }
        func read(offset: UInt64, width: AccessWidth) -> UInt64 { pm.readBlock(offset: offset, width: width) }
        func write(offset: UInt64, width: AccessWidth, value: UInt64) { pm.writeBlock(offset: offset, width: width, value: value) }
    }

    private final class APMPorts: IORegionHandler {
        let pm: ICH9PowerManagement
        init(pm: ICH9PowerManagement) { self.pm = pm }
        func read(offset: UInt64, width: AccessWidth) -> UInt64 {
            var value: UInt64 = 0
            for i in 0..<UInt64(width.bytes) {
                value |= UInt64(offset &+ i < 2 ? pm.apmRead(offset + i) : 0xFF) << (8 * i)
            }
            return value
        }
        func write(offset: UInt64, width: AccessWidth, value: UInt64) {
            for i in 0..<UInt64(width.bytes) where offset &+ i < 2 {
                pm.apmWrite(offset + i, UInt8(truncatingIfNeeded: value >> (8 * i)))
            }
        }
    }
}

extension ICH9PowerManagement: DeviceStateSnapshotting {
    public func snapshot() -> State { state.withLock { $0 } }

    /// The SCI goes to the restored route at the restored level.
    public func restore(_ snapshot: State) throws(DeviceStateError) {
        guard snapshot.gpeStatus.count == Offset.gpe0Length, snapshot.gpeEnable.count == Offset.gpe0Length else {
            throw .layoutMismatch(device: "acpi-pm", reason: "GPE0 blocks of \(snapshot.gpeStatus.count) and \(snapshot.gpeEnable.count) bytes, not \(Offset.gpe0Length)")
        }
        let fx = state.update { s -> Effects in
            var fx = Effects()
            if s.sciHigh { fx.lineChanges.append((s.sci, false)) }
            if snapshot.sciHigh { fx.lineChanges.append((snapshot.sci, true)) }
            s = snapshot
            return fx
        }
        apply(fx)
    }
}
