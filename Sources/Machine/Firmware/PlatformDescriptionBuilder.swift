import Chipset
import Firmware
import PCI
import VMMBase

extension Machine {
    /// What the firmware tables describe, taken from the machine as it is now: RAM, ECAM
    /// and the host bridge windows from the layout, and the PCI hierarchy as config cycles
    /// see it (so run firmware first: buses without numbers are not described).
    public func platformDescription(cpuCount: Int = 1) -> PlatformDescription {
        let layout = configuration.layout
        var description = PlatformDescription.q35(cpuCount: cpuCount, memorySize: configuration.memorySize)
        let ecamSize = hostBridge.ecamWindow?.size ?? layout.ecamSize
        let lastBus = UInt8(min(255, ecamSize >> 20 &- 1))
        description.pci.ecam = PlatformDescription.ECAM(base: hostBridge.ecamWindow?.base ?? layout.ecamBase,
                                                        busRange: 0...lastBus)
        description.pci.ioWindow = AddressRange(base: layout.pciIOBase, last: layout.pciIOLast)
        description.pci.mem32Window = AddressRange(base: layout.pciMemory32Base, last: layout.pciMemory32Last)!
        description.pci.mem64Window = AddressRange(base: layout.pciMemory64Base, last: layout.pciMemory64Last)
        description.pci.buses = describeBuses()
        // With ACPI hot-plug, _OSC keeps native PCIe hot-plug from the OS, as QEMU's does
        // (SHPC stays offered), so Linux binds acpiphp to the slots instead of pciehp.
        description.pci.nativeHotplug = !configuration.acpiPCIHotplug
        description.acpiHotplug = configuration.acpiPCIHotplug ? PlatformDescription.ACPIHotplugRegisters() : nil
        description.pci.shpcPresent = devices.contains { $0.function.configSnapshot().capability(.standard(CapabilityID.hotPlug)) != nil }
        return description
    }

    /// Every numbered bus with its functions, as the root complex routes config cycles.
    func describeBuses() -> [PlatformDescription.Bus] {
        var kinds: [UInt8: PlatformDescription.Bus.Kind] = [rootComplex.rootBusNumber: .root]
        var slots: [UInt8: Set<UInt8>] = [:]
        var selectors: [UInt8: UInt32] = [:]
        var devices: [UInt8: [PlatformDescription.Device]] = [:]
        for (address, function) in reachableFunctions() {
            var device = PlatformDescription.Device(devfn: address.devfn)
            if let bridge = function as? any PCIBridgeFunction {
                let secondary = bridge.busNumbers.secondary
                if secondary > address.bus, rootComplex.numberedBus(secondary) === bridge.secondary {
                    device.secondaryBus = secondary
                    let type = function.configSnapshot().pciExpressPortType
                    kinds[secondary] = switch type {
                    case .rootPort?, .downstreamPort?: .pcieDownstream
                    case .upstreamPort?: .pcieSwitchInternal
                    default: .conventional
                    }
                    if let name = topology.placed.first(where: { $0.function === function })?.id,
                       let acpi = topology.hotPlugController(forBus: name) as? ACPIHotPlugBus {
                        selectors[secondary] = acpi.bsel
                        slots[secondary] = Set(acpi.hotPlugSlots)
                    } else {
                        slots[secondary] = Set((function as? any HotPlugController)?.hotPlugSlots ?? [])
                    }
                }
            }
            devices[address.bus, default: []].append(device)
        }
        // Every bus a bridge numbers is described, empty ones too.
        return kinds.keys.sorted().map { number in
            let kind = kinds[number]!
            let list = (devices[number] ?? []).map { device in
                var d = device
                d.hotpluggable = slots[number]?.contains(device.slot) ?? false
                return d
            }
            return PlatformDescription.Bus(number: number, kind: kind, acpiHotplugSelector: selectors[number], devices: list)
        }
    }

    /// Firmware tables for the machine as it is now.
    public func firmwareTables(cpuCount: Int = 1) throws(FirmwareError) -> FirmwareTables {
        try FirmwareTables.build(platformDescription(cpuCount: cpuCount))
    }
}
