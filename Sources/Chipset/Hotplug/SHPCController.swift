import PCI
import VMMBase

/// Offsets and bits of the Standard Hot-Plug Controller's working register set (SHPC 1.0,
/// chapter 4), as QEMU lays it out: 0x24 bytes of controller registers, then one 32-bit
/// logical slot register per slot. Facts, not policy.
public enum SHPCRegister {
    public static let baseOffset = 0x00
    public static let slotsAvailable33 = 0x04
    public static let slotsAvailable66 = 0x08
    /// Slot Configuration: Number of Slots (byte 0x0C), First Device Number (0x0D),
    /// Physical Slot Number with its up/down, MRL-sensor and button flags (word 0x0E).
    public static let numberOfSlots = 0x0C
    public static let firstDeviceNumber = 0x0D
    public static let physicalSlot = 0x0E
    public static let secondaryBusConfig = 0x10
    public static let msiControl = 0x12
    public static let programmingInterface = 0x13
    public static let commandCode = 0x14
    public static let commandTarget = 0x15
    public static let commandStatus = 0x16
    public static let interruptLocator = 0x18
    public static let serrLocator = 0x1C
    public static let serrInt = 0x20
    public static let firstSlot = 0x24

    public static func slot(_ index: Int) -> Int { firstSlot + 4 * index }

    // Physical Slot word flags.
    static let physicalSlotsNumberedUp: UInt16 = 0x2000
    static let physicalMRLSensor: UInt16 = 0x4000
    static let physicalAttentionButton: UInt16 = 0x8000
}

/// Command Status bits (word at 0x16).
public struct SHPCCommandStatus: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let busy = SHPCCommandStatus(rawValue: 1 << 0)
    public static let mrlOpen = SHPCCommandStatus(rawValue: 1 << 1)
    public static let invalidCommand = SHPCCommandStatus(rawValue: 1 << 2)
    public static let invalidSpeedMode = SHPCCommandStatus(rawValue: 1 << 3)
}

/// The SERR-INT register (dword at 0x20): global masks and controller events.
public struct SHPCSerrInt: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let globalInterruptMask = SHPCSerrInt(rawValue: 1 << 0)
    public static let globalSERRMask = SHPCSerrInt(rawValue: 1 << 1)
    public static let commandCompletionMask = SHPCSerrInt(rawValue: 1 << 2)
    public static let arbiterSERRMask = SHPCSerrInt(rawValue: 1 << 3)
    /// Command Completion Detected (write 1 to clear).
    public static let commandCompletionDetected = SHPCSerrInt(rawValue: 1 << 16)
    /// Arbiter Timeout Detected (write 1 to clear; never set here).
    public static let arbiterTimeoutDetected = SHPCSerrInt(rawValue: 1 << 17)
    public static let allMasks: SHPCSerrInt = [.globalInterruptMask, .globalSERRMask, .commandCompletionMask,
                                              .arbiterSERRMask]
}

/// Latched slot events (byte 2 of a slot register) and, with the two SERR bits, their masks
/// (byte 3).
public struct SHPCSlotEvents: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let presenceChanged = SHPCSlotEvents(rawValue: 1 << 0)
    public static let isolatedPowerFault = SHPCSlotEvents(rawValue: 1 << 1)
    public static let attentionButton = SHPCSlotEvents(rawValue: 1 << 2)
    public static let mrlSensorChanged = SHPCSlotEvents(rawValue: 1 << 3)
    public static let connectedPowerFault = SHPCSlotEvents(rawValue: 1 << 4)
    /// Mask byte only: MRL sensor and connected power fault SERR masks.
    public static let mrlSERRMask = SHPCSlotEvents(rawValue: 1 << 5)
    public static let connectedPowerFaultSERRMask = SHPCSlotEvents(rawValue: 1 << 6)

    public static let allEvents: SHPCSlotEvents = [.presenceChanged, .isolatedPowerFault, .attentionButton,
                                                  .mrlSensorChanged, .connectedPowerFault]
    public static let allMasks: SHPCSlotEvents = [.allEvents, .mrlSERRMask, .connectedPowerFaultSERRMask]
}

/// Slot State (slot register bits 1:0, and the state field of slot commands).
public enum SHPCSlotState: UInt8, Sendable, Hashable {
    case noChange = 0, poweredOnly = 1, enabled = 2, disabled = 3
}

/// Indicator states (slot register bits 3:2 power, 5:4 attention; same in slot commands).
public enum SHPCIndicator: UInt8, Sendable, Hashable {
    case noChange = 0, on = 1, blink = 2, off = 3
}

/// A Standard Hot-Plug Controller (SHPC 1.0) for the bus behind a bridge: the register set,
/// the commands, event latching and the interrupt level, as QEMU's model presents them to
/// Linux shpchp. A value type with no locks and no outputs: the bridge that owns it keeps it
/// under its lock, reads `interruptLevel` after each change and raises interrupts itself.
///
/// Slots are QEMU's: 31 slots, logical slot n (1...31) is device n on the secondary bus and
/// physical slot n; device 0 is not hot-pluggable.
public struct SHPCController: Sendable, Hashable, Codable {
    public static let maxSlots = 31
    /// The BAR that maps the register set: the power of two above 0x24 + 4 x 31 bytes.
    public static let barSize: UInt64 = 0x100

    /// Used in errors (the bridge's id).
    public let name: String
    public let slotCount: Int
    public var firstDevice: UInt8 { 1 }

    private var regs: [UInt8]
    private var writable: [UInt8]
    private var writeOneToClear: [UInt8]
    /// Size of the register set; reads beyond it return 0, writes are ignored.
    public var size: Int { regs.count }

    public init(name: String, slotCount: Int = SHPCController.maxSlots, occupiedDevices: Set<UInt8> = []) {
        precondition((1...Self.maxSlots).contains(slotCount), "SHPC has 1 to 31 slots")
        self.name = name
        self.slotCount = slotCount
        let size = SHPCRegister.slot(slotCount)
        regs = [UInt8](repeating: 0, count: size)
        writable = regs
        writeOneToClear = regs
        writable[SHPCRegister.commandCode] = 0xFF
        writable[SHPCRegister.commandTarget] = 0x1F
        store(SHPCSerrInt.allMasks.rawValue, into: &writable, at: SHPCRegister.serrInt, width: 4)
        store(SHPCSerrInt([.commandCompletionDetected, .arbiterTimeoutDetected]).rawValue,
              into: &writeOneToClear, at: SHPCRegister.serrInt, width: 4)
        for i in 0..<slotCount {
            writable[SHPCRegister.slot(i) + 3] = SHPCSlotEvents.allMasks.rawValue
            writeOneToClear[SHPCRegister.slot(i) + 2] = SHPCSlotEvents.allEvents.rawValue
        }
        reset(occupiedDevices: occupiedDevices)
    }

    /// Power-on state. Slots whose device is present (cold-plugged) come up enabled with the
    /// power indicator on; empty slots are disabled with the MRL open. Everything is masked.
    public mutating func reset(occupiedDevices: Set<UInt8>) {
        for i in regs.indices { regs[i] = 0 }
        store(UInt32(slotCount), at: SHPCRegister.slotsAvailable33, width: 4)
        regs[SHPCRegister.numberOfSlots] = UInt8(slotCount)
        regs[SHPCRegister.firstDeviceNumber] = firstDevice
        store(UInt32(1 | SHPCRegister.physicalSlotsNumberedUp | SHPCRegister.physicalMRLSensor
                     | SHPCRegister.physicalAttentionButton), at: SHPCRegister.physicalSlot, width: 2)
        regs[SHPCRegister.programmingInterface] = 0x01  // SHPC 1.0
        store(SHPCSerrInt.allMasks.rawValue, at: SHPCRegister.serrInt, width: 4)
        for i in 0..<slotCount {
            regs[SHPCRegister.slot(i) + 3] = SHPCSlotEvents.allMasks.rawValue
            if occupiedDevices.contains(device(ofSlot: i)) {
                setStatus(i, state: .enabled, power: .on, attention: .off, mrlOpen: false, present: true)
            } else {
                setStatus(i, state: .disabled, power: .off, attention: .off, mrlOpen: true, present: false)
            }
        }
        updateInterruptLocator()
    }

    // MARK: Guest access

    /// Reads `width` (1...4) bytes at `offset`; bytes outside the register set read as 0.
    public func read(_ offset: Int, width: Int) -> UInt32 {
        var value: UInt32 = 0
        for i in 0..<min(max(width, 0), 4) {
            let o = offset + i
            if o >= 0 && o < regs.count { value |= UInt32(regs[o]) << (8 * UInt32(i)) }
        }
        return value
    }

    /// A guest write of `width` (1...4) bytes at `offset`, any alignment. Each byte changes
    /// only where it is writable; latched events and Command Completion clear on one. A write
    /// touching the Command register runs the command. Returns what the machine must act on.
    @discardableResult
    public mutating func write(_ offset: Int, width: Int, value: UInt32) -> [HotPlugEvent] {
        var touchedCommand = false
        for i in 0..<min(max(width, 0), 4) {
            let o = offset + i
            guard o >= 0 && o < regs.count else { continue }
            let v = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i)))
            regs[o] = (regs[o] & ~writable[o]) | (v & writable[o])
            regs[o] &= ~(v & writeOneToClear[o])
            if o == SHPCRegister.commandCode || o == SHPCRegister.commandTarget { touchedCommand = true }
        }
        var events: [HotPlugEvent] = []
        if touchedCommand { events = runCommand() }
        updateInterruptLocator()
        return events
    }

    // MARK: Interrupts

    /// Interrupt Locator: bit 0 for a pending command completion, bit n for logical slot n
    /// with an unmasked latched event.
    public var interruptLocator: UInt32 { load(SHPCRegister.interruptLocator, width: 4) }

    public var serrInt: SHPCSerrInt { SHPCSerrInt(rawValue: load(SHPCRegister.serrInt, width: 4)) }

    /// True while the controller requests an interrupt: something is located and the global
    /// interrupt mask is clear.
    public var interruptLevel: Bool {
        interruptLocator != 0 && !serrInt.contains(.globalInterruptMask)
    }

    // MARK: Slots

    public var hotPlugDevices: [UInt8] { (0..<slotCount).map { device(ofSlot: $0) } }

    func device(ofSlot index: Int) -> UInt8 { UInt8(index) + firstDevice }

    func slotIndex(ofDevice device: UInt8) -> Int? {
        guard device >= firstDevice else { return nil }
        let index = Int(device - firstDevice)
        return index < slotCount ? index : nil
    }

    /// The decoded slot register of the slot for `device`.
    public func slot(device: UInt8) -> SHPCSlotSnapshot? {
        guard let i = slotIndex(ofDevice: device) else { return nil }
        let status = statusWord(i)
        return SHPCSlotSnapshot(
            state: SHPCSlotState(rawValue: UInt8(status & 3))!,
            powerIndicator: SHPCIndicator(rawValue: UInt8((status >> 2) & 3))!,
            attentionIndicator: SHPCIndicator(rawValue: UInt8((status >> 4) & 3))!,
            mrlOpen: status & SlotStatusBit.mrlOpen != 0,
            present: (status & SlotStatusBit.presenceMask) >> 10 != 3,
            latched: SHPCSlotEvents(rawValue: regs[SHPCRegister.slot(i) + 2]),
            masks: SHPCSlotEvents(rawValue: regs[SHPCRegister.slot(i) + 3]))
    }

    /// A device attached while the machine is built: its slot is as reset leaves an occupied
    /// one (enabled, powered, present, nothing latched).
    public mutating func coldPlug(device: UInt8) {
        guard let i = slotIndex(ofDevice: device) else { return }
        setStatus(i, state: .enabled, power: .on, attention: .off, mrlOpen: false, present: true)
        updateInterruptLocator()
    }

    /// A device was attached in the slot for `device` while the guest runs: the MRL closes,
    /// presence is detected, and Presence Detect Changed, MRL Sensor Changed and Attention
    /// Button Pressed are latched. The button is latched too because, as with QEMU, that is
    /// what makes shpchp power a slot up (a presence change alone only updates its records).
    public mutating func plug(device: UInt8) throws(HotPlugError) {
        guard let i = slotIndex(ofDevice: device) else { throw .noSuchSlot(controller: name, device: device) }
        if slot(device: device)?.present == true { throw .slotOccupied(controller: name, device: device) }
        var status = statusWord(i)
        status &= ~(SlotStatusBit.mrlOpen | SlotStatusBit.presenceMask | SlotStatusBit.m66)
        // PRSNT 00b: present, 7.5 W.
        setStatusWord(i, status)
        latch(i, [.presenceChanged, .mrlSensorChanged, .attentionButton])
        updateInterruptLocator()
    }

    /// Asks the guest to release the device in the slot for `device` by pressing the slot's
    /// attention button. A slot the guest already disabled with its power indicator off is
    /// emptied at once (returns `.ejected`). SHPC slots have no surprise removal.
    public mutating func requestUnplug(device: UInt8, mode: UnplugMode) throws(HotPlugError) -> [HotPlugEvent] {
        guard let i = slotIndex(ofDevice: device) else { throw .noSuchSlot(controller: name, device: device) }
        guard mode == .attentionButton else { throw .surpriseNotSupported(controller: name) }
        guard let snapshot = slot(device: device), snapshot.present else {
            throw .slotEmpty(controller: name, device: device)
        }
        if snapshot.powerIndicator == .blink { throw .unplugInProgress(controller: name, device: device) }
        var events: [HotPlugEvent] = []
        if snapshot.state == .disabled && snapshot.powerIndicator == .off {
            empty(i)
            events.append(.ejected(device: device))
        } else {
            latch(i, .attentionButton)
        }
        updateInterruptLocator()
        return events
    }

    // MARK: Commands

    private mutating func runCommand() -> [HotPlugEvent] {
        var status = SHPCCommandStatus(rawValue: UInt16(load(SHPCRegister.commandStatus, width: 2)))
        status.subtract([.busy, .mrlOpen, .invalidCommand, .invalidSpeedMode])
        let code = regs[SHPCRegister.commandCode]
        var events: [HotPlugEvent] = []
        switch code {
        case 0x00...0x3F:
            let target = regs[SHPCRegister.commandTarget] & 0x1F
            events = slotCommand(target: target, state: SHPCSlotState(rawValue: code & 3)!,
                                 power: SHPCIndicator(rawValue: (code >> 2) & 3)!,
                                 attention: SHPCIndicator(rawValue: (code >> 4) & 3)!, status: &status)
        case 0x40...0x47:
            // Set Bus Segment Speed/Mode: only conventional 33 MHz (0) is supported.
            if code & 0x7 == 0 {
                regs[SHPCRegister.secondaryBusConfig] &= ~0x7
            } else {
                status.insert(.invalidSpeedMode)
            }
        case 0x48, 0x49:
            // Power-Only All Slots / Enable All Slots: refused while any slot is enabled.
            if (0..<slotCount).contains(where: { statusWord($0) & 3 == UInt16(SHPCSlotState.enabled.rawValue) }) {
                status.insert(.invalidCommand)
                break
            }
            let target: SHPCSlotState = code == 0x48 ? .poweredOnly : .enabled
            for i in 0..<slotCount {
                let logical = UInt8(i + 1)
                if statusWord(i) & SlotStatusBit.mrlOpen == 0 {
                    events += slotCommand(target: logical, state: target, power: .on, attention: .noChange, status: &status)
                } else {
                    events += slotCommand(target: logical, state: .noChange, power: .off, attention: .noChange,
                                          status: &status)
                }
            }
        default:
            status.insert(.invalidCommand)
        }
        if !status.intersection([.invalidCommand, .invalidSpeedMode, .mrlOpen]).isEmpty {
            GuestErrorLog.report(device: name, kind: "command",
                                 "SHPC command 0x\(String(code, radix: 16)) refused (Command Status 0x\(String(status.rawValue, radix: 16)))")
        }
        store(UInt32(status.rawValue), at: SHPCRegister.commandStatus, width: 2)
        var serr = serrInt
        serr.insert(.commandCompletionDetected)
        store(serr.rawValue, at: SHPCRegister.serrInt, width: 4)
        return events
    }

    private mutating func slotCommand(target: UInt8, state: SHPCSlotState, power: SHPCIndicator,
                                      attention: SHPCIndicator, status: inout SHPCCommandStatus) -> [HotPlugEvent] {
        guard target >= 1, Int(target) <= slotCount else {
            status.insert(.invalidCommand)
            return []
        }
        let i = Int(target) - 1
        var word = statusWord(i)
        let current = SHPCSlotState(rawValue: UInt8(word & 3))!
        if current == .enabled && state == .poweredOnly {
            status.insert(.invalidCommand)
            return []
        }
        // A slot whose retention latch is open cannot be powered (SHPC 1.0, 4.1.6).
        if (state == .poweredOnly || state == .enabled) && word & SlotStatusBit.mrlOpen != 0 {
            status.insert(.mrlOpen)
            return []
        }
        if power != .noChange { word = (word & ~0x000C) | UInt16(power.rawValue) << 2 }
        if attention != .noChange { word = (word & ~0x0030) | UInt16(attention.rawValue) << 4 }
        if state != .noChange { word = (word & ~0x0003) | UInt16(state.rawValue) }
        setStatusWord(i, word)

        var events: [HotPlugEvent] = []
        let device = device(ofSlot: i)
        if state == .enabled && current != .enabled { events.append(.poweredOn(device: device)) }
        if (current == .enabled || current == .poweredOnly) && state == .disabled
            && SHPCIndicator(rawValue: UInt8((word >> 2) & 3)) == .off {
            // The guest has let go of the device: the slot empties and the machine detaches it.
            empty(i)
            events.append(.ejected(device: device))
        }
        return events
    }

    private mutating func empty(_ i: Int) {
        var word = statusWord(i)
        word |= SlotStatusBit.mrlOpen | SlotStatusBit.presenceMask
        word &= ~SlotStatusBit.m66
        setStatusWord(i, word)
        latch(i, [.mrlSensorChanged, .presenceChanged])
    }

    // MARK: Internals

    private enum SlotStatusBit {
        static let powerFault: UInt16 = 1 << 6
        static let attentionButton: UInt16 = 1 << 7
        static let mrlOpen: UInt16 = 1 << 8
        static let m66: UInt16 = 1 << 9
        /// PRSNT2#/PRSNT1#: 11b = empty, 00b = present (7.5 W).
        static let presenceMask: UInt16 = 0x3 << 10
    }

    private mutating func setStatus(_ i: Int, state: SHPCSlotState, power: SHPCIndicator, attention: SHPCIndicator,
                                    mrlOpen: Bool, present: Bool) {
        var word = UInt16(state.rawValue) | UInt16(power.rawValue) << 2 | UInt16(attention.rawValue) << 4
        if mrlOpen { word |= SlotStatusBit.mrlOpen }
        if !present { word |= SlotStatusBit.presenceMask }
        setStatusWord(i, word)
    }

    private func statusWord(_ i: Int) -> UInt16 { UInt16(load(SHPCRegister.slot(i), width: 2)) }
    private mutating func setStatusWord(_ i: Int, _ word: UInt16) {
        store(UInt32(word), at: SHPCRegister.slot(i), width: 2)
    }

    private mutating func latch(_ i: Int, _ events: SHPCSlotEvents) {
        regs[SHPCRegister.slot(i) + 2] |= events.rawValue
    }

    private mutating func updateInterruptLocator() {
        var locator: UInt32 = 0
        for i in 0..<slotCount {
            let latched = regs[SHPCRegister.slot(i) + 2] & SHPCSlotEvents.allEvents.rawValue
            if latched & ~regs[SHPCRegister.slot(i) + 3] != 0 { locator |= 1 << UInt32(i + 1) }
        }
        let serr = serrInt
        if serr.contains(.commandCompletionDetected) && !serr.contains(.commandCompletionMask) { locator |= 1 }
        store(locator, at: SHPCRegister.interruptLocator, width: 4)
    }

    private func load(_ offset: Int, width: Int) -> UInt32 {
        UInt32(truncatingIfNeeded: LittleEndian.load(regs, at: offset, count: width))
    }

    private mutating func store(_ value: UInt32, at offset: Int, width: Int) {
        LittleEndian.store(UInt64(value), into: &regs, at: offset, count: width)
    }

    private func store(_ value: UInt32, into array: inout [UInt8], at offset: Int, width: Int) {
        LittleEndian.store(UInt64(value), into: &array, at: offset, count: width)
    }
}

/// One slot's register, decoded.
public struct SHPCSlotSnapshot: Sendable, Hashable {
    public let state: SHPCSlotState
    public let powerIndicator: SHPCIndicator
    public let attentionIndicator: SHPCIndicator
    public let mrlOpen: Bool
    public let present: Bool
    public let latched: SHPCSlotEvents
    public let masks: SHPCSlotEvents
}
