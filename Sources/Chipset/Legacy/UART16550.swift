import AddressSpace
import Interrupts
import Synchronization
import VMMBase

/// Where a UART's transmitted bytes go (stdout, a file, a socket). Called without the UART's
/// lock held. Bytes from the outside world come in through `UART16550.receive(_:)`.
public protocol SerialBackend: AnyObject, Sendable {
    func transmit(_ bytes: [UInt8])
}

/// A backend that keeps what the guest transmitted (tests, the qtest server).
public final class CaptureSerialBackend: SerialBackend {
    private let captured = Mutex<[UInt8]>([])
    public init() {}
    public func transmit(_ bytes: [UInt8]) { captured.withLock { $0 += bytes } }
    public var bytes: [UInt8] { captured.withLock { $0 } }
    public var text: String { String(decoding: bytes, as: UTF8.self) }
    public func clear() { captured.withLock { $0.removeAll() } }
}

/// A backend that drops everything (QEMU's `-serial null`).
public final class NullSerialBackend: SerialBackend {
    public init() {}
    public func transmit(_ bytes: [UInt8]) {}
}

/// An NS16550A UART as QEMU's hw/char/serial.c behaves: eight byte registers (wider accesses
/// are split into byte accesses, as the ISA bus does), 16-byte receive FIFO with trigger
/// levels 1/4/8/14, transmission that completes at once (THR empty again before the next
/// guest instruction, with the THRE interrupt), loopback through MCR bit 4, and the
/// interrupt priorities RLS > RX timeout > RX data > THRE > modem status.
///
/// The interrupt output is an ISA line (COM1: IRQ 4 = GSI 4): every raise and lower is
/// delivered, so an edge-triggered IOAPIC input sees the same edges QEMU produces.
public final class UART16550: IORegionHandler {
    public static let com1Base: UInt16 = 0x3F8
    public static let com1GSI = GSI(4)
    public static let com2Base: UInt16 = 0x2F8
    public static let com2GSI = GSI(3)
    public static let registerCount: UInt64 = 8
    public static let fifoSize = 16

    /// Register offsets (DLAB = LCR bit 7 selects the divisor latch at 0 and 1).
    public enum Register {
        public static let data = 0, ier = 1, iirFCR = 2, lcr = 3, mcr = 4, lsr = 5, msr = 6, scratch = 7
    }

    public enum LSR {
        public static let dataReady: UInt8 = 0x01, overrun: UInt8 = 0x02, parityError: UInt8 = 0x04
        public static let framingError: UInt8 = 0x08, breakInterrupt: UInt8 = 0x10
        public static let thrEmpty: UInt8 = 0x20, transmitterEmpty: UInt8 = 0x40
        /// Line status conditions that raise the RLS interrupt.
        public static let errors: UInt8 = 0x1E
    }

    public enum IER {
        public static let receivedData: UInt8 = 0x01, thrEmpty: UInt8 = 0x02
        public static let lineStatus: UInt8 = 0x04, modemStatus: UInt8 = 0x08
    }

    public enum IIR {
        public static let noInterrupt: UInt8 = 0x01, modemStatus: UInt8 = 0x00, thrEmpty: UInt8 = 0x02
        public static let receivedData: UInt8 = 0x04, lineStatus: UInt8 = 0x06, timeout: UInt8 = 0x0C
        public static let fifosEnabled: UInt8 = 0xC0
    }

    public enum FCR {
        public static let enable: UInt8 = 0x01, clearReceive: UInt8 = 0x02, clearTransmit: UInt8 = 0x04
    }

    public enum MCR {
        public static let dtr: UInt8 = 0x01, rts: UInt8 = 0x02, out1: UInt8 = 0x04, out2: UInt8 = 0x08
        public static let loopback: UInt8 = 0x10
    }

    public enum MSR {
        public static let anyDelta: UInt8 = 0x0F
        public static let cts: UInt8 = 0x10, dsr: UInt8 = 0x20, ri: UInt8 = 0x40, dcd: UInt8 = 0x80
    }

    /// The guest-visible registers and FIFO; also the snapshot (deadlines are host clock times).
    public struct State: Sendable, Hashable, Codable {
        var rbr: UInt8 = 0
        var ier: UInt8 = 0
        var iir: UInt8 = IIR.noInterrupt
        var fcr: UInt8 = 0
        var lcr: UInt8 = 0
        var mcr: UInt8 = MCR.out2
        var lsr: UInt8 = LSR.thrEmpty | LSR.transmitterEmpty
        /// No modem behind the port: carrier, data set ready and clear to send asserted.
        var msr: UInt8 = MSR.dcd | MSR.dsr | MSR.cts
        var scratch: UInt8 = 0
        /// 115200 / 12 = 9600 baud, as QEMU resets it.
        var divisor: UInt16 = 0x0C
        var rxFIFO: [UInt8] = []
        var rxTrigger = 1
        var thrPending = false
        var timeoutPending = false
        /// When the receive FIFO's character timeout fires (monotonic ns), if armed.
        var timeoutDeadline: UInt64?
        var irqHigh = false
    }

    /// Side effects collected under the lock, applied after it is released.
    struct Effects: LineChangingEffects {
        let gsi: GSI
        var levels: [Bool] = []
        var output: [UInt8] = []
        var lineChanges: [(GSI, Bool)] { levels.map { (gsi, $0) } }
    }

    public let name: String
    public let gsi: GSI
    /// The registers, and the interrupt line's changes in the order they were made.
    private let state: LineSourceState<State>
    private let backend: any SerialBackend
    private let clock: any PlatformClock

    public init(name: String = "serial0", gsi: GSI = UART16550.com1GSI, interrupts: any InterruptSink,
                backend: any SerialBackend, clock: any PlatformClock) {
        self.name = name
        self.gsi = gsi
        self.state = LineSourceState(State(), sink: interrupts)
        self.backend = backend
        self.clock = clock
    }

    // MARK: IORegionHandler

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        var value: UInt64 = 0
        let now = clock.monotonicNanoseconds()
        let effects = state.update { s -> Effects in
            var fx = Effects(gsi: gsi)
            for i in 0..<UInt64(width.bytes) where offset &+ i < Self.registerCount {
                value |= UInt64(Self.readRegister(&s, Int(offset + i), now: now, &fx)) << (8 * i)
            }
            return fx
        }
        apply(effects)
        // Bytes beyond the eight registers (a wide access at the top) read as nothing decoded.
        for i in 0..<UInt64(width.bytes) where offset &+ i >= Self.registerCount { value |= 0xFF << (8 * i) }
        return value
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        let now = clock.monotonicNanoseconds()
        let effects = state.update { s -> Effects in
            var fx = Effects(gsi: gsi)
            for i in 0..<UInt64(width.bytes) where offset &+ i < Self.registerCount {
                Self.writeRegister(&s, Int(offset + i), UInt8(truncatingIfNeeded: value >> (8 * i)), now: now, &fx)
            }
            return fx
        }
        apply(effects)
    }

    // MARK: The outside world

    /// Bytes from the backend (keyboard input, a socket). Takes as many as the receiver can
    /// hold without overrun (the FIFO's free space, or one byte with the FIFO off and RBR
    /// empty) and returns how many it took.
    @discardableResult
    public func receive(_ bytes: [UInt8]) -> Int {
        guard !bytes.isEmpty else { return 0 }
        let now = clock.monotonicNanoseconds()
        var taken = 0
        let effects = state.update { s -> Effects in
            var fx = Effects(gsi: gsi)
            // In loopback the receiver hears only the transmitter.
            guard s.mcr & MCR.loopback == 0 else { return fx }
            let room = s.fcr & FCR.enable != 0 ? Self.fifoSize - s.rxFIFO.count : (s.lsr & LSR.dataReady == 0 ? 1 : 0)
            taken = min(room, bytes.count)
            if taken > 0 { Self.receiveBytes(&s, Array(bytes.prefix(taken)), now: now, &fx) }
            return fx
        }
        apply(effects)
        return taken
    }

    /// How many bytes `receive` would take now.
    public var receiveCapacity: Int {
        state.withLock { s in
            guard s.mcr & MCR.loopback == 0 else { return 0 }
            return s.fcr & FCR.enable != 0 ? Self.fifoSize - s.rxFIFO.count : (s.lsr & LSR.dataReady == 0 ? 1 : 0)
        }
    }

    /// Fires the receive FIFO's character timeout if its time has come: the machine calls
    /// this from its timer loop (accesses check it too). QEMU fires it four character
    /// times after the last byte arrived or was read.
    public func serviceTimers() {
        let now = clock.monotonicNanoseconds()
        let effects = state.update { s -> Effects in
            var fx = Effects(gsi: gsi)
            Self.checkTimeout(&s, now: now, &fx)
            return fx
        }
        apply(effects)
    }

    /// The next time `serviceTimers` has work, if any.
    public var nextTimerDeadline: UInt64? { state.withLock { $0.timeoutDeadline } }

    /// Power-on state (keeps the backend).
    public func reset() {
        let effects = state.update { s -> Effects in
            var fx = Effects(gsi: gsi)
            let wasHigh = s.irqHigh
            s = State()
            if wasHigh { fx.levels.append(false) }
            return fx
        }
        apply(effects)
    }

    /// The interrupt line's level as last driven.
    public var interruptAsserted: Bool { state.withLock { $0.irqHigh } }
    /// Baud rate divisor (DLL/DLM).
    public var divisor: UInt16 { state.withLock { $0.divisor } }

    private func apply(_ fx: Effects) {
        if !fx.output.isEmpty { backend.transmit(fx.output) }
    }

    // MARK: Register semantics (all under the lock)

    private static func readRegister(_ s: inout State, _ register: Int, now: UInt64, _ fx: inout Effects) -> UInt8 {
        checkTimeout(&s, now: now, &fx)
        switch register {
        case Register.data:
            if s.lcr & 0x80 != 0 { return UInt8(truncatingIfNeeded: s.divisor) }
            var value: UInt8
            if s.fcr & FCR.enable != 0 {
                value = s.rxFIFO.isEmpty ? 0 : s.rxFIFO.removeFirst()
                if s.rxFIFO.isEmpty {
                    s.lsr &= ~(LSR.dataReady | LSR.breakInterrupt)
                    s.timeoutDeadline = nil
                } else {
                    s.timeoutDeadline = now &+ 4 * characterTime(s)
                }
                s.timeoutPending = false
            } else {
                value = s.rbr
                s.lsr &= ~(LSR.dataReady | LSR.breakInterrupt)
            }
            updateIRQ(&s, &fx)
            return value
        case Register.ier:
            return s.lcr & 0x80 != 0 ? UInt8(truncatingIfNeeded: s.divisor >> 8) : s.ier
        case Register.iirFCR:
            let value = s.iir
            if value & 0x07 == IIR.thrEmpty {
                s.thrPending = false
                updateIRQ(&s, &fx)
            }
            return value
        case Register.lcr:
            return s.lcr
        case Register.mcr:
            return s.mcr
        case Register.lsr:
            let value = s.lsr
            if s.lsr & (LSR.breakInterrupt | LSR.overrun) != 0 {
                s.lsr &= ~(LSR.breakInterrupt | LSR.overrun)
                updateIRQ(&s, &fx)
            }
            return value
        case Register.msr:
            if s.mcr & MCR.loopback != 0 {
                // Outputs looped to inputs: OUT2 -> DCD, OUT1 -> RI, RTS -> CTS, DTR -> DSR.
                return (s.mcr & 0x0C) << 4 | (s.mcr & MCR.rts) << 3 | (s.mcr & MCR.dtr) << 5
            }
            let value = s.msr
            if s.msr & MSR.anyDelta != 0 {
                s.msr &= 0xF0
                updateIRQ(&s, &fx)
            }
            return value
        default:
            return s.scratch
        }
    }

    private static func writeRegister(_ s: inout State, _ register: Int, _ value: UInt8, now: UInt64, _ fx: inout Effects) {
        checkTimeout(&s, now: now, &fx)
        switch register {
        case Register.data:
            if s.lcr & 0x80 != 0 {
                s.divisor = s.divisor & 0xFF00 | UInt16(value)
                return
            }
            s.thrPending = false
            s.lsr &= ~(LSR.thrEmpty | LSR.transmitterEmpty)
            updateIRQ(&s, &fx)
            // The shift register takes the byte at once; THR is empty again.
            s.lsr |= LSR.thrEmpty
            if !s.thrPending {
                s.thrPending = true
                updateIRQ(&s, &fx)
            }
            if s.mcr & MCR.loopback != 0 {
                receiveBytes(&s, [value], now: now, &fx)
            } else {
                fx.output.append(value)
            }
            s.lsr |= LSR.transmitterEmpty
        case Register.ier:
            if s.lcr & 0x80 != 0 {
                s.divisor = s.divisor & 0x00FF | UInt16(value) << 8
                return
            }
            let changed = (s.ier ^ value) & 0x0F
            s.ier = value & 0x0F
            // Enabling THRI with THR empty raises the interrupt again (QEMU, after Bochs:
            // Windows relies on it).
            if changed & IER.thrEmpty != 0 {
                s.thrPending = s.ier & IER.thrEmpty != 0 && s.lsr & LSR.thrEmpty != 0
            }
            if changed != 0 { updateIRQ(&s, &fx) }
        case Register.iirFCR:
            var value = value
            // Toggling the FIFO enable flushes both FIFOs.
            if (value ^ s.fcr) & FCR.enable != 0 { value |= FCR.clearReceive | FCR.clearTransmit }
            if value & FCR.clearReceive != 0 {
                s.lsr &= ~(LSR.dataReady | LSR.breakInterrupt)
                s.timeoutDeadline = nil
                s.timeoutPending = false
                s.rxFIFO.removeAll()
            }
            if value & FCR.clearTransmit != 0 {
                s.lsr |= LSR.thrEmpty
                s.thrPending = true
            }
            s.fcr = value & 0xC9
            if s.fcr & FCR.enable != 0 {
                s.iir |= IIR.fifosEnabled
                s.rxTrigger = [1, 4, 8, 14][Int(s.fcr >> 6)]
            } else {
                s.iir &= ~IIR.fifosEnabled
            }
            updateIRQ(&s, &fx)
        case Register.lcr:
            s.lcr = value
        case Register.mcr:
            s.mcr = value & 0x1F
        case Register.lsr, Register.msr:
            break  // read-only
        default:
            s.scratch = value
        }
    }

    private static func receiveBytes(_ s: inout State, _ bytes: [UInt8], now: UInt64, _ fx: inout Effects) {
        if s.fcr & FCR.enable != 0 {
            for byte in bytes {
                if s.rxFIFO.count >= fifoSize { s.lsr |= LSR.overrun } else { s.rxFIFO.append(byte) }
            }
            s.lsr |= LSR.dataReady
            s.timeoutDeadline = now &+ 4 * characterTime(s)
        } else {
            for byte in bytes {
                if s.lsr & LSR.dataReady != 0 { s.lsr |= LSR.overrun }
                s.rbr = byte
                s.lsr |= LSR.dataReady
            }
        }
        updateIRQ(&s, &fx)
    }

    private static func checkTimeout(_ s: inout State, now: UInt64, _ fx: inout Effects) {
        guard let deadline = s.timeoutDeadline, now >= deadline else { return }
        s.timeoutDeadline = nil
        if !s.rxFIFO.isEmpty {
            s.timeoutPending = true
            updateIRQ(&s, &fx)
        }
    }

    /// One character's time on the line in ns: start bit, 5-8 data bits, parity, 1-2 stop
    /// bits, at 115200 / divisor baud (a zero divisor counts as 1).
    static func characterTime(_ s: State) -> UInt64 {
        let dataBits = UInt64(s.lcr & 0x03) + 5
        let parity: UInt64 = s.lcr & 0x08 != 0 ? 1 : 0
        let stop: UInt64 = s.lcr & 0x04 != 0 ? 2 : 1
        let bits = 1 + dataBits + parity + stop
        return bits * UInt64(max(s.divisor, 1)) * 1_000_000_000 / 115_200
    }

    private static func updateIRQ(_ s: inout State, _ fx: inout Effects) {
        var cause = IIR.noInterrupt
        if s.ier & IER.lineStatus != 0 && s.lsr & LSR.errors != 0 {
            cause = IIR.lineStatus
        } else if s.ier & IER.receivedData != 0 && s.timeoutPending {
            cause = IIR.timeout
        } else if s.ier & IER.receivedData != 0 && s.lsr & LSR.dataReady != 0
                    && (s.fcr & FCR.enable == 0 || s.rxFIFO.count >= s.rxTrigger) {
            cause = IIR.receivedData
        } else if s.ier & IER.thrEmpty != 0 && s.thrPending {
            cause = IIR.thrEmpty
        } else if s.ier & IER.modemStatus != 0 && s.msr & MSR.anyDelta != 0 {
            cause = IIR.modemStatus
        }
        s.iir = cause | (s.iir & 0xF0)
        let high = cause != IIR.noInterrupt
        if high != s.irqHigh {
            s.irqHigh = high
            fx.levels.append(high)
        }
    }
}

extension UART16550: DeviceStateSnapshotting {
    public func snapshot() -> State { state.withLock { $0 } }

    public func restore(_ snapshot: State) throws(DeviceStateError) {
        guard snapshot.rxFIFO.count <= Self.fifoSize else {
            throw .invalidValue(device: name, reason: "\(snapshot.rxFIFO.count) bytes in a \(Self.fifoSize)-byte receive FIFO")
        }
        guard [1, 4, 8, 14].contains(snapshot.rxTrigger) else {
            throw .invalidValue(device: name, reason: "receive trigger level \(snapshot.rxTrigger) is not 1, 4, 8 or 14")
        }
        let fx = state.update { s -> Effects in
            defer { s = snapshot }
            return s.irqHigh == snapshot.irqHigh ? Effects(gsi: gsi) : Effects(gsi: gsi, levels: [snapshot.irqHigh])
        }
        apply(fx)
    }
}
