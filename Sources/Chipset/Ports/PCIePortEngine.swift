import PCI
import Synchronization
import VMMBase

/// What a port does to its interrupt output, decided under the lock and done after it.
enum PortInterruptAction: Sendable, Hashable {
    case message(MSIMessage)
    case intx(Bool)
}

/// The machinery shared by every PCI Express port model: the config space, the optional
/// slot controller, the MSI-X table, and the interrupt logic, behind one lock. Port classes
/// are thin: they pick a `PCIePortLayout` and forward to this.
public final class PCIePortEngine: Sendable {
    public let name: String
    public let secondary: PCIBus

    struct State: Sendable {
        var config: ConfigSpace
        var slot: PCIeSlotController?
        var msix: MSIXTable?
        /// The OR of enabled hot-plug events, as last evaluated (for edge detection).
        var level = false
        var intxAsserted = false
        var events: [HotPlugEvent] = []
    }

    private let state: Mutex<State>
    private let output = Mutex<any PCIInterruptOutput>(DisconnectedInterrupts())

    public init(name: String, layout: PCIePortLayout) throws(ConfigSpaceError) {
        self.name = name
        var config = try layout.makeConfigSpace()
        config.captureResetState()
        var slot: PCIeSlotController?
        if let options = layout.slot {
            slot = PCIeSlotController(features: options.features, reportsLinkActive: layout.reportsLinkActive)
        }
        let msix: MSIXTable? = if case .msixExclusiveBAR = layout.messages { MSIXTable(layout: PCIePortLayout.msixLayout) } else { nil }
        state = Mutex(State(config: config, slot: slot, msix: msix))
        secondary = PCIBus(name: name)
    }

    // MARK: PCIFunction

    public var busNumbers: BridgeBusNumbers { state.withLock { $0.config.busNumbers } }

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { $0.config.read(offset, width: width) }
    }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        let (effects, actions, resetBehind) = state.withLock { s -> (ConfigWriteEffects, [PortInterruptAction], Bool) in
            let controlBefore = s.config.pciExpressSlotState?.control ?? []
            let effects = s.config.write(offset, width: width, value: value)
            var actions: [PortInterruptAction] = []
            if effects.contains(.functionLevelReset) {
                resetLocked(&s)
                actions += evaluate(&s)
                return (effects, actions, true)
            }
            if effects.contains(.slotControlWritten), var slot = s.slot {
                let interlock = Self.writeSetsInterlockControl(s.config, offset: offset, width: width, value: value)
                s.events += slot.slotControlWritten(&s.config, before: controlBefore, interlockToggled: interlock)
                s.slot = slot
            }
            if effects.contains(.msiChanged) {
                actions += s.config.takeUnmaskedPendingMSI().map(PortInterruptAction.message)
            }
            if effects.contains(.msixChanged), let control = s.config.msixControl, var table = s.msix {
                actions += table.deliverPending(control: control).map { .message($0.message) }
                s.msix = table
            }
            actions += evaluate(&s)
            let sbr = effects.contains(.bridgeControlChanged) && s.config.bridgeControl.contains(.secondaryBusReset)
            return (effects, actions, sbr)
        }
        deliver(actions)
        // Secondary bus reset (or FLR of the port) resets everything behind the port.
        if resetBehind { for (_, function) in secondary.functions { function.reset() } }
        return effects
    }

    public func configSnapshot() -> ConfigSpace { state.withLock { $0.config } }

    /// Sets the Header Type multi-function bit (for `multifunction=on` at placement); it
    /// survives resets, as the header type is fixed by the hardware.
    public func setMultiFunction() {
        state.withLock { s in
            s.config.setMultiFunction(true)
            s.config.captureResetState()
        }
    }

    public func reset() {
        let actions = state.withLock { s -> [PortInterruptAction] in
            resetLocked(&s)
            return evaluate(&s)
        }
        deliver(actions)
        for (_, function) in secondary.functions { function.reset() }
    }

    private func resetLocked(_ s: inout State) {
        s.config.reset()
        s.msix?.reset()
        if var slot = s.slot {
            slot.afterReset(&s.config)
            s.slot = slot
        }
        s.level = false
    }

    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 {
        state.withLock { s in s.msix?.read(bar: index, offset: offset, width: width) } ?? width.allOnes
    }

    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        let actions = state.withLock { s -> [PortInterruptAction] in
            guard var table = s.msix, let control = s.config.msixControl else { return [] }
            let result = table.write(bar: index, offset: offset, width: width, value: value, control: control)
            s.msix = table
            if case .vectorUnmasked(_, let message?) = result { return [.message(message)] }
            return []
        }
        deliver(actions)
    }

    public func connect(interrupts: any PCIInterruptOutput) {
        output.withLock { $0 = interrupts }
    }

    // MARK: Hot-plug

    public var hotPlugSlots: [UInt8] {
        state.withLock { ($0.slot?.isHotPlugCapable ?? false) ? [PCIeSlotController.slotDevice] : [] }
    }

    public func plug(device: UInt8) throws(HotPlugError) {
        let actions = try state.withLock { (s: inout State) throws(HotPlugError) -> [PortInterruptAction] in
            guard device == PCIeSlotController.slotDevice, var slot = s.slot else {
                throw .noSuchSlot(controller: name, device: device)
            }
            try slot.plug(&s.config, controller: name)
            s.slot = slot
            return evaluate(&s)
        }
        deliver(actions)
    }

    public func requestUnplug(device: UInt8, mode: UnplugMode) throws(HotPlugError) {
        let actions = try state.withLock { (s: inout State) throws(HotPlugError) -> [PortInterruptAction] in
            guard device == PCIeSlotController.slotDevice, var slot = s.slot else {
                throw .noSuchSlot(controller: name, device: device)
            }
            s.events += try slot.requestUnplug(&s.config, mode: mode, controller: name)
            s.slot = slot
            return evaluate(&s)
        }
        deliver(actions)
    }

    public func takeEvents() -> [HotPlugEvent] {
        state.withLock { s in
            defer { s.events.removeAll() }
            return s.events
        }
    }

    /// Switches the slot's power controller on without a Slot Control command (no Command
    /// Completed): what QEMU does when ACPI hot-plug puts a device below the port.
    public func powerSlotOn() {
        state.withLock { s in
            guard let slot = s.slot, slot.features.contains(.powerController),
                  let base = s.config.pciExpressOffset else { return }
            s.config.setBits(base + PCIExpressRegister.slotControl, width: 2,
                             UInt64(PCIExpressSlotControl.powerControllerOff.rawValue), to: false)
        }
    }

    /// The slot controller's bookkeeping, for monitors and tests.
    public var slotController: PCIeSlotController? { state.withLock { $0.slot } }

    // MARK: Interrupts

    /// PCIe Base 6.7.3.4: MSI or MSI-X on a 0 -> 1 edge of the pending condition; INTx
    /// follows the condition's level while both MSI and MSI-X are disabled.
    private func evaluate(_ s: inout State) -> [PortInterruptAction] {
        let level = s.slot?.interruptPending(s.config) ?? false
        var actions: [PortInterruptAction] = []
        let msixControl = s.config.msixControl
        let msixOn = msixControl?.enabled ?? false
        let msiOn = s.config.msiState?.enabled ?? false
        if level && !s.level {
            if let control = msixControl, msixOn, var table = s.msix {
                if case .deliver(let message) = table.fire(0, control: control) { actions.append(.message(message)) }
                s.msix = table
            } else if msiOn, let message = s.config.signalMSI(0) {
                actions.append(.message(message))
            }
        }
        s.level = level
        let status = level && !msiOn && !msixOn && s.config.interruptPin != 0
        s.config.setInterruptStatus(status)
        let line = status && !s.config.command.contains(.intxDisable)
        if line != s.intxAsserted {
            s.intxAsserted = line
            actions.append(.intx(line))
        }
        return actions
    }

    private func deliver(_ actions: [PortInterruptAction]) {
        guard !actions.isEmpty else { return }
        let out = output.withLock { $0 }
        for action in actions {
            switch action {
            case .message(let message): out.signal(message)
            case .intx(let level): out.setINTx(level)
            }
        }
    }

    /// Electromechanical Interlock Control (Slot Control bit 11) always reads 0, so the
    /// command is taken from the written value.
    private static func writeSetsInterlockControl(_ config: ConfigSpace, offset: Int, width: AccessWidth,
                                                 value: UInt32) -> Bool {
        guard let base = config.pciExpressOffset else { return false }
        let target = base + PCIExpressRegister.slotControl + 1
        let index = target - offset
        guard index >= 0, index < min(width.bytes, 4) else { return false }
        return (value >> (8 * UInt32(index))) & 0x08 != 0
    }
}

/// A PCI Express port: a bridge function whose behaviour lives in a `PCIePortEngine`.
/// Conforming classes get the whole `PCIBridgeFunction`, `InterruptingFunction` and (when
/// they declare it) `HotPlugController` implementation from here.
public protocol PCIExpressPort: PCIBridgeFunction, InterruptingFunction {
    var engine: PCIePortEngine { get }
}

extension PCIExpressPort {
    public var name: String { engine.name }
    public var secondary: PCIBus { engine.secondary }
    public var busNumbers: BridgeBusNumbers { engine.busNumbers }
    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 { engine.configRead(offset, width: width) }
    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        engine.configWrite(offset, width: width, value: value)
    }
    public func configSnapshot() -> ConfigSpace { engine.configSnapshot() }
    public func reset() { engine.reset() }
    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 {
        engine.barRead(index, offset: offset, width: width)
    }
    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        engine.barWrite(index, offset: offset, width: width, value: value)
    }
    public func connect(interrupts: any PCIInterruptOutput) { engine.connect(interrupts: interrupts) }

    public var hotPlugSlots: [UInt8] { engine.hotPlugSlots }
    public func setMultiFunction() { engine.setMultiFunction() }
    public func plug(device: UInt8) throws(HotPlugError) { try engine.plug(device: device) }
    public func requestUnplug(device: UInt8, mode: UnplugMode) throws(HotPlugError) {
        try engine.requestUnplug(device: device, mode: mode)
    }
    public func takeEvents() -> [HotPlugEvent] { engine.takeEvents() }
}
