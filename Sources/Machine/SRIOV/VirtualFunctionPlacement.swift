import PCI
import VMMBase

extension Machine {
    /// After software changed a physical function's SR-IOV registers: enabled VFs whose
    /// routing IDs run past the PF's bus, or land where a function is attached, do not answer
    /// (SR-IOV lets VFs spill onto the following bus numbers; these VFs do not). The guest
    /// sees master aborts there, the operator one line here.
    func reportUnplacedVirtualFunctions(of pf: any SRIOVPhysicalFunction, at address: PCIAddress) {
        let enabled = pf.enabledVirtualFunctions
        guard !enabled.isEmpty, let bus = rootComplex.bus(address.bus) else { return }
        for vf in enabled {
            guard let devfn = PCIBus.devfn(of: address.devfn, plus: vf.routingOffset) else {
                GuestErrorLog.report(device: pf.name, kind: "sriov-bus-span",
                                     "VFs \(vf.index + 1)-\(enabled.count) would sit on the bus after \(hex(address.bus, 2)); only VFs within the PF's bus are provided (set NumVFs to at most \(vf.index))")
                return
            }
            if let occupant = bus.occupant(at: devfn) {
                GuestErrorLog.report(device: pf.name, kind: "sriov-routing-id-taken",
                                     "VF \(vf.index + 1) would sit at \(hex(address.bus, 2)):\(hex(devfn >> 3, 2)).\(devfn & 7), where \(occupant.name) is; that VF does not answer")
            }
        }
    }
}
