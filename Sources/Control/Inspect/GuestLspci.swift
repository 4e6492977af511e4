import HostDevices
import Machine
import PCI
import VMMBase

/// What `lspci` inside a guest would print for a machine: config spaces read through
/// config cycles, plus the BAR sizes a guest kernel learns by sizing them.
public enum GuestLspci {
    public static func functions(of machine: Machine) -> [LspciFunction] {
        let models = modelsByAddress(machine)
        return machine.guestVisibleConfigSpaces().map { address, config in
            var resources: LspciFunction.KernelResources?
            if let model = models[address] {
                let cs = model.configSnapshot()
                resources = .init(barSizes: cs.bars.map { $0?.size ?? 0 }, romSize: cs.rom ?? 0)
            }
            return LspciFunction(address: address, config: config, resources: resources)
        }
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
