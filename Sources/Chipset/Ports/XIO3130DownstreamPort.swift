import PCI

/// QEMU's `xio3130-downstream`: a downstream port of a TI XIO3130 switch, 104c:8233 rev 1,
/// with a native hot-plug slot. No INTx pin (hot-plug interrupts need MSI); MSI (one 64-bit
/// vector), AER, Function Level Reset. QEMU leaves its link speed and width fields zero.
public final class XIO3130DownstreamPort: PCIExpressPort, HotPlugController {
    public let engine: PCIePortEngine
    public let settings: PCIeSlotSettings

    public static let identity = PCIIdentity(vendorID: 0x104C, deviceID: 0x8233, revision: 1, classCode: 0x06_04_00)

    public init(name: String, settings: PCIeSlotSettings = .init()) throws(ConfigSpaceError) {
        self.settings = settings
        engine = try PCIePortEngine(name: name, layout: Self.layout(settings))
    }

    public static func layout(_ settings: PCIeSlotSettings) -> PCIePortLayout {
        PCIePortLayout(
            identity: identity, portType: .downstreamPort, interruptPin: 0,
            subsystem: (vendor: 0, id: 0), ssvidOffset: 0x80, expressOffset: 0x90,
            messages: .msi(MSIOptions(vectors: 1, is64Bit: true, perVectorMasking: false), capabilityOffset: 0x70),
            link: PCIeLinkCapabilities(maxSpeed: 0, maxWidth: 0),
            portNumber: settings.port, slot: settings.slotOptions, ariForwarding: true, functionLevelReset: true,
            acs: nil, windowsDisabledAtReset: false, resourceReserve: .init(), ioWindow: true)
    }
}
