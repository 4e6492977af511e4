import AddressSpace
import Interrupts
import Synchronization
import VMMBase

/// The MC146818 real-time clock and its 128 bytes of CMOS RAM at ports 0x70 (index, bit 7
/// is the NMI mask and is not part of the index) and 0x71 (data), as QEMU's
/// hw/rtc/mc146818rtc.c behaves: the time is kept as an offset from the host's wall clock
/// and written into the time registers when the guest reads them, in BCD or binary and 12-
/// or 24-hour form as register B says; SET (register B bit 7) freezes the registers so the
/// guest can write a new time, which takes effect when SET is cleared (or at once when a
/// time register is written while the clock runs). Register A's UIP reads 1 during the last
/// 244 µs of each second. Registers C and D are read-only; C clears on read.
///
/// Periodic, alarm and update-ended interrupts (IRQ 8) are not generated: no flag in
/// register C is ever set by time passing. The interrupt line follows register C's IRQF.
public final class CMOSRTC: IORegionHandler {
    public static let basePort: UInt16 = 0x70
    public static let portCount: UInt64 = 2
    public static let gsi = GSI(8)

    public enum Register {
        public static let seconds = 0x00, secondsAlarm = 0x01, minutes = 0x02, minutesAlarm = 0x03
        public static let hours = 0x04, hoursAlarm = 0x05, dayOfWeek = 0x06, dayOfMonth = 0x07
        public static let month = 0x08, year = 0x09
        public static let a = 0x0A, b = 0x0B, c = 0x0C, d = 0x0D
        /// Century (BCD or binary like the other time registers), as ACPI's FADT CENTURY names it.
        public static let century = 0x32
        /// The IBM PS/2 century byte, which QEMU aliases to 0x32.
        public static let ps2Century = 0x37
    }

    public enum RegisterA {
        public static let updateInProgress: UInt8 = 0x80
        /// Divider chain: 010b is the normal 32.768 kHz time base.
        public static let dividerMask: UInt8 = 0x70
        public static let resetValue: UInt8 = 0x26
    }

    public enum RegisterB {
        public static let set: UInt8 = 0x80, periodicInterrupt: UInt8 = 0x40, alarmInterrupt: UInt8 = 0x20
        public static let updateInterrupt: UInt8 = 0x10, squareWave: UInt8 = 0x08
        /// Binary (set) rather than BCD (clear) time registers.
        public static let binary: UInt8 = 0x04
        public static let twentyFourHour: UInt8 = 0x02
        public static let resetValue: UInt8 = 0x02
    }

    public enum RegisterC {
        public static let irqFlag: UInt8 = 0x80
        /// PF | AF | UF.
        public static let flags: UInt8 = 0x70
    }

    /// Register D bit 7: valid RAM and time (the battery is good).
    public static let registerDValue: UInt8 = 0x80

    static let nanosecondsPerSecond: Int64 = 1_000_000_000
    /// QEMU's UIP hold time: 8 cycles of the 32.768 kHz base, 244 µs.
    static let updateHold: Int64 = 8 * nanosecondsPerSecond / 32768

    /// CMOS RAM, index and guest time; also the snapshot (times are the host clock's).
    public struct State: Sendable, Hashable, Codable {
        var cmos = [UInt8](repeating: 0, count: 128)
        var index = 0
        /// Guest time = baseSeconds s + subsecond ns + (wall clock now - lastUpdate).
        var baseSeconds: Int64 = 0
        var subsecond: Int64 = 0
        var lastUpdate: Int64 = 0
        var irqHigh = false
    }

    /// IRQ 8's levels an update drove, in order.
    struct IRQ8Changes: LineChangingEffects {
        var levels: [Bool] = []
        var lineChanges: [(GSI, Bool)] { levels.map { (CMOSRTC.gsi, $0) } }
    }

    /// The registers and RAM, and IRQ 8's changes in the order they were made.
    private let state: LineSourceState<State>
    private let clock: any PlatformClock
    private let powerOnRAM: [Int: UInt8]

    /// `ram` presets CMOS bytes (memory sizes, equipment) as firmware expects them; see
    /// `CMOSRTC.qemuPCLayout`. Offsets outside 0x0E-0x7F (the time and control registers)
    /// are ignored.
    public init(clock: any PlatformClock, interrupts: any InterruptSink, ram: [Int: UInt8] = [:]) {
        self.clock = clock
        self.powerOnRAM = ram.filter { (0x0E..<0x80).contains($0.key) && $0.key != Register.century }
        let now = clock.wallClockNanoseconds()
        var s = State()
        s.lastUpdate = now
        s.baseSeconds = Self.floorDiv(now, Self.nanosecondsPerSecond)
        s.subsecond = now - s.baseSeconds * Self.nanosecondsPerSecond
        s.cmos[Register.a] = RegisterA.resetValue
        s.cmos[Register.b] = RegisterB.resetValue
        s.cmos[Register.d] = Self.registerDValue
        for (offset, value) in powerOnRAM { s.cmos[offset] = value }
        Self.storeTime(&s, now: now)
        state = LineSourceState(s, sink: interrupts)
    }

    // MARK: Ports

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        let now = clock.wallClockNanoseconds()
        var value: UInt64 = 0
        state.update { s -> IRQ8Changes in
            var fx = IRQ8Changes()
            for i in 0..<UInt64(width.bytes) {
                let port = offset &+ i
                let byte: UInt8 = port == 1 ? Self.readData(&s, now: now, &fx.levels) : 0xFF  // the index port reads 0xFF
                value |= UInt64(byte) << (8 * i)
            }
            return fx
        }
        return value
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        let now = clock.wallClockNanoseconds()
        state.update { s -> IRQ8Changes in
            var fx = IRQ8Changes()
            for i in 0..<UInt64(width.bytes) {
                let byte = UInt8(truncatingIfNeeded: value >> (8 * i))
                switch offset &+ i {
                case 0: s.index = Int(byte & 0x7F)
                case 1: Self.writeData(&s, byte, now: now, &fx.levels)
                default: break
                }
            }
            return fx
        }
    }

    // MARK: Host-side access

    /// A CMOS byte as the guest would read it (time registers refreshed), without side effects
    /// on register C.
    public func cmosByte(_ offset: Int) -> UInt8 {
        let now = clock.wallClockNanoseconds()
        return state.withLock { s in
            let i = offset & 0x7F
            if Self.isTimeRegister(i) && Self.running(s) { Self.storeTime(&s, now: now) }
            return s.cmos[i]
        }
    }

    /// The guest's current time in seconds since the Unix epoch.
    public var guestTime: Int64 {
        let now = clock.wallClockNanoseconds()
        return state.withLock { Self.floorDiv(Self.guestNanoseconds($0, now: now), Self.nanosecondsPerSecond) }
    }

    /// System reset, as QEMU's: periodic, alarm and square-wave enables and the flags in
    /// register C clear; the time and the RAM stay.
    public func reset() {
        state.update { s -> IRQ8Changes in
            s.cmos[Register.b] &= ~(RegisterB.periodicInterrupt | RegisterB.alarmInterrupt | RegisterB.squareWave)
            s.cmos[Register.c] = 0
            var fx = IRQ8Changes()
            Self.setIRQ(&s, false, &fx.levels)
            return fx
        }
    }

    // MARK: Semantics (under the lock)

    private static func readData(_ s: inout State, now: Int64, _ levels: inout [Bool]) -> UInt8 {
        if s.index == Register.ps2Century { s.index = Register.century }
        switch s.index {
        case _ where isTimeRegister(s.index):
            if running(s) { storeTime(&s, now: now) }
            return s.cmos[s.index]
        case Register.a:
            return s.cmos[Register.a] | (updateInProgress(s, now: now) ? RegisterA.updateInProgress : 0)
        case Register.c:
            let value = s.cmos[Register.c]
            s.cmos[Register.c] = 0
            setIRQ(&s, false, &levels)
            return value
        default:
            return s.cmos[s.index]
        }
    }

    private static func writeData(_ s: inout State, _ value: UInt8, now: Int64, _ levels: inout [Bool]) {
        if s.index == Register.ps2Century { s.index = Register.century }
        switch s.index {
        case _ where isTimeRegister(s.index):
            s.cmos[s.index] = value
            if running(s) { loadTime(&s, now: now) }
        case Register.a:
            let wasRunning = running(s)
            if wasRunning { storeTime(&s, now: now) }
            s.cmos[Register.a] = value & ~RegisterA.updateInProgress
            // Leaving a divider reset starts the clock from the registers.
            if !wasRunning && running(s) { loadTime(&s, now: now) }
        case Register.b:
            var value = value
            if value & RegisterB.set != 0 {
                if running(s) { storeTime(&s, now: now) }
                value &= ~RegisterB.updateInterrupt
            } else if s.cmos[Register.b] & RegisterB.set != 0 && s.cmos[Register.a] & RegisterA.dividerMask <= 0x20 {
                // Leaving SET mode: the registers become the time, keeping the sub-second phase.
                s.subsecond = floorMod(guestNanoseconds(s, now: now), nanosecondsPerSecond)
                s.cmos[Register.b] = value
                loadTime(&s, now: now)
            }
            // An enabled flag already pending interrupts at once.
            if value & s.cmos[Register.c] & RegisterC.flags != 0 {
                s.cmos[Register.c] |= RegisterC.irqFlag
                setIRQ(&s, true, &levels)
            } else {
                s.cmos[Register.c] &= ~RegisterC.irqFlag
                setIRQ(&s, false, &levels)
            }
            s.cmos[Register.b] = value
        case Register.c, Register.d:
            break  // read-only
        default:
            s.cmos[s.index] = value
        }
    }

    private static func setIRQ(_ s: inout State, _ high: Bool, _ levels: inout [Bool]) {
        guard s.irqHigh != high else { return }
        s.irqHigh = high
        levels.append(high)
    }

    static func isTimeRegister(_ i: Int) -> Bool {
        [Register.seconds, Register.minutes, Register.hours, Register.dayOfWeek, Register.dayOfMonth,
         Register.month, Register.year, Register.century].contains(i)
    }

    static func running(_ s: State) -> Bool {
        s.cmos[Register.b] & RegisterB.set == 0 && s.cmos[Register.a] & RegisterA.dividerMask <= 0x20
    }

    static func guestNanoseconds(_ s: State, now: Int64) -> Int64 {
        s.baseSeconds &* nanosecondsPerSecond &+ s.subsecond &+ (now &- s.lastUpdate)
    }

    static func updateInProgress(_ s: State, now: Int64) -> Bool {
        guard running(s), s.cmos[Register.a] & RegisterA.dividerMask == 0x20 else { return false }
        return floorMod(guestNanoseconds(s, now: now), nanosecondsPerSecond) >= nanosecondsPerSecond - updateHold
    }

    // MARK: Time <-> registers

    private static func encode(_ s: State, _ v: Int) -> UInt8 {
        let v = max(0, v)
        return s.cmos[Register.b] & RegisterB.binary != 0 ? UInt8(truncatingIfNeeded: v) : UInt8(truncatingIfNeeded: (v / 10 % 10) << 4 | v % 10)
    }

    private static func decode(_ s: State, _ byte: UInt8) -> Int {
        s.cmos[Register.b] & RegisterB.binary != 0 ? Int(byte) : Int(byte >> 4) * 10 + Int(byte & 0x0F)
    }

    /// Writes the current guest time into the time registers.
    static func storeTime(_ s: inout State, now: Int64) {
        let seconds = floorDiv(guestNanoseconds(s, now: now), nanosecondsPerSecond)
        let t = CivilTime(unixSeconds: seconds)
        s.cmos[Register.seconds] = encode(s, t.second)
        s.cmos[Register.minutes] = encode(s, t.minute)
        if s.cmos[Register.b] & RegisterB.twentyFourHour != 0 {
            s.cmos[Register.hours] = encode(s, t.hour)
        } else {
            let h = t.hour % 12 == 0 ? 12 : t.hour % 12
            s.cmos[Register.hours] = encode(s, h) | (t.hour >= 12 ? 0x80 : 0)
        }
        s.cmos[Register.dayOfWeek] = encode(s, t.weekday + 1)
        s.cmos[Register.dayOfMonth] = encode(s, t.day)
        s.cmos[Register.month] = encode(s, t.month)
        s.cmos[Register.year] = encode(s, floorMod(Int64(t.year), 100).asInt)
        s.cmos[Register.century] = encode(s, floorDiv(Int64(t.year), 100).asInt)
    }

    /// Makes the time registers the guest time from now on (QEMU's rtc_set_time, with
    /// mktimegm's normalisation of out-of-range fields).
    static func loadTime(_ s: inout State, now: Int64) {
        let second = decode(s, s.cmos[Register.seconds]), minute = decode(s, s.cmos[Register.minutes])
        var hour = decode(s, s.cmos[Register.hours] & 0x7F)
        if s.cmos[Register.b] & RegisterB.twentyFourHour == 0 {
            hour %= 12
            if s.cmos[Register.hours] & 0x80 != 0 { hour += 12 }
        }
        let day = decode(s, s.cmos[Register.dayOfMonth]), month = decode(s, s.cmos[Register.month])
        let year = decode(s, s.cmos[Register.year]) + decode(s, s.cmos[Register.century]) * 100
        s.baseSeconds = CivilTime.unixSeconds(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
        s.lastUpdate = now
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }
    static func floorMod(_ a: Int64, _ b: Int64) -> Int64 { a - floorDiv(a, b) * b }
}

private extension Int64 {
    var asInt: Int { Int(truncatingIfNeeded: self) }
}

/// A UTC calendar time from Unix seconds (proleptic Gregorian), and back.
struct CivilTime: Hashable {
    var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int
    /// 0 = Sunday.
    var weekday: Int

    init(unixSeconds: Int64) {
        let days = CMOSRTC.floorDiv(unixSeconds, 86400)
        let rest = Int(unixSeconds - days * 86400)
        hour = rest / 3600
        minute = rest / 60 % 60
        second = rest % 60
        weekday = Int(CMOSRTC.floorMod(days + 4, 7))  // 1970-01-01 was a Thursday
        // Days to civil date (H. Hinnant's algorithm).
        let z = days + 719468
        let era = CMOSRTC.floorDiv(z, 146097)
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        day = Int(doy - (153 * mp + 2) / 5 + 1)
        month = Int(mp < 10 ? mp + 3 : mp - 9)
        year = Int(yoe + era * 400) + (month <= 2 ? 1 : 0)
    }

    /// QEMU's mktimegm: fields out of range roll over (month 13 is January of the next year).
    static func unixSeconds(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) -> Int64 {
        var y = Int64(year), m = Int64(month)
        if m < 3 { m += 12; y -= 1 }
        let days = Int64(day) + (153 * m - 457) / 5 + 365 * y + y / 4 - y / 100 + y / 400 - 719469
        return 86400 * days + 3600 * Int64(hour) + 60 * Int64(minute) + Int64(second)
    }
}

extension CMOSRTC {
    /// CMOS RAM as QEMU's pc.c (pc_cmos_init) fills it for a PC, which SeaBIOS and OVMF read:
    /// base memory (0x15/0x16, KiB below 640 KiB), extended memory above 1 MiB in KiB up to
    /// 65535 (0x17/0x18 and again 0x30/0x31), memory between 16 MiB and 4 GiB in 64 KiB
    /// units (0x34/0x35), memory above 4 GiB in 64 KiB units (0x5B-0x5D, 24 bits), the
    /// number of CPUs minus one (0x5F), the equipment byte (0x14: FPU and PS/2 mouse present)
    /// and QEMU's default boot order "cad" (disk, floppy, CD: 0x3D = 0x12, 0x38 = 0x30).
    public static func qemuPCLayout(belowFourGiB: UInt64, aboveFourGiB: UInt64, cpuCount: Int = 1) -> [Int: UInt8] {
        let kib: UInt64 = 1024, mib: UInt64 = 1024 * 1024
        var ram: [Int: UInt8] = [:]
        func put16(_ low: Int, _ value: UInt64) {
            ram[low] = UInt8(truncatingIfNeeded: value)
            ram[low + 1] = UInt8(truncatingIfNeeded: value >> 8)
        }
        put16(0x15, min(belowFourGiB / kib, 640))
        let extended = belowFourGiB > mib ? min((belowFourGiB - mib) / kib, 65535) : 0
        put16(0x17, extended)
        put16(0x30, extended)
        let above16M = belowFourGiB > 16 * mib ? min((belowFourGiB - 16 * mib) / (64 * kib), 65535) : 0
        put16(0x34, above16M)
        let above4G = aboveFourGiB / (64 * kib)
        ram[0x5B] = UInt8(truncatingIfNeeded: above4G)
        ram[0x5C] = UInt8(truncatingIfNeeded: above4G >> 8)
        ram[0x5D] = UInt8(truncatingIfNeeded: above4G >> 16)
        ram[0x5F] = UInt8(truncatingIfNeeded: max(cpuCount, 1) - 1)
        ram[0x14] = 0x06
        ram[0x3D] = 0x12
        ram[0x38] = 0x30
        return ram
    }
}

extension CMOSRTC: DeviceStateSnapshotting {
    public func snapshot() -> State { state.withLock { $0 } }

    public func restore(_ snapshot: State) throws(DeviceStateError) {
        guard snapshot.cmos.count == 128 else {
            throw .layoutMismatch(device: "rtc", reason: "\(snapshot.cmos.count) CMOS bytes, not 128")
        }
        guard (0..<128).contains(snapshot.index) else {
            throw .invalidValue(device: "rtc", reason: "CMOS index \(snapshot.index) is outside 0-127")
        }
        state.update { s -> IRQ8Changes in
            defer { s = snapshot }
            return IRQ8Changes(levels: s.irqHigh == snapshot.irqHigh ? [] : [snapshot.irqHigh])
        }
    }
}
