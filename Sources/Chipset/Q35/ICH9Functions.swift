import PCI
import VMMBase

/// A function whose config space is all there is to it (here): registers, masks and BARs as
/// QEMU presents them, with nothing behind the BARs yet. q35 always has two of these on
/// device 31 beside the LPC, so guests and the differential tests see the same bus 0.
public final class ConfigOnlyFunction: PCIFunction {
    public let name: String
    private let config: ConfigSpaceCell

    public init(name: String, config: ConfigSpace) {
        self.name = name
        self.config = ConfigSpaceCell(config)
    }

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 { config.read(offset, width: width) }
    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        config.write(offset, width: width, value: value)
    }
    public func configSnapshot() -> ConfigSpace { config.snapshot() }
    public func reset() { config.reset() }
    /// Nothing is modelled behind the BARs: reads are zero, writes are dropped.
    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 { 0 }
}

public enum ICH9Functions {
    /// 00:1f.2, the ICH9 AHCI controller (8086:2922, class 0106 prog-if 01): BAR4 is the
    /// 32-byte index/data pair, BAR5 the 4 KiB ABAR; MSI (64-bit) at 0x80, SATA at 0xA8.
    public static func ahci(name: String = "ahci") -> ConfigOnlyFunction {
        var cs = ConfigSpace(layout: .endpoint, express: false, deviceSpecificStorage: true)
        cs.setIdentity(PCIIdentity(vendorID: 0x8086, deviceID: 0x2922, revision: 0x02, classCode: 0x01_06_01,
                                   subsystemVendorID: 0x1AF4, subsystemID: 0x1100))
        cs.setMultiFunction(true)
        cs.setInterruptPin(1)
        do {
            try cs.defineBAR(4, BARDescriptor(.io, size: 32))
            try cs.defineBAR(5, BARDescriptor(.memory32(prefetchable: false), size: 4096))
            try cs.addMSI(MSIOptions(vectors: 1, is64Bit: true, perVectorMasking: false), at: 0x80)
            // SATA capability: revision 1.0, BAR offset register points at BAR4 offset 0x10.
            let sata = try cs.addCapability(id: CapabilityID.sataConfig, length: 8, at: 0xA8)
            cs.set(sata + 2, width: 2, value: 0x0010)
            cs.set(sata + 4, width: 4, value: 0x0000_0048)
        } catch {
            preconditionFailure("ICH9 AHCI layout: \(error)")
        }
        // QEMU opens the MSI message data's upper half as plain storage too.
        cs.setWritable(0x8E, width: 2, mask: 0xFFFF)
        // The MAP register: QEMU's reset value 0x40 (combined mode off, SATA ports mapped).
        cs.set(0x90, width: 1, value: 0x40)
        return ConfigOnlyFunction(name: name, config: cs)
    }

    /// 00:1f.3, the ICH9 SMBus controller (8086:2930, class 0c05): BAR4 is its 64-byte
    /// I/O window; HOSTC at 0x40 (bit 3 read-only).
    public static func smbus(name: String = "smbus") -> ConfigOnlyFunction {
        var cs = ConfigSpace(layout: .endpoint, express: false, deviceSpecificStorage: true)
        cs.setIdentity(PCIIdentity(vendorID: 0x8086, deviceID: 0x2930, revision: 0x02, classCode: 0x0C_05_00,
                                   subsystemVendorID: 0x1AF4, subsystemID: 0x1100))
        cs.setMultiFunction(true)
        cs.setInterruptPin(1)
        do {
            try cs.defineBAR(4, BARDescriptor(.io, size: 64))
        } catch {
            preconditionFailure("ICH9 SMBus layout: \(error)")
        }
        cs.setWritable(0x40, width: 1, mask: 0xF7)
        return ConfigOnlyFunction(name: name, config: cs)
    }
}

extension ConfigOnlyFunction: DeviceStateSnapshotting {
    /// The config space is the whole state.
    public func snapshot() -> ConfigSpace { config.snapshot() }

    public func restore(_ snapshot: ConfigSpace) throws(DeviceStateError) {
        let refusal = config.withLock { current -> DeviceStateError? in
            do throws(DeviceStateError) {
                try current.checkLayout(of: snapshot, device: name)
            } catch {
                return error
            }
            current = snapshot
            return nil
        }
        if let refusal { throw refusal }
    }
}
