import PCI
import Synchronization
import VMMBase

/// A hot-pluggable test endpoint with QEMU pci-testdev's identity (1b36:0005): an I/O BAR,
/// a 32-bit memory BAR and a 64-bit prefetchable memory BAR, each backed by scratch
/// registers the guest can write and read back. Used by tests and benchmarks.
public final class PCITestDevice: PCIFunction {
    public static let identity = PCIIdentity(vendorID: 0x1B36, deviceID: 0x0005, classCode: 0x00_FF_00,
                                             subsystemVendorID: 0x1AF4, subsystemID: 0x1100)
    public static let ioBARSize: UInt64 = 256
    public static let memoryBARSize: UInt64 = 4096
    public static let prefetchBARSize: UInt64 = 1 << 20

    public let name: String
    private let config: ConfigSpaceCell
    private let scratch: Mutex<[UInt8]>

    public init(name: String, express: Bool = false, multiFunction: Bool = false) {
        self.name = name
        var cs = ConfigSpace(layout: .endpoint, express: express)
        cs.setIdentity(Self.identity)
        cs.setInterruptPin(INTxPinRegister.a)
        cs.setMultiFunction(multiFunction)
        // The layout is fixed and valid; a failure here is a bug in this file.
        do {
            try cs.defineBAR(0, BARDescriptor(.io, size: Self.ioBARSize))
            try cs.defineBAR(1, BARDescriptor(.memory32(prefetchable: false), size: Self.memoryBARSize))
            try cs.defineBAR(2, BARDescriptor(.memory64(prefetchable: true), size: Self.prefetchBARSize))
        } catch {
            preconditionFailure("PCITestDevice BAR layout: \(error)")
        }
        config = ConfigSpaceCell(cs)
        scratch = Mutex([UInt8](repeating: 0, count: 3 * 256))
    }

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 { config.read(offset, width: width) }
    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        config.write(offset, width: width, value: value)
    }
    public func configSnapshot() -> ConfigSpace { config.snapshot() }
    public func reset() {
        config.reset()
        scratch.withLock { $0 = [UInt8](repeating: 0, count: 3 * 256) }
    }

    /// Each BAR exposes 256 bytes of scratch space at its start; the rest reads as zero.
    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 {
        guard (0...2).contains(index), offset < 256, offset + UInt64(width.bytes) <= 256 else { return 0 }
        return scratch.withLock { LittleEndian.load($0, at: index * 256 + Int(offset), count: width.bytes) }
    }

    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        guard (0...2).contains(index), offset < 256, offset + UInt64(width.bytes) <= 256 else { return }
        scratch.withLock { LittleEndian.store(value, into: &$0, at: index * 256 + Int(offset), count: width.bytes) }
    }
}
