/// Everything needed to build a machine.
public struct MachineConfiguration: Sendable, Hashable {
    public var memorySize: UInt64
    public var layout: Q35Layout
    /// Devices in the order they are created; a device's bus must be defined before it.
    public var devices: [DeviceSpec]
    /// QEMU's `ICH9-LPC.acpi-pci-hotplug-with-bridge-support`: hot-plug into ports and bridges
    /// goes through the ACPI PCI hot-plug block (GPE0 bit 1, `_E01`/`_EJ0`) instead of the
    /// ports' and bridges' own controllers, and `_OSC` keeps native PCIe hot-plug from the OS.
    /// Off by default (QEMU 10 defaults it on): see the README's hot-plug section.
    public var acpiPCIHotplug: Bool
    /// Host network backends (-netdev), by id, for devices' netdev= to name.
    public var netdevs: [NetdevSpec] = []
    /// `-object iommufd,id=ID`: the iommufd objects a vfio-pci's `iommufd=` may name.
    public var iommufdObjects: [String] = []

    public init(memorySize: UInt64 = 128 << 20, layout: Q35Layout = .standard, devices: [DeviceSpec] = [],
                acpiPCIHotplug: Bool = false) {
        self.memorySize = memorySize
        self.layout = layout
        self.devices = devices
        self.acpiPCIHotplug = acpiPCIHotplug
    }

    /// The built-in default machine `make run` shows: q35 with a PCI-PCI bridge and test
    /// endpoints on both sides of it, and an empty PCIe root port (rp1) to hot-plug into.
    public static var defaultMachine: MachineConfiguration {
        MachineConfiguration(devices: [
            DeviceSpec(driver: "pci-testdev", id: "t0", bus: "pcie.0", devfn: 2 << 3),
            DeviceSpec(driver: "pci-bridge", id: "br1", bus: "pcie.0", devfn: 3 << 3),
            DeviceSpec(driver: "pci-testdev", id: "t1", bus: "br1", devfn: 1 << 3),
            DeviceSpec(driver: "pci-testdev", id: "t2", bus: "br1", devfn: 2 << 3),
            DeviceSpec(driver: "pcie-root-port", id: "rp1", bus: "pcie.0", devfn: 4 << 3,
                       properties: ["chassis": "1", "slot": "1"]),
        ])
    }
}
