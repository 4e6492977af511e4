import PCI
import Synchronization
import VMMBase

/// A PCI-to-PCI bridge: a type-1 function with a secondary bus behind it. Config cycles for
/// buses in [secondary, subordinate] pass through it; its windows route memory and I/O.
/// This is the plain bridge; hot-plug controllers and PCIe port flavours build on it.
public final class PCIBridge: PCIBridgeFunction {
    public let name: String
    public let secondary: PCIBus
    private let config: ConfigSpaceCell

    /// QEMU's pci-bridge identity (Red Hat 1b36:0001, class 0604).
    public static let pciBridgeIdentity = PCIIdentity(vendorID: 0x1B36, deviceID: 0x0001, classCode: 0x06_04_00)

    public init(name: String, identity: PCIIdentity = PCIBridge.pciBridgeIdentity, express: Bool = false,
                configure: (inout ConfigSpace) throws(ConfigSpaceError) -> Void = { _ in }) throws(ConfigSpaceError) {
        self.name = name
        var cs = ConfigSpace(layout: .bridge, express: express)
        cs.setIdentity(identity)
        cs.setInterruptPin(INTxPinRegister.a)
        try configure(&cs)
        config = ConfigSpaceCell(cs)
        secondary = PCIBus(name: name, hotPluggable: false)
    }

    public var busNumbers: BridgeBusNumbers { config.withLock { $0.busNumbers } }

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 { config.read(offset, width: width) }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        let effects = config.write(offset, width: width, value: value)
        if effects.contains(.bridgeControlChanged),
           config.withLock({ $0.bridgeControl.contains(.secondaryBusReset) }) {
            // Asserting secondary bus reset resets everything behind the bridge.
            for (_, function) in secondary.functions { function.reset() }
        }
        return effects
    }

    public func configSnapshot() -> ConfigSpace { config.snapshot() }

    public func reset() {
        config.reset()
        for (_, function) in secondary.functions { function.reset() }
    }
}

/// Interrupt Pin register values.
public enum INTxPinRegister {
    public static let none: UInt8 = 0
    public static let a: UInt8 = 1
}
