import AddressSpace
import Interrupts
import Synchronization
import VMMBase

/// A minimal i8042 keyboard controller (ports 0x60 data, 0x64 status/command) with a PS/2
/// keyboard that answers commands but never types, following QEMU's hw/input/pckbd.c and
/// ps2.c: the controller commands Linux's i8042 driver and firmware use (read/write the
/// command byte, self-tests, port enable/disable, output port, A20, AUX loopback) and the
/// reset pulse (command 0xFE, any 0xF0-0xFF pulse with bit 0 clear, or an output-port write
/// with bit 0 clear), which becomes `PlatformEvent.resetRequested(.keyboardController)`.
///
/// There is no mouse: bytes written for the AUX device (command 0xD4) vanish, so a driver
/// probing for a mouse times out. Keyboard IRQ is ISA 1 (GSI 1), AUX IRQ 12 (GSI 12).
public final class I8042: IORegionHandler {
    public static let dataPort: UInt16 = 0x60
    public static let commandPort: UInt16 = 0x64
    public static let keyboardGSI = GSI(1)
    public static let auxGSI = GSI(12)

    public enum Status {
        public static let outputFull: UInt8 = 0x01, inputFull: UInt8 = 0x02, system: UInt8 = 0x04
        /// Last write was to the command port. QEMU sets it at reset and never clears it.
        public static let command: UInt8 = 0x08
        public static let unlocked: UInt8 = 0x10, auxOutputFull: UInt8 = 0x20
        public static let resetValue: UInt8 = command | unlocked
    }

    public enum Mode {
        public static let keyboardInterrupt: UInt8 = 0x01, auxInterrupt: UInt8 = 0x02, system: UInt8 = 0x04
        public static let disableKeyboard: UInt8 = 0x10, disableAux: UInt8 = 0x20, translate: UInt8 = 0x40
        public static let resetValue: UInt8 = keyboardInterrupt | auxInterrupt
    }

    public enum Command {
        public static let readMode: UInt8 = 0x20, writeMode: UInt8 = 0x60
        public static let disableAux: UInt8 = 0xA7, enableAux: UInt8 = 0xA8, testAux: UInt8 = 0xA9
        public static let selfTest: UInt8 = 0xAA, testKeyboard: UInt8 = 0xAB
        public static let disableKeyboard: UInt8 = 0xAD, enableKeyboard: UInt8 = 0xAE
        public static let readInputPort: UInt8 = 0xC0, readOutputPort: UInt8 = 0xD0, writeOutputPort: UInt8 = 0xD1
        public static let writeKeyboardOutput: UInt8 = 0xD2, writeAuxOutput: UInt8 = 0xD3, writeAux: UInt8 = 0xD4
        public static let disableA20: UInt8 = 0xDD, enableA20: UInt8 = 0xDF
        public static let pulseReset: UInt8 = 0xFE
    }

    /// Output port bits: system reset line (active low) and A20 gate, plus QEMU's reserved ones.
    public enum OutputPort {
        public static let reset: UInt8 = 0x01, a20: UInt8 = 0x02
        public static let resetValue: UInt8 = 0xCF
    }

    public static let selfTestPassed: UInt8 = 0x55

    /// A byte waiting for the guest; `aux` marks one from the AUX side.
    struct QueuedByte: Sendable, Hashable, Codable {
        var byte: UInt8
        var aux: Bool
    }

    /// The controller's registers, pending commands and output queue; also the snapshot.
    public struct State: Sendable, Hashable, Codable {
        var status = Status.resetValue
        var mode = Mode.resetValue
        var outputPort = OutputPort.resetValue
        /// A controller command waiting for its data byte.
        var pendingCommand: UInt8?
        /// A keyboard command waiting for its parameter byte.
        var keyboardParameterFor: UInt8?
        var scancodeSet: UInt8 = 2
        /// Bytes for the guest, oldest first.
        var output: [QueuedByte] = []
        var lastByte: UInt8 = 0
        var keyboardIRQ = false
        var auxIRQ = false
    }

    struct Effects: LineChangingEffects {
        var lineChanges: [(GSI, Bool)] = []
        var reset = false
    }

    /// The registers, and the two lines' changes in the order they were made.
    private let state: LineSourceState<State>
    private let events: any PlatformEventSink
    /// Output bytes kept at most (QEMU's PS/2 queue is 16 deep).
    static let queueLimit = 16

    public init(interrupts: any InterruptSink, events: any PlatformEventSink) {
        self.state = LineSourceState(State(), sink: interrupts)
        self.events = events
    }

    /// The handler for one port: `dataPort` or `commandPort`.
    public func port(_ port: UInt16) -> any IORegionHandler { Port(controller: self, isCommand: port == Self.commandPort) }

    // A single handler over 0x60-0x64 would also claim 0x61-0x63 (port B, which is not ours);
    // `Port` lets the two be mapped separately. Used directly, offset 0 is data and 4 status.
    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<UInt64(width.bytes) {
            let byte: UInt8 = switch offset &+ i {
            case 0: readData()
            case 4: readStatus()
            default: 0xFF
            }
            value |= UInt64(byte) << (8 * i)
        }
        return value
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        for i in 0..<UInt64(width.bytes) {
            let byte = UInt8(truncatingIfNeeded: value >> (8 * i))
            switch offset &+ i {
            case 0: writeData(byte)
            case 4: writeCommand(byte)
            default: break
            }
        }
    }

    public func readStatus() -> UInt8 { state.withLock { $0.status } }

    public func readData() -> UInt8 {
        var value: UInt8 = 0
        let fx = state.update { s -> Effects in
            var fx = Effects()
            if !s.output.isEmpty { s.lastByte = s.output.removeFirst().byte }
            value = s.lastByte
            Self.updateIRQ(&s, &fx)
            return fx
        }
        apply(fx)
        return value
    }

    public func writeCommand(_ command: UInt8) {
        let fx = state.update { s -> Effects in
            var fx = Effects()
            Self.command(&s, command, &fx)
            Self.updateIRQ(&s, &fx)
            return fx
        }
        apply(fx)
    }

    public func writeData(_ byte: UInt8) {
        let fx = state.update { s -> Effects in
            var fx = Effects()
            let command = s.pendingCommand
            s.pendingCommand = nil
            switch command {
            case Command.writeMode?:
                s.mode = byte
            case Command.writeOutputPort?:
                Self.writeOutputPort(&s, byte, &fx)
            case Command.writeKeyboardOutput?:
                Self.queue(&s, byte, aux: false)
            case Command.writeAuxOutput?:
                Self.queue(&s, byte, aux: true)
            case Command.writeAux?:
                break  // no mouse
            default:
                Self.keyboard(&s, byte)
            }
            Self.updateIRQ(&s, &fx)
            return fx
        }
        apply(fx)
    }

    /// Power-on state.
    public func reset() {
        let fx = state.update { s -> Effects in
            var fx = Effects()
            s = State(keyboardIRQ: s.keyboardIRQ, auxIRQ: s.auxIRQ)
            Self.updateIRQ(&s, &fx)
            return fx
        }
        apply(fx)
    }

    /// The A20 gate as the output port drives it.
    public var a20Enabled: Bool { state.withLock { $0.outputPort & OutputPort.a20 != 0 } }


    private func apply(_ fx: Effects) {
        if fx.reset { events.platformEvent(.resetRequested(.keyboardController)) }
    }

    // MARK: Semantics (under the lock)

    private static func command(_ s: inout State, _ command: UInt8, _ fx: inout Effects) {
        var command = command
        // 0xF0-0xFF pulse output-port bits 3:0 low; only bit 0 (reset) matters.
        if command & 0xF0 == 0xF0 {
            command = command & 1 == 0 ? Command.pulseReset : 0xFF
        }
        switch command {
        case Command.readMode: queue(&s, s.mode, aux: false)
        case Command.writeMode, Command.writeOutputPort, Command.writeKeyboardOutput,
             Command.writeAuxOutput, Command.writeAux:
            s.pendingCommand = command
        case Command.disableAux: s.mode |= Mode.disableAux
        case Command.enableAux: s.mode &= ~Mode.disableAux
        case Command.testAux, Command.testKeyboard: queue(&s, 0x00, aux: false)
        case Command.selfTest:
            s.status |= Status.system
            queue(&s, selfTestPassed, aux: false)
        case Command.disableKeyboard: s.mode |= Mode.disableKeyboard
        case Command.enableKeyboard: s.mode &= ~Mode.disableKeyboard
        case Command.readInputPort: queue(&s, 0x80, aux: false)
        case Command.readOutputPort: queue(&s, s.outputPort, aux: false)
        case Command.disableA20: s.outputPort &= ~OutputPort.a20
        case Command.enableA20: s.outputPort |= OutputPort.a20
        case Command.pulseReset: fx.reset = true
        default: break  // 0xFF is a no-op; unknown commands are ignored
        }
    }

    private static func writeOutputPort(_ s: inout State, _ value: UInt8, _ fx: inout Effects) {
        s.outputPort = value
        if value & OutputPort.reset == 0 { fx.reset = true }
    }

    /// The PS/2 keyboard's side of a byte written to the data port (QEMU's ps2.c replies).
    private static func keyboard(_ s: inout State, _ byte: UInt8) {
        let ack: UInt8 = 0xFA
        if let command = s.keyboardParameterFor {
            s.keyboardParameterFor = nil
            queue(&s, ack, aux: false)
            if command == 0xF0 {
                if byte == 0 { queue(&s, s.scancodeSet, aux: false) } else if (1...3).contains(byte) { s.scancodeSet = byte }
            }
            return
        }
        switch byte {
        case 0xED, 0xF0, 0xF3:  // LEDs, scancode set, typematic rate: a parameter follows
            s.keyboardParameterFor = byte
            queue(&s, ack, aux: false)
        case 0xEE: queue(&s, 0xEE, aux: false)  // echo
        case 0xF2:  // identify: MF2 keyboard, 0x41 when the controller translates
            queue(&s, ack, aux: false)
            queue(&s, 0xAB, aux: false)
            queue(&s, s.mode & Mode.translate != 0 ? 0x41 : 0x83, aux: false)
        case 0xF4, 0xF5, 0xF6: queue(&s, ack, aux: false)
        case 0xFF:  // reset and self-test passed
            s.scancodeSet = 2
            queue(&s, ack, aux: false)
            queue(&s, 0xAA, aux: false)
        default: queue(&s, 0xFE, aux: false)  // resend
        }
    }

    private static func queue(_ s: inout State, _ byte: UInt8, aux: Bool) {
        if s.output.count < queueLimit { s.output.append(QueuedByte(byte: byte, aux: aux)) }
    }

    private static func updateIRQ(_ s: inout State, _ fx: inout Effects) {
        var keyboard = false, aux = false
        s.status &= ~(Status.outputFull | Status.auxOutputFull)
        if let next = s.output.first {
            s.status |= Status.outputFull
            if next.aux {
                s.status |= Status.auxOutputFull
                aux = s.mode & Mode.auxInterrupt != 0
            } else {
                keyboard = s.mode & Mode.keyboardInterrupt != 0 && s.mode & Mode.disableKeyboard == 0
            }
        }
        if keyboard != s.keyboardIRQ {
            s.keyboardIRQ = keyboard
            fx.lineChanges.append((I8042.keyboardGSI, keyboard))
        }
        if aux != s.auxIRQ {
            s.auxIRQ = aux
            fx.lineChanges.append((I8042.auxGSI, aux))
        }
    }

    /// One of the controller's two ports as a region handler.
    final class Port: IORegionHandler {
        let controller: I8042
        let isCommand: Bool
        init(controller: I8042, isCommand: Bool) {
            self.controller = controller
            self.isCommand = isCommand
        }
        func read(offset: UInt64, width: AccessWidth) -> UInt64 {
            controller.read(offset: offset == 0 ? (isCommand ? 4 : 0) : 8, width: .byte)
                | (width == .byte ? 0 : width.allOnes & ~0xFF)
        }
        func write(offset: UInt64, width: AccessWidth, value: UInt64) {
            guard offset == 0 else { return }
            controller.write(offset: isCommand ? 4 : 0, width: .byte, value: value & 0xFF)
        }
    }
}

/// The ICH9 reset control register RST_CNT at 0xCF9: writing RST_CPU (bit 2) resets
/// (SYS_RST, bit 1, asks for a hard reset); otherwise SYS_RST and FULL_RST (bit 3) are kept
/// and read back (QEMU's lpc_ich9.c).
public final class ResetControlRegister: IORegionHandler {
    public static let port: UInt16 = 0xCF9
    public static let resetCPU: UInt8 = 0x04, systemReset: UInt8 = 0x02, fullReset: UInt8 = 0x08

    private let value = Mutex<UInt8>(0)
    private let events: any PlatformEventSink

    public init(events: any PlatformEventSink) { self.events = events }

    public var register: UInt8 { value.withLock { $0 } }

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        UInt64(value.withLock { $0 }) | (width == .byte ? 0 : width.allOnes & ~0xFF)
    }

    public func write(offset: UInt64, width: AccessWidth, value written: UInt64) {
        guard offset == 0 else { return }
        let byte = UInt8(truncatingIfNeeded: written)
        if byte & Self.resetCPU != 0 {
            events.platformEvent(.resetRequested(.resetControl(full: byte & Self.systemReset != 0)))
            return
        }
        value.withLock { $0 = byte & (Self.systemReset | Self.fullReset) }
    }

    public func reset() { value.withLock { $0 = 0 } }
}

/// Ports 0xCF8-0xCFB: CONFIG_ADDRESS, except that a byte access to 0xCF9 reaches RST_CNT
/// (the ICH9 decodes it with priority; CONFIG_ADDRESS only latches dword writes at 0xCF8).
public final class ConfigAddressAndResetControl: IORegionHandler {
    public let configAddress: ConfigAddressPort
    public let resetControl: ResetControlRegister

    public init(configAddress: ConfigAddressPort, resetControl: ResetControlRegister) {
        self.configAddress = configAddress
        self.resetControl = resetControl
    }

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        offset == 1 && width == .byte ? resetControl.read(offset: 0, width: .byte) : configAddress.read(offset: offset, width: width)
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        if offset == 1 && width == .byte {
            resetControl.write(offset: 0, width: .byte, value: value)
        } else {
            configAddress.write(offset: offset, width: width, value: value)
        }
    }
}

extension I8042: DeviceStateSnapshotting {
    public func snapshot() -> State { state.withLock { $0 } }

    /// The interrupt lines follow the restored queue and mode.
    public func restore(_ snapshot: State) throws(DeviceStateError) {
        guard snapshot.output.count <= Self.queueLimit else {
            throw .invalidValue(device: "i8042", reason: "\(snapshot.output.count) queued bytes, more than \(Self.queueLimit)")
        }
        let fx = state.update { s -> Effects in
            var fx = Effects()
            var restored = snapshot
            (restored.keyboardIRQ, restored.auxIRQ) = (s.keyboardIRQ, s.auxIRQ)
            s = restored
            Self.updateIRQ(&s, &fx)
            return fx
        }
        apply(fx)
    }
}
