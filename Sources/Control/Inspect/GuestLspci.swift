import HostDevices
import Machine
import PCI
import VMMBase

/// What `lspci` inside a guest would print for a machine: config spaces read through
/// config cycles, plus the BAR sizes a guest kernel learns by sizing them.
public enum GuestLspci {
    public static func functions(of machine: Machine) -> [LspciFunction] {
        let models = modelsByAddress(machine)
        let vfIdentities = virtualFunctionIdentities(models)
        return machine.guestVisibleConfigSpaces().map { address, config in
            var resources: LspciFunction.KernelResources?
            if let model = models[address] {
                let cs = model.configSnapshot()
                resources = .init(barSizes: cs.bars.map { $0?.size ?? 0 }, romSize: cs.rom ?? 0,
                                  identity: vfIdentities[address])
            }
            return LspciFunction(address: address, config: config, resources: resources)
        }
    }

    /// What Linux names each enabled VF: its PF's Vendor ID and the PF's VF Device ID.
    static func virtualFunctionIdentities(_ models: [PCIAddress: any PCIFunction]) -> [PCIAddress: LspciFunction.Identity] {
        var identities: [PCIAddress: LspciFunction.Identity] = [:]
        for (address, model) in models {
            guard let pf = model as? any SRIOVPhysicalFunction, pf.isSRIOVCapable else { continue }
            let config = pf.configSnapshot()
            guard let sriov = config.sriovState else { continue }
            for vf in pf.enabledVirtualFunctions {
                guard let devfn = PCIBus.devfn(of: address.devfn, plus: vf.routingOffset) else { continue }
                identities[PCIAddress(segment: address.segment, bus: address.bus, devfn: devfn)] =
                    LspciFunction.Identity(vendorID: config.vendorID, deviceID: sriov.vfDeviceID)
            }
        }
        return identities
    }

    public static func render(_ machine: Machine, options: LspciOptions,
                              names: PCINameDatabase = PCINameDatabase()) -> String {
        LspciRenderer(functions: functions(of: machine), view: .guestKernel, names: names).render(options)
    }

    /// Device models by the address config cycles currently reach them at.
    static func modelsByAddress(_ machine: Machine) -> [PCIAddress: any PCIFunction] {
        Dictionary(machine.reachableFunctions().map { ($0.address, $0.function) }, uniquingKeysWith: { first, _ in first })
    }
}
