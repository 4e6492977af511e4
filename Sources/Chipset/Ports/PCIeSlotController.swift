import PCI

/// The native hot-plug controller of one PCI Express slot (PCIe Base 6.7.3), as state next
/// to the port's config space. It owns what the registers cannot hold (is a device there,
/// was an unplug requested) and turns machine requests and guest Slot Control commands into
/// register changes and `HotPlugEvent`s. It never raises interrupts itself: the port asks
/// `interruptPending` after each change and signals edges once its lock is released.
///
/// Behaviour follows what Linux pciehp expects of QEMU's ports:
/// - cold plug: present and powered, link up, nothing latched (QEMU's state after reset).
/// - plug: Presence Detect State and Changed; Data Link Layer State Changed when the port
///   reports link state (the port shows the link up either way); and, on slots with an attention
///   button, Attention Button Pressed, so that a guest that enables only ABPE (as pciehp
///   does on such slots) still learns of the device. A guest that also watches the link
///   brings the slot up at once instead of after the 5 s button delay.
/// - attention-button unplug: Attention Button Pressed; the device stays until the guest
///   switches the power controller off with the power indicator off, which ejects it.
/// - surprise removal (Hot-Plug Surprise slots only): presence and link drop at once.
/// - every Slot Control write is a command: Command Completed is set unless the slot
///   reports No Command Completed Support.
public struct PCIeSlotController: Sendable, Hashable, Codable {
    /// The device number of the only slot below a downstream-facing port.
    public static let slotDevice: UInt8 = 0

    public let features: PCIExpressSlotFeatures
    /// Link Capabilities reports DLL Link Active (and so Slot Status reports DLL State Changed).
    public let reportsLinkActive: Bool
    /// The machine has attached a device below the port.
    public private(set) var occupied = false
    /// An attention-button unplug is waiting for the guest to power the slot off.
    public private(set) var unplugRequested = false

    public init(features: PCIExpressSlotFeatures, reportsLinkActive: Bool) {
        self.features = features
        self.reportsLinkActive = reportsLinkActive
    }

    public var isHotPlugCapable: Bool { features.contains(.hotPlugCapable) }

    // MARK: Machine side

    /// A device attached while the machine is built (cold plug): the slot comes up as it
    /// leaves reset with a device in it, present and powered, and no event is latched.
    public mutating func coldPlug(_ config: inout ConfigSpace) {
        occupied = true
        unplugRequested = false
        applyPresence(&config)
    }

    public mutating func plug(_ config: inout ConfigSpace, controller: String) throws(HotPlugError) {
        guard isHotPlugCapable else { throw .noSuchSlot(controller: controller, device: Self.slotDevice) }
        guard !occupied else { throw .slotOccupied(controller: controller, device: Self.slotDevice) }
        occupied = true
        unplugRequested = false
        var events: PCIExpressSlotStatus = [.presenceDetected, .presenceDetectChanged]
        if features.contains(.attentionButton) { events.insert(.attentionButtonPressed) }
        if reportsLinkActive { events.insert(.dataLinkLayerStateChanged) }
        config.setSlotStatus(events, true)
    }

    /// The link to the device is up while the slot holds one (Link Status DLL Link Active).
    /// QEMU reports it on every port type, also where Link Capabilities does not advertise
    /// the reporting (Linux reads it only where it does).
    public var linkActive: Bool { occupied }

    /// Whether config cycles reach the device: a slot with a power controller passes them
    /// only while the guest has the power on, as QEMU hides a device in an unpowered slot.
    public func passesConfigCycles(_ config: ConfigSpace) -> Bool {
        config.pciExpressSlotState?.poweredOn ?? true
    }

    /// Returns the events of an immediate removal (surprise), none for a button request.
    public mutating func requestUnplug(_ config: inout ConfigSpace, mode: UnplugMode,
                                       controller: String) throws(HotPlugError) -> [HotPlugEvent] {
        guard isHotPlugCapable else { throw .noSuchSlot(controller: controller, device: Self.slotDevice) }
        guard occupied else { throw .slotEmpty(controller: controller, device: Self.slotDevice) }
        let buttonless = !features.contains(.attentionButton)
        if mode == .surprise || buttonless {
            guard features.contains(.hotPlugSurprise) else { throw .surpriseNotSupported(controller: controller) }
            return remove(&config)
        }
        guard !unplugRequested else { throw .unplugInProgress(controller: controller, device: Self.slotDevice) }
        // A slot the guest never powered on (power off, power indicator off) holds a device
        // no driver uses: it can go at once, as QEMU does, without waiting for a button cycle.
        // QEMU also withdraws the attention button press it latched at plug.
        if let state = config.pciExpressSlotState, !state.poweredOn, state.powerIndicator == .off {
            config.setSlotStatus(.attentionButtonPressed, false)
            return remove(&config)
        }
        unplugRequested = true
        config.setSlotStatus(.attentionButtonPressed, true)
        return []
    }

    /// The device is gone: presence and link drop, the guest is told by Presence Detect
    /// Changed (and DLL State Changed).
    private mutating func remove(_ config: inout ConfigSpace) -> [HotPlugEvent] {
        occupied = false
        unplugRequested = false
        config.setSlotStatus(.presenceDetected, false)
        var events: PCIExpressSlotStatus = [.presenceDetectChanged]
        if reportsLinkActive { events.insert(.dataLinkLayerStateChanged) }
        config.setSlotStatus(events, true)
        return [.ejected(device: Self.slotDevice)]
    }

    // MARK: Guest side

    /// A guest write touched Slot Control. `before` is Slot Control as it was before the
    /// write; `interlockToggled` is true when the write set Electromechanical Interlock
    /// Control (a write-only bit that always reads 0). `wholeRegister` is true when the write
    /// started at Slot Control and covered both its bytes: only such a write ejects the device
    /// at power-off, as on QEMU, which decides from the written value taken as the whole
    /// register (pciehp always writes the whole register; a byte write only switches power).
    public mutating func slotControlWritten(_ config: inout ConfigSpace, before: PCIExpressSlotControl,
                                            interlockToggled: Bool, wholeRegister: Bool = true) -> [HotPlugEvent] {
        guard let state = config.pciExpressSlotState else { return [] }
        let after = state.control
        var events: [HotPlugEvent] = []
        if interlockToggled && features.contains(.electromechanicalInterlock) {
            let engaged = state.status.contains(.electromechanicalInterlockEngaged)
            config.setSlotStatus(.electromechanicalInterlockEngaged, !engaged)
        }
        if features.contains(.powerController) {
            let wasOn = !before.contains(.powerControllerOff)
            let isOn = !after.contains(.powerControllerOff)
            let indicatorOff = Self.powerIndicator(after) == .off
            let wasSafe = !wasOn && Self.powerIndicator(before) == .off
            if occupied && !isOn && indicatorOff && !wasSafe && wholeRegister {
                // Power and power indicator off: the guest is done with the device.
                events += remove(&config)
            } else if occupied && isOn && !wasOn {
                events.append(.poweredOn(device: Self.slotDevice))
            } else if occupied && isOn && unplugRequested && Self.powerIndicator(before) == .blink
                        && Self.powerIndicator(after) == .on {
                // pciehp cancels a pending removal (button pressed again) by lighting the
                // power indicator steadily again.
                unplugRequested = false
                events.append(.unplugCancelled(device: Self.slotDevice))
            }
        }
        if !features.contains(.noCommandCompleted) { config.setSlotStatus(.commandCompleted, true) }
        return events
    }

    /// Whether the slot asks for a hot-plug interrupt (PCIe Base 6.7.3.4): Hot-Plug
    /// Interrupt Enable and some event bit set together with its enable; Command Completed
    /// counts with Command Completed Interrupt Enable.
    public func interruptPending(_ config: ConfigSpace) -> Bool {
        guard let state = config.pciExpressSlotState, state.control.contains(.hotPlugInterruptEnable) else { return false }
        let pairs: [(PCIExpressSlotStatus, PCIExpressSlotControl)] = [
            (.attentionButtonPressed, .attentionButtonPressedEnable),
            (.powerFaultDetected, .powerFaultDetectedEnable),
            (.mrlSensorChanged, .mrlSensorChangedEnable),
            (.presenceDetectChanged, .presenceDetectChangedEnable),
            (.commandCompleted, .commandCompletedInterruptEnable),
            (.dataLinkLayerStateChanged, .dataLinkLayerStateChangedEnable),
        ]
        return pairs.contains { state.status.contains($0.0) && state.control.contains($0.1) }
    }

    /// After a reset: a present device keeps its presence and its power (PCIe ports come out
    /// of reset with an occupied slot powered, as firmware expects and QEMU does).
    public mutating func afterReset(_ config: inout ConfigSpace) {
        unplugRequested = false
        if occupied { applyPresence(&config) }
    }

    /// Presence Detect State and the power controller on; the indicators keep their reset
    /// state (off), as on QEMU.
    private func applyPresence(_ config: inout ConfigSpace) {
        guard let base = config.pciExpressOffset else { return }
        config.setSlotStatus(.presenceDetected, true)
        if features.contains(.powerController) {
            config.setBits(base + PCIExpressRegister.slotControl, width: 2,
                           UInt64(PCIExpressSlotControl.powerControllerOff.rawValue), to: false)
        }
    }

    /// Event bits a Slot Status write may clear only together: QEMU undoes a write that also
    /// sets bits which were not pending (guests that clear everything at init would lose
    /// events otherwise). DLL State Changed is not among them.
    static let guardedEvents: PCIExpressSlotStatus = [.attentionButtonPressed, .powerFaultDetected,
                                                      .mrlSensorChanged, .presenceDetectChanged, .commandCompleted]

    /// A guest write reached Slot Status with `written`; `before` is Slot Status before it.
    public func slotStatusWritten(_ config: inout ConfigSpace, before: PCIExpressSlotStatus, written: UInt16) {
        let guarded = Self.guardedEvents.rawValue
        guard written & ~before.rawValue & guarded != 0 else { return }
        config.setSlotStatus(Self.guardedEvents, false)
        config.setSlotStatus(before.intersection(Self.guardedEvents), true)
    }

    static func powerIndicator(_ control: PCIExpressSlotControl) -> PCIExpressIndicator? {
        PCIExpressIndicator(rawValue: (control.rawValue >> 8) & 3)
    }
}
