/// What a config write changed, returned as a value so that the caller applies it (remaps
/// BARs, reroutes windows, updates interrupt routes) after the device's lock is released.
public struct ConfigWriteEffects: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// BAR `index` (0-5) changed address.
    public static func bar(_ index: Int) -> ConfigWriteEffects { ConfigWriteEffects(rawValue: 1 << UInt32(index)) }
    public static let romChanged = ConfigWriteEffects(rawValue: 1 << 6)
    /// I/O or memory decode enable changed: every BAR's visibility may have changed.
    public static let decodingChanged = ConfigWriteEffects(rawValue: 1 << 7)
    public static let busMasterChanged = ConfigWriteEffects(rawValue: 1 << 8)
    public static let intxDisableChanged = ConfigWriteEffects(rawValue: 1 << 9)
    /// Primary, secondary or subordinate bus number changed (type 1).
    public static let busNumbersChanged = ConfigWriteEffects(rawValue: 1 << 10)
    /// An I/O, memory or prefetchable window changed (type 1).
    public static let windowsChanged = ConfigWriteEffects(rawValue: 1 << 11)
    /// Bridge Control changed (ISA/VGA routing, secondary bus reset).
    public static let bridgeControlChanged = ConfigWriteEffects(rawValue: 1 << 12)
    /// MSI enable, address, data or masks changed.
    public static let msiChanged = ConfigWriteEffects(rawValue: 1 << 13)
    /// MSI-X enable or function mask changed (only Message Control counts).
    public static let msixChanged = ConfigWriteEffects(rawValue: 1 << 14)
    /// A device-specific register changed; the device that returns this knows which.
    public static let deviceSpecific = ConfigWriteEffects(rawValue: 1 << 15)
    /// The Power Management D-state changed.
    public static let powerStateChanged = ConfigWriteEffects(rawValue: 1 << 16)
    /// PCI Express Slot Control was written. Every write is a hot-plug command, even one that
    /// changes no bit, so this is reported for any write touching the register.
    public static let slotControlWritten = ConfigWriteEffects(rawValue: 1 << 17)
    /// Software set Initiate Function Level Reset (the bit itself always reads 0).
    public static let functionLevelReset = ConfigWriteEffects(rawValue: 1 << 18)
    /// SR-IOV control, NumVFs, System Page Size or a VF BAR changed.
    public static let sriovChanged = ConfigWriteEffects(rawValue: 1 << 19)
    /// Secondary Bus Reset went from 0 to 1 (type 1): everything behind the bridge resets,
    /// once per assertion, as QEMU's pci_bridge_write_config does. The machine applies it.
    public static let secondaryBusReset = ConfigWriteEffects(rawValue: 1 << 20)

    public static let anyBAR = ConfigWriteEffects(rawValue: 0x3F)

    /// True when address-space mappings may have to be rebuilt.
    public var affectsMappings: Bool {
        !intersection([.anyBAR, .romChanged, .decodingChanged, .busNumbersChanged, .windowsChanged,
                       .bridgeControlChanged, .sriovChanged, .secondaryBusReset, .functionLevelReset]).isEmpty
    }

    public var changedBARs: [Int] { (0..<6).filter { contains(.bar($0)) } }

    public var description: String {
        var names = changedBARs.map { "bar\($0)" }
        let named: [(ConfigWriteEffects, String)] = [
            (.romChanged, "rom"), (.decodingChanged, "decoding"), (.busMasterChanged, "busMaster"),
            (.intxDisableChanged, "intxDisable"), (.busNumbersChanged, "busNumbers"), (.windowsChanged, "windows"),
            (.bridgeControlChanged, "bridgeControl"), (.msiChanged, "msi"), (.msixChanged, "msix"),
            (.deviceSpecific, "deviceSpecific"), (.powerStateChanged, "powerState"),
            (.slotControlWritten, "slotControl"), (.functionLevelReset, "flr"), (.sriovChanged, "sriov"),
            (.secondaryBusReset, "secondaryBusReset"),
        ]
        for (flag, name) in named where contains(flag) { names.append(name) }
        return "[" + names.joined(separator: ", ") + "]"
    }
}

extension ConfigSpace {
    /// Classifies a write by the registers whose bytes changed.
    func effects(ofChanges changes: [(offset: Int, old: UInt8)]) -> ConfigWriteEffects {
        var effects: ConfigWriteEffects = []
        for (o, old) in changes {
            let flipped = old ^ bytes[o]
            switch o {
            case Reg.command:
                if flipped & UInt8(CommandBits([.io, .memory]).rawValue) != 0 { effects.insert(.decodingChanged) }
                if flipped & UInt8(CommandBits.busMaster.rawValue) != 0 { effects.insert(.busMasterChanged) }
            case Reg.command + 1:
                if flipped & UInt8(CommandBits.intxDisable.rawValue >> 8) != 0 { effects.insert(.intxDisableChanged) }
            case Reg.bar0..<(Reg.bar0 + 4 * layout.barCount):
                let index = (o - Reg.bar0) / 4
                effects.insert(.bar(isUpperHalfOf64BitBAR(index) ? index - 1 : index))
            case layout.romOffset..<(layout.romOffset + 4):
                effects.insert(.romChanged)
            default:
                break
            }
            if layout == .bridge {
                switch o {
                case Reg.primaryBus...Reg.subordinateBus: effects.insert(.busNumbersChanged)
                case Reg.ioBase, Reg.ioLimit, Reg.memoryBase..<(Reg.prefetchLimitUpper + 4),
                     Reg.ioBaseUpper..<(Reg.ioLimitUpper + 2):
                    effects.insert(.windowsChanged)
                case Reg.bridgeControl, Reg.bridgeControl + 1:
                    effects.insert(.bridgeControlChanged)
                    let reset = UInt8(BridgeControlBits.secondaryBusReset.rawValue)
                    if o == Reg.bridgeControl && old & reset == 0 && bytes[o] & reset != 0 { effects.insert(.secondaryBusReset) }
                default: break
                }
            }
            let ownerIndex = ownerIndex(o)
            if ownerIndex > 0 {
                let record = capabilities[ownerIndex - 1]
                switch record.kind {
                case .msi: effects.insert(.msiChanged)
                case .msix where (2...3).contains(o - record.offset): effects.insert(.msixChanged)
                case .extended(ExtendedCapabilityID.sriov): effects.insert(.sriovChanged)
                default: break
                }
            }
        }
        return effects
    }
}
