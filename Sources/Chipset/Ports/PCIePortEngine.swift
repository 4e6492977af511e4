import PCI
import Synchronization
import VMMBase

/// The machinery shared by every PCI Express port model: the config space, the optional
/// slot controller, the MSI-X table, and the interrupt logic, behind one lock. Port classes
/// are thin: they pick a `PCIePortLayout` and forward to this.
public final class PCIePortEngine: Sendable {
    public let name: String
    public let secondary: PCIBus

    struct State: Sendable {
        var config: ConfigSpace
        var slot: PCIeSlotController?
        /// The Link Capabilities of the device in the slot (nil: none, or conventional PCI).
        var linkPartner: PCIeLinkCapabilities?
        /// The slot's interrupt condition becomes an MSI-X, MSI or INTx interrupt.
        var interrupts: InterruptArbiter
        var events: [HotPlugEvent] = []
    }

    private let state: Mutex<State>
    /// The port's own maximum link.
    let link: PCIeLinkCapabilities
    private let output = Mutex<any PCIInterruptOutput>(DisconnectedInterrupts())

    public init(name: String, layout: PCIePortLayout) throws(ConfigSpaceError) {
        self.name = name
        link = layout.link
        var config = try layout.makeConfigSpace()
        config.captureResetState()
        var slot: PCIeSlotController?
        if let options = layout.slot {
            slot = PCIeSlotController(features: options.features, reportsLinkActive: layout.reportsLinkActive)
        }
        let msix: MSIXLayout? = if case .msixExclusiveBAR = layout.messages { PCIePortLayout.msixLayout } else { nil }
        state = Mutex(State(config: config, slot: slot, interrupts: InterruptArbiter(msix: msix)))
        // A downstream-facing port's secondary bus is its link, which holds one device.
        secondary = PCIBus(name: name, kind: layout.portType.isDownstreamFacing ? .link : .shared)
    }

    // MARK: PCIFunction

    public var busNumbers: BridgeBusNumbers { state.withLock { $0.config.busNumbers } }

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { $0.config.read(offset, width: width) }
    }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        let (effects, actions) = state.withLock { s -> (ConfigWriteEffects, InterruptDelivery) in
            let controlBefore = s.config.pciExpressSlotState?.control ?? []
            let statusBefore = s.config.pciExpressSlotState?.status ?? []
            let effects = s.config.write(offset, width: width, value: value)
            if effects.contains(.functionLevelReset) {
                var delivery = resetLocked(&s)
                delivery.append(settle(&s))
                return (effects, delivery)
            }
            if let slot = s.slot, let written = Self.written(PCIExpressRegister.slotStatus, in: s.config,
                                                             offset: offset, width: width, value: value) {
                slot.slotStatusWritten(&s.config, before: statusBefore, written: written)
            }
            if effects.contains(.slotControlWritten), var slot = s.slot {
                let control = Self.written(PCIExpressRegister.slotControl, in: s.config, offset: offset, width: width, value: value)
                // Electromechanical Interlock Control (bit 11) always reads 0: the command is in the written value.
                let interlock = (control ?? 0) & 1 << 11 != 0
                let whole = offset == (s.config.pciExpressOffset ?? -1) + PCIExpressRegister.slotControl && width.bytes >= 2
                s.events += slot.slotControlWritten(&s.config, before: controlBefore, interlockToggled: interlock,
                                                    wholeRegister: whole)
                s.slot = slot
            }
            var actions = s.interrupts.configWritten(effects, in: &s.config)
            actions.append(settle(&s))
            return (effects, actions)
        }
        deliver(actions)
        followARIForwarding()
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
        let actions = state.withLock { s -> InterruptDelivery in
            var delivery = resetLocked(&s)
            delivery.append(settle(&s))
            return delivery
        }
        deliver(actions)
        followARIForwarding()
    }

    /// The link decodes config requests as Device Control 2 says now.
    private func followARIForwarding() {
        secondary.ariForwarding = state.withLock { $0.config.ariForwardingEnabled }
    }

    private func resetLocked(_ s: inout State) -> InterruptDelivery {
        s.config.reset()
        if var slot = s.slot {
            slot.afterReset(&s.config)
            s.slot = slot
        }
        return s.interrupts.reset(in: &s.config)
    }

    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 {
        state.withLock { s in s.interrupts.msixRead(bar: index, offset: offset, width: width) } ?? width.allOnes
    }

    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        let actions = state.withLock { s -> InterruptDelivery in
            s.interrupts.msixWrite(bar: index, offset: offset, width: width, value: value, in: s.config)?.delivery
                ?? InterruptDelivery()
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

    public func plug(device: UInt8) throws(HotPlugError) { try plug(device: device, linkPartner: nil) }

    /// A hot-plugged device: the slot signals presence and the link trains against `linkPartner`.
    public func plug(device: UInt8, linkPartner: PCIeLinkCapabilities?) throws(HotPlugError) {
        let actions = try state.withLock { (s: inout State) throws(HotPlugError) -> InterruptDelivery in
            guard device == PCIeSlotController.slotDevice, var slot = s.slot else {
                throw .noSuchSlot(controller: name, device: device)
            }
            try slot.plug(&s.config, controller: name)
            s.slot = slot
            s.linkPartner = linkPartner
            return settle(&s)
        }
        deliver(actions)
    }

    /// A device attached while the machine is built: the slot is found present, powered and
    /// with its link trained against `linkPartner` (the device's Link Capabilities; nil for a
    /// conventional PCI device), with no event latched. Ports without a slot (an upstream
    /// port) and devices outside the slot have nothing to tell.
    public func coldPlug(device: UInt8, linkPartner: PCIeLinkCapabilities?) {
        let actions = state.withLock { s -> InterruptDelivery in
            guard device == PCIeSlotController.slotDevice, var slot = s.slot else { return InterruptDelivery() }
            slot.coldPlug(&s.config)
            s.slot = slot
            s.linkPartner = linkPartner
            return settle(&s)
        }
        deliver(actions)
    }

    /// Config cycles for buses behind the port get through: the slot (if it has a power
    /// controller) is powered.
    public var passesConfigCycles: Bool {
        state.withLock { s in s.slot?.passesConfigCycles(s.config) ?? true }
    }

    public func requestUnplug(device: UInt8, mode: UnplugMode) throws(HotPlugError) {
        let actions = try state.withLock { (s: inout State) throws(HotPlugError) -> InterruptDelivery in
            guard device == PCIeSlotController.slotDevice, var slot = s.slot else {
                throw .noSuchSlot(controller: name, device: device)
            }
            s.events += try slot.requestUnplug(&s.config, mode: mode, controller: name)
            s.slot = slot
            return settle(&s)
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

    // MARK: Link and interrupts

    /// After any change of slot or config state: Link Status follows the slot, then the
    /// interrupt condition is evaluated.
    private func settle(_ s: inout State) -> InterruptDelivery {
        if s.slot?.occupied == false { s.linkPartner = nil }
        refreshLinkStatus(&s)
        return evaluate(&s)
    }

    /// Link Status is computed from the two ends' Link Capabilities and whether the slot holds
    /// a device; a port without a slot reports its own maximum link.
    private func refreshLinkStatus(_ s: inout State) {
        guard let base = s.config.pciExpressOffset else { return }
        let occupied = s.slot?.occupied ?? false
        let computed = link.linkStatus(partner: occupied ? s.linkPartner : nil, active: s.slot?.linkActive ?? false)
        let offset = base + PCIExpressRegister.linkStatus
        let mask = PCIeLinkCapabilities.linkStatusComputedBits
        let current = UInt16(truncatingIfNeeded: s.config.get(offset, width: 2))
        s.config.set(offset, width: 2, value: UInt64(current & ~mask | computed & mask))
    }

    /// PCIe Base 6.7.3.4: the slot's pending hot-plug condition is the port's interrupt
    /// condition (an MSI/MSI-X on its rising edge, else the INTx level).
    private func evaluate(_ s: inout State) -> InterruptDelivery {
        s.interrupts.setCondition(s.slot?.interruptPending(s.config) ?? false, in: &s.config)
    }

    private func deliver(_ actions: InterruptDelivery) {
        guard !actions.isEmpty else { return }
        actions.send(to: output.withLock { $0 })
    }

    /// The 16-bit value a write put into the PCI Express register at `register` (relative
    /// to the capability), with unwritten bytes 0; nil when the write missed it.
    private static func written(_ register: Int, in config: ConfigSpace, offset: Int, width: AccessWidth,
                                value: UInt32) -> UInt16? {
        guard let base = config.pciExpressOffset else { return nil }
        var result: UInt16 = 0
        var hit = false
        for byte in 0..<2 {
            let index = base + register + byte - offset
            guard index >= 0, index < min(width.bytes, 4) else { continue }
            hit = true
            result |= UInt16(truncatingIfNeeded: value >> (8 * UInt32(index))) << (8 * UInt16(byte))
        }
        return hit ? result : nil
    }
}

/// A PCI Express port: a bridge function whose behaviour lives in a `PCIePortEngine`.
/// Conforming classes get the whole `PCIBridgeFunction`, `InterruptingFunction` and (when
/// they declare it) `HotPlugController` implementation from here.
public protocol PCIExpressPort: PCIBridgeFunction, InterruptingFunction, SnapshottableFunction {
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
    public var passesConfigCycles: Bool { engine.passesConfigCycles }
    public func takeEvents() -> [HotPlugEvent] { engine.takeEvents() }
}

/// Every port's state is its engine's.
extension PCIExpressPort {
    public static var snapshotModel: String { "pcie-port" }
    public func modelState() -> ModelState { ModelState(model: Self.snapshotModel, engine.snapshot()) }
    public func restoreModel(_ state: ModelState) throws(DeviceStateError) {
        try engine.restore(try state.snapshot(as: PCIePortEngine.Snapshot.self, model: Self.snapshotModel, device: name))
    }
}

extension PCIePortEngine: DeviceStateSnapshotting {
    /// Config space (Slot Control and Status included), the slot controller, the trained
    /// link partner and the interrupt state (MSI-X table for ports that have one).
    public struct Snapshot: Sendable, Hashable, Codable {
        var config: ConfigSpace
        var slot: PCIeSlotController?
        var linkPartner: PCIeLinkCapabilities?
        var interrupts: InterruptArbiter
    }

    public func snapshot() -> Snapshot {
        state.withLock { Snapshot(config: $0.config, slot: $0.slot, linkPartner: $0.linkPartner, interrupts: $0.interrupts) }
    }

    public func restore(_ snapshot: Snapshot) throws(DeviceStateError) {
        let delivery = try state.withLock { s throws(DeviceStateError) in
            try s.config.checkLayout(of: snapshot.config, device: name)
            try s.interrupts.checkLayout(of: snapshot.interrupts, device: name)
            guard s.slot?.features == snapshot.slot?.features else {
                throw .layoutMismatch(device: name, reason: "different slot capabilities")
            }
            let delivery = s.interrupts.delivery(restoring: snapshot.interrupts)
            s.config = snapshot.config
            s.slot = snapshot.slot
            s.linkPartner = snapshot.linkPartner
            s.interrupts = snapshot.interrupts
            return delivery
        }
        deliver(delivery)
        followARIForwarding()
    }
}
