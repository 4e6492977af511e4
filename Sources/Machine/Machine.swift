import AddressSpace
import Chipset
import Interrupts
import PCI
import Synchronization
import VMMBase

/// A q35 machine: the chipset, the PCI hierarchy and RAM, wired to memory and port spaces.
/// It runs with or without vCPUs: `portRead`/`portWrite`/`mmioRead`/`mmioWrite` are the same
/// entry points a vCPU exit uses, so tests can play firmware and guest through them.
public final class Machine: Sendable {
    public let configuration: MachineConfiguration
    public let rootBus: PCIBus
    public let rootComplex: PCIRootComplex
    public let hostBridge: Q35HostBridge
    public let lpc: ICH9LPC
    /// Where device interrupts go while no irqchip is attached.
    public let interrupts: RecordingSink
    public let ram: RAMHandler
    let spaces: MachineAddressSpaces
    let topology: Topology

    public init(_ configuration: MachineConfiguration = .defaultMachine) throws(MachineConfigurationError) {
        self.configuration = configuration
        let rootBus = PCIBus(name: "pcie.0")
        let sink = WeakEffectSink()
        let root = PCIRootComplex(rootBus: rootBus, effectSink: sink)
        let hostBridge = Q35HostBridge(name: "mch")
        let lpc = ICH9LPC(name: "lpc")
        let ram = RAMHandler(size: configuration.memorySize)
        let configAddress = ConfigAddressPort()
        let configData = ConfigDataPort(address: configAddress, root: root)
        let ecam = ECAMHandler(root: root)
        let layout = configuration.layout

        let spaces = MachineAddressSpaces(rootBus: rootBus) {
            var memory = Region.container("system", size: .max)
            let low = min(ram.size, layout.lowMemoryLimit)
            memory.add(.alias("ram-below-4g", of: .leaf("ram", size: ram.size, handler: ram), offset: 0, size: low), at: 0)
            if ram.size > low {
                memory.add(.alias("ram-above-4g", of: .leaf("ram", size: ram.size, handler: ram), offset: low,
                                  size: ram.size - low), at: 1 << 32)
            }
            if let window = hostBridge.ecamWindow {
                memory.add(.leaf("ecam", size: window.size, handler: ecam), at: window.base, priority: 1)
            }
            var io = Region.container("io", size: 1 << 16)
            io.add(.leaf("pci-config-address", size: 4, handler: configAddress), at: ConfigAddressPort.port)
            io.add(.leaf("pci-config-data", size: 4, handler: configData), at: ConfigDataPort.port)
            return (memory, io)
        }
        sink.connect(spaces)

        self.rootBus = rootBus
        self.rootComplex = root
        self.hostBridge = hostBridge
        self.lpc = lpc
        self.ram = ram
        self.interrupts = RecordingSink()
        self.spaces = spaces
        self.topology = Topology(rootBus: rootBus)

        do {
            try rootBus.attach(hostBridge, at: 0)
            try rootBus.attach(lpc, at: 0x1F << 3)
        } catch {
            preconditionFailure("q35 chipset placement: \(error)")
        }
        for spec in configuration.devices { _ = try topology.add(spec) }
    }

    // MARK: vCPU exit entry points

    public func portRead(_ port: UInt16, width: AccessWidth) -> UInt64 {
        spaces.read(io: true, at: UInt64(port), width: width)
    }

    public func portWrite(_ port: UInt16, width: AccessWidth, value: UInt64) {
        spaces.write(io: true, at: UInt64(port), width: width, value: value)
    }

    public func mmioRead(_ address: UInt64, width: AccessWidth) -> UInt64 {
        spaces.read(io: false, at: address, width: width)
    }

    public func mmioWrite(_ address: UInt64, width: AccessWidth, value: UInt64) {
        spaces.write(io: false, at: address, width: width, value: value)
    }

    // MARK: Topology

    /// Creates a device from its description and attaches it (before firmware runs).
    @discardableResult
    public func add(_ spec: DeviceSpec) throws(MachineConfigurationError) -> PlacedDevice {
        try topology.add(spec)
    }

    public var devices: [PlacedDevice] { topology.placed }

    /// The flattened maps as text, for debugging.
    public func describeMemory() -> String { spaces.describe(io: false) }
    public func describePorts() -> String { spaces.describe(io: true) }

    /// How often each address-space layer was rebuilt (for tests of the lazy rebuild).
    public var mappingRebuilds: (platform: Int, pci: Int) { spaces.rebuildCounts }
}
