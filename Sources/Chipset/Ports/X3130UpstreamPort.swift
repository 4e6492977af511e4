import PCI

/// QEMU's `x3130-upstream`: the upstream port of a TI XIO3130 switch, 104c:8232 rev 2.
/// No slot and no INTx pin; MSI (one 64-bit vector), AER, Function Level Reset.
public final class X3130UpstreamPort: PCIExpressPort {
    public let engine: PCIePortEngine

    public static let identity = PCIIdentity(vendorID: 0x104C, deviceID: 0x8232, revision: 2, classCode: 0x06_04_00)

    public init(name: String) throws(ConfigSpaceError) {
        engine = try PCIePortEngine(name: name, layout: Self.layout)
    }

    public static let layout = PCIePortLayout(
        identity: identity, portType: .upstreamPort, interruptPin: 0,
        subsystem: (vendor: 0, id: 0), ssvidOffset: 0x80, expressOffset: 0x90,
        messages: .msi(MSIOptions(vectors: 1, is64Bit: true, perVectorMasking: false), capabilityOffset: 0x70),
        link: .minimum,
        portNumber: 0, slot: nil, ariForwarding: false, functionLevelReset: true,
        acs: nil, windowsDisabledAtReset: false, resourceReserve: .init(), ioWindow: true)
}
