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
        description.pci.nativeHotplug = true
        description.pci.shpcPresent = devices.contains { $0.function.configSnapshot().capability(.standard(CapabilityID.hotPlug)) != nil }
        return description
    }

    /// Every numbered bus with its functions, walking bridges by their bus-number registers.
    func describeBuses() -> [PlatformDescription.Bus] {
        var buses: [PlatformDescription.Bus] = []
        func visit(_ bus: PCIBus, number: UInt8, kind: PlatformDescription.Bus.Kind, depth: Int) {
            var devices: [PlatformDescription.Device] = []
            var children: [(PCIBus, UInt8, PlatformDescription.Bus.Kind)] = []
            let hotPlugSlots = Set((bus === rootBus ? [] : hotPlugSlots(of: bus)))
            for (devfn, function) in bus.functions where bus.function(at: devfn) != nil {
                var device = PlatformDescription.Device(devfn: devfn, hotpluggable: hotPlugSlots.contains(devfn >> 3))
                if let bridge = function as? any PCIBridgeFunction {
                    let numbers = bridge.busNumbers
                    if numbers.secondary > number, depth < 256 {
                        device.secondaryBus = numbers.secondary
                        let type = function.configSnapshot().pciExpressPortType
                        let childKind: PlatformDescription.Bus.Kind =
                            (type == .rootPort || type == .downstreamPort) ? .pcieDownstream : .conventional
                        children.append((bridge.secondary, numbers.secondary, childKind))
                    }
                }
                devices.append(device)
            }
            buses.append(PlatformDescription.Bus(number: number, kind: kind, devices: devices))
            for (child, childNumber, childKind) in children { visit(child, number: childNumber, kind: childKind, depth: depth + 1) }
        }
        visit(rootBus, number: rootComplex.rootBusNumber, kind: .root, depth: 0)
        return buses.sorted { $0.number < $1.number }
    }

    private func hotPlugSlots(of bus: PCIBus) -> [UInt8] {
        guard let owner = devices.first(where: { ($0.function as? any PCIBridgeFunction)?.secondary === bus }),
              let controller = owner.function as? any HotPlugController else { return [] }
        return controller.hotPlugSlots
    }

    /// Firmware tables for the machine as it is now.
    public func firmwareTables(cpuCount: Int = 1) throws(FirmwareError) -> FirmwareTables {
        try FirmwareTables.build(platformDescription(cpuCount: cpuCount))
    }
}
