import Chipset
import PCI

/// ACPI PCI hot-plug as QEMU's q35 wires it with `acpi-pci-hotplug-with-bridge-support=on`:
/// every cold-plugged bridge's secondary bus becomes a bus of the ACPI hot-plug block (a BSEL),
/// except a PCIe slot whose hot-plug is off; the root bus stays without hot-plug.
extension Machine {
    /// One bus the ACPI block serves.
    struct ACPIHotPlugBusPlan: Equatable {
        let bsel: UInt32
        let busName: String
        let slots: [UInt8]
    }

    /// BSELs in QEMU's order (hw/i386/acpi-build.c, acpi_set_pci_info): depth first from the
    /// root bus, a bus numbered before the buses behind it, and a bus's children in reverse
    /// order of creation (QEMU keeps child buses in a list it inserts at the head of). Checked
    /// against QEMU 10 by the hot-plug differential test.
    static func acpiHotPlugPlan(bridges: [(id: String, parentBus: String, slots: [UInt8]?)],
                                rootBus: String) -> [ACPIHotPlugBusPlan] {
        var plan: [ACPIHotPlugBusPlan] = []
        func visit(_ bus: String) {
            for bridge in bridges.reversed() where bridge.parentBus == bus {
                if let slots = bridge.slots, plan.count < Int(ACPIHotPlugController.maxBuses) {
                    plan.append(ACPIHotPlugBusPlan(bsel: UInt32(plan.count), busName: bridge.id, slots: slots))
                }
                visit(bridge.id)
            }
        }
        visit(rootBus)
        return plan
    }

    /// The slots the ACPI block offers behind a bridge, nil when the bridge keeps its bus
    /// without hot-plug: device 0 behind a PCIe port (its bus is PCI Express: QEMU ignores
    /// the other device numbers there, a switch's internal bus included), all 32 device
    /// numbers of a conventional bus.
    static func acpiHotPlugSlots(behind bridge: any PCIBridgeFunction) -> [UInt8]? {
        guard let port = bridge as? any PCIExpressPort else { return Array(0..<32) }
        if let slot = port.engine.slotController, !slot.isHotPlugCapable { return nil }
        return [0]
    }

    /// Registers the cold-plugged bridges' buses with the ACPI block and hands their slots to it.
    func attachACPIHotPlug() {
        let bridges = topology.placed.compactMap { placed -> (id: String, parentBus: String, slots: [UInt8]?)? in
            guard let bridge = placed.function as? any PCIBridgeFunction else { return nil }
            return (placed.id, placed.busName, Self.acpiHotPlugSlots(behind: bridge))
        }
        let block = legacy.acpiHotPlug
        for entry in Self.acpiHotPlugPlan(bridges: bridges, rootBus: topology.rootBusName) {
            let bus = block.addBus(bsel: entry.bsel, name: entry.busName, slots: entry.slots)
            for placed in topology.placed where placed.busName == entry.busName && placed.devfn & 7 == 0 {
                bus.coldPlug(device: placed.devfn >> 3, bridge: placed.function is any PCIBridgeFunction)
            }
            topology.setHotPlugController(bus, forBus: entry.busName)
        }
    }

    /// What QEMU does when ACPI plugs a device below a PCIe port (pcie_cap_slot_enable_power):
    /// the port's slot power controller turns on; presence and link are left alone.
    func powerACPISlot(forBus busName: String) {
        guard let port = topology.bus(named: busName)?.bridge as? any PCIExpressPort else { return }
        port.engine.powerSlotOn()
    }
}
