// TEMPORARY stand-ins until the full MCH/LPC models land (branch `oracle`); delete on merge.
import Interrupts
import PCI
import Synchronization
import VMMBase

public final class Q35HostBridge: PCIFunction {
    public let name: String
    private let config: ConfigSpaceCell
    public init(name: String = "mch") {
        self.name = name
        var cs = ConfigSpace(layout: .endpoint, express: false)
        cs.setIdentity(PCIIdentity(vendorID: 0x8086, deviceID: 0x29C0, classCode: 0x06_00_00,
                                   subsystemVendorID: 0x1AF4, subsystemID: 0x1100))
        cs.setWritable(0x60, width: 8, mask: 0x0000_000F_F000_0007)
        config = ConfigSpaceCell(cs)
    }
    public var ecamWindow: (base: UInt64, size: UInt64)? {
        let v = config.withLock { $0.get(0x60, width: 8) }
        guard v & 1 == 1 else { return nil }
        let size: UInt64 = [256, 128, 64, 256][Int(v >> 1 & 3)] << 20
        return (v & 0xFFFF_FFF0_0000_0000 | v & 0xF000_0000 & ~(size - 1), size)
    }
    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 { config.read(offset, width: width) }
    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        var e = config.write(offset, width: width, value: value)
        if offset < 0x68 && offset + width.bytes > 0x60 { e.insert(.deviceSpecific) }
        return e
    }
    public func configSnapshot() -> ConfigSpace { config.snapshot() }
    public func reset() { config.reset() }
    public func pirq(forSlot slot: UInt8, pin: INTxPin) -> PIRQ { PIRQ(rawValue: (Int(slot) + pin.rawValue) % 4 + 4)! }
}

public final class ICH9LPC: PCIFunction {
    public let name: String
    private let config: ConfigSpaceCell
    public init(name: String = "lpc") {
        self.name = name
        var cs = ConfigSpace(layout: .endpoint, express: false)
        cs.setIdentity(PCIIdentity(vendorID: 0x8086, deviceID: 0x2918, revision: 2, classCode: 0x06_01_00,
                                   subsystemVendorID: 0x1AF4, subsystemID: 0x1100))
        cs.setMultiFunction(true)
        config = ConfigSpaceCell(cs)
    }
    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 { config.read(offset, width: width) }
    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        config.write(offset, width: width, value: value)
    }
    public func configSnapshot() -> ConfigSpace { config.snapshot() }
    public func reset() { config.reset() }
    public func pirq(forSlot slot: UInt8, pin: INTxPin) -> PIRQ { PIRQ(rawValue: (Int(slot) + pin.rawValue) % 4 + 4)! }
}
