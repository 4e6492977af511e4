import PCI

/// QEMU's `ioh3420`: the Intel X58 (IOH 3420) root port, 8086:3420 rev 2, 2.5 GT/s x1,
/// MSI with two maskable vectors, AER, no ACS.
public final class IOH3420RootPort: PCIExpressPort, HotPlugController {
    public let engine: PCIePortEngine
    public let settings: PCIeSlotSettings

    public static let identity = PCIIdentity(vendorID: 0x8086, deviceID: 0x3420, revision: 2, classCode: 0x06_04_00)

    public init(name: String, settings: PCIeSlotSettings = .init()) throws(ConfigSpaceError) {
        self.settings = settings
        engine = try PCIePortEngine(name: name, layout: Self.layout(settings))
    }

    public static func layout(_ settings: PCIeSlotSettings) -> PCIePortLayout {
        PCIePortLayout(
            identity: identity, portType: .rootPort, interruptPin: 1,
            subsystem: (vendor: 0x8086, id: 0), ssvidOffset: 0x40, expressOffset: 0x90,
            messages: .msi(MSIOptions(vectors: 2, is64Bit: false, perVectorMasking: true), capabilityOffset: 0x60),
            link: .minimum,
            portNumber: settings.port, slot: settings.slotOptions, ariForwarding: true, functionLevelReset: false,
            acs: nil, windowsDisabledAtReset: true, resourceReserve: .init(), ioWindow: true)
    }
}
