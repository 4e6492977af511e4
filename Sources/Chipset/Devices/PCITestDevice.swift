import PCI
import Synchronization
import VMMBase

/// A hot-pluggable test endpoint with QEMU pci-testdev's identity (1b36:0005): an I/O BAR,
/// a 32-bit memory BAR and a 64-bit prefetchable memory BAR, MSI-X and INTx.
///
/// BAR layout (all BARs): bytes 0x00-0xFF are scratch registers the guest can write and read
/// back. In BAR 1, a write of N to the doorbell at 0x100 raises MSI-X vector N (or asserts
/// INTx while MSI-X is off); a write to 0x104 deasserts INTx. The MSI-X table (4 vectors)
/// is at 0x800 and the PBA at 0xC00 of BAR 1.
public final class PCITestDevice: InterruptingFunction {
    public static let identity = PCIIdentity(vendorID: 0x1B36, deviceID: 0x0005, classCode: 0x00_FF_00,
                                             subsystemVendorID: 0x1AF4, subsystemID: 0x1100)
    public static let ioBARSize: UInt64 = 256
    public static let memoryBARSize: UInt64 = 4096
    public static let prefetchBARSize: UInt64 = 1 << 20
    public static let doorbell: UInt64 = 0x100
    public static let intxClear: UInt64 = 0x104
    public static let msixLayout = MSIXLayout(vectors: 4, tableBAR: 1, tableOffset: 0x800, pbaBAR: 1, pbaOffset: 0xC00)

    public let name: String

    private struct State {
        var config: ConfigSpace
        var interrupts = InterruptArbiter(msix: PCITestDevice.msixLayout)
        var scratch = [UInt8](repeating: 0, count: 3 * 256)
        var output: any PCIInterruptOutput = DisconnectedInterrupts()
        var resetConfig: ConfigSpace
    }
    private let state: Mutex<State>

    public init(name: String, express: Bool = false, multiFunction: Bool = false) {
        self.name = name
        var cs = ConfigSpace(layout: .endpoint, express: express)
        cs.setIdentity(Self.identity)
        cs.setInterruptPin(1)
        cs.setMultiFunction(multiFunction)
        // The layout is fixed and valid; a failure here is a bug in this file.
        do {
            try cs.defineBAR(0, BARDescriptor(.io, size: Self.ioBARSize))
            try cs.defineBAR(1, BARDescriptor(.memory32(prefetchable: false), size: Self.memoryBARSize))
            try cs.defineBAR(2, BARDescriptor(.memory64(prefetchable: true), size: Self.prefetchBARSize))
            try cs.addPowerManagement()
            if express { try cs.addPCIExpress(PCIExpressOptions(portType: .endpoint)) }
            try cs.addMSIX(Self.msixLayout)
        } catch {
            preconditionFailure("PCITestDevice layout: \(error)")
        }
        cs.captureResetState()
        state = Mutex(State(config: cs, resetConfig: cs))
    }

    public func connect(interrupts: any PCIInterruptOutput) { state.withLock { $0.output = interrupts } }

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { $0.config.read(offset, width: width) }
    }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        let (effects, delivery, output) = state.withLock { s in
            let effects = s.config.write(offset, width: width, value: value)
            return (effects, s.interrupts.configWritten(effects, in: &s.config), s.output)
        }
        delivery.send(to: output)
        return effects
    }

    public func configSnapshot() -> ConfigSpace { state.withLock { $0.config } }

    public func reset() {
        let (delivery, output) = state.withLock { s in
            s.config = s.resetConfig
            s.scratch = [UInt8](repeating: 0, count: 3 * 256)
            return (s.interrupts.reset(in: &s.config), s.output)
        }
        delivery.send(to: output)
    }

    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 {
        state.withLock { s in
            if let value = s.interrupts.msixRead(bar: index, offset: offset, width: width) { return value }
            guard (0...2).contains(index), offset + UInt64(width.bytes) <= 256 else { return 0 }
            return LittleEndian.load(s.scratch, at: index * 256 + Int(offset), count: width.bytes)
        }
    }

    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        let (delivery, output) = state.withLock { s -> (InterruptDelivery, any PCIInterruptOutput) in
            if let written = s.interrupts.msixWrite(bar: index, offset: offset, width: width, value: value, in: s.config) {
                return (written.delivery, s.output)
            }
            if index == 1 && offset == Self.doorbell && width == .dword {
                return (s.interrupts.request(vector: Int(value & 0xFFFF), in: &s.config), s.output)
            }
            if index == 1 && offset == Self.intxClear && width == .dword {
                return (s.interrupts.lowerINTx(in: &s.config), s.output)
            }
            if (0...2).contains(index), offset + UInt64(width.bytes) <= 256 {
                LittleEndian.store(value, into: &s.scratch, at: index * 256 + Int(offset), count: width.bytes)
            }
            return (InterruptDelivery(), s.output)
        }
        delivery.send(to: output)
    }
}
