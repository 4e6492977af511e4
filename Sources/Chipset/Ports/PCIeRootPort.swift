import PCI

/// QEMU's generic `pcie-root-port` (Red Hat 1b36:000c): a 16 GT/s x32 root port with a
/// native hot-plug slot, MSI-X (one vector in BAR 0), AER and ACS.
public final class PCIeRootPort: PCIExpressPort, HotPlugController {
    public let engine: PCIePortEngine
    public let settings: PCIeSlotSettings

    public static let identity = PCIIdentity(vendorID: 0x1B36, deviceID: 0x000C, revision: 0, classCode: 0x06_04_00)

    /// QEMU's defaults for `x-speed` and `x-width`: 16 GT/s, x32.
    public static let defaultLink = PCIeLinkCapabilities(maxSpeed: 4, maxWidth: 32)

    public init(name: String, settings: PCIeSlotSettings = .init(), link: PCIeLinkCapabilities = defaultLink,
                resourceReserve: PCIePortLayout.ResourceReserve = .init()) throws(ConfigSpaceError) {
        self.settings = settings
        engine = try PCIePortEngine(name: name, layout: Self.layout(settings, link: link, resourceReserve: resourceReserve))
    }

    public static func layout(_ settings: PCIeSlotSettings, link: PCIeLinkCapabilities = defaultLink,
                              resourceReserve: PCIePortLayout.ResourceReserve = .init()) -> PCIePortLayout {
        PCIePortLayout(
            identity: identity, portType: .rootPort, interruptPin: 1,
            subsystem: (vendor: 0x1B36, id: 0), ssvidOffset: 0x40, expressOffset: 0x54,
            messages: .msixExclusiveBAR(capabilityOffset: 0x48),
            link: link, portNumber: settings.port,
            slot: settings.slotOptions, ariForwarding: true, functionLevelReset: false,
            acs: ACSFeatures.isolation.union(.directTranslatedP2P), windowsDisabledAtReset: true,
            resourceReserve: resourceReserve, ioWindow: resourceReserve.io != 0)
    }
}
