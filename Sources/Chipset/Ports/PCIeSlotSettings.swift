import PCI

/// The user-visible settings of a downstream-facing port's slot (QEMU's chassis, slot, port,
/// hotplug properties, plus Switchyard's x-hotplug-surprise).
public struct PCIeSlotSettings: Sendable, Hashable {
    /// Chassis number (0-255). Only (chassis, slot) uniqueness depends on it; no register holds it.
    public var chassis: UInt8
    /// Physical Slot Number in Slot Capabilities (0-8191).
    public var slot: UInt16
    /// Port Number in Link Capabilities.
    public var port: UInt8
    /// Native hot-plug (Hot-Plug Capable in Slot Capabilities). Off: a plain slot.
    public var hotplug: Bool
    /// Hot-Plug Surprise in Slot Capabilities, which permits surprise removal. QEMU 10
    /// advertises it on all its hot-plug slots, so it is on by default.
    public var hotplugSurprise: Bool

    public init(chassis: UInt8 = 0, slot: UInt16 = 0, port: UInt8 = 0, hotplug: Bool = true, hotplugSurprise: Bool = true) {
        self.chassis = chassis
        self.slot = slot
        self.port = port
        self.hotplug = hotplug
        self.hotplugSurprise = hotplugSurprise
    }

    /// Slot Capabilities as QEMU's ports fill them: attention button, power controller,
    /// attention and power indicators, electromechanical interlock; hot-plug capable and
    /// surprise when enabled.
    public var slotOptions: PCIExpressSlotOptions {
        var features: PCIExpressSlotFeatures = [.attentionButton, .powerController, .attentionIndicator,
                                                .powerIndicator, .electromechanicalInterlock]
        if hotplug {
            features.insert(.hotPlugCapable)
            if hotplugSurprise { features.insert(.hotPlugSurprise) }
        }
        return PCIExpressSlotOptions(features: features, physicalSlotNumber: slot)
    }
}
