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
///
/// With `sriovMaxVFs` (QEMU nvme's `sriov_max_vfs` spelling) it is an SR-IOV physical function
/// (PCI Express, ARI, SR-IOV) whose VFs are `PCITestVirtualFunction`s: TotalVFs = InitialVFs =
/// the count; First VF Offset 1 and VF Stride 1, as QEMU's nvme, so with the PF at function 0
/// of a link VF n sits at ARI function n (functions 8 and up need the port's ARI Forwarding);
/// VF Device ID 0x1005 (the PF's 0x0005 with bit 12 set, an ID no QEMU device uses); one VF
/// BAR 0 of 4 KiB (the size of the PF's BAR 1), non-prefetchable 32-bit memory, grown to the
/// System Page Size software picks among QEMU's Supported Page Sizes (4 KiB to 4 MiB).
public final class PCITestDevice: InterruptingFunction, SRIOVPhysicalFunction {
    public static let identity = PCIIdentity(vendorID: 0x1B36, deviceID: 0x0005, classCode: 0x00_FF_00,
                                             subsystemVendorID: 0x1AF4, subsystemID: 0x1100)
    public static let ioBARSize: UInt64 = 256
    public static let memoryBARSize: UInt64 = 4096
    public static let prefetchBARSize: UInt64 = 1 << 20
    public static let doorbell: UInt64 = 0x100
    public static let intxClear: UInt64 = 0x104
    public static let msixLayout = MSIXLayout(vectors: 4, tableBAR: 1, tableOffset: 0x800, pbaBAR: 1, pbaOffset: 0xC00)
    public static let vfDeviceID: UInt16 = 0x1005
    /// Per-VF BAR 0 at 4 KiB pages.
    public static let vfBARs: [Int: BARDescriptor] = [0: BARDescriptor(.memory32(prefetchable: false), size: memoryBARSize)]
    /// VFs 1-255 at functions 1-255 fill the 8-bit ARI function space of the PF's link.
    public static let maximumVFs = 255

    public let name: String

    private struct State {
        var config: ConfigSpace
        var interrupts = InterruptArbiter(msix: PCITestDevice.msixLayout)
        var scratch = [UInt8](repeating: 0, count: 3 * 256)
        var output: any PCIInterruptOutput = DisconnectedInterrupts()
        var resetConfig: ConfigSpace
        /// The SR-IOV registers as last written (nil without the capability).
        var sriov: SRIOVState?
        /// Nil without SR-IOV.
        var vfs: VirtualFunctionTable?
        /// Config and BAR accesses served so far.
        var accesses: UInt64 = 0
    }
    private let state: Mutex<State>

    public let isSRIOVCapable: Bool
    /// Every VF's config space as made (nil without SR-IOV): the layout a VF snapshot must have.
    private let vfHeader: ConfigSpace?

    /// - Parameter sriovMaxVFs: 1...`maximumVFs` for an SR-IOV physical function (which is
    ///   always PCI Express), nil for none.
    public init(name: String, express: Bool = false, multiFunction: Bool = false, sriovMaxVFs: Int? = nil) {
        self.name = name
        isSRIOVCapable = sriovMaxVFs != nil
        var cs = ConfigSpace(layout: .endpoint, express: express || sriovMaxVFs != nil)
        cs.setIdentity(Self.identity)
        cs.setInterruptPin(1)
        cs.setMultiFunction(multiFunction)
        // The layout is fixed and valid; a failure here is a bug in this file.
        do {
            try cs.defineBAR(0, BARDescriptor(.io, size: Self.ioBARSize))
            try cs.defineBAR(1, BARDescriptor(.memory32(prefetchable: false), size: Self.memoryBARSize))
            try cs.defineBAR(2, BARDescriptor(.memory64(prefetchable: true), size: Self.prefetchBARSize))
            try cs.addPowerManagement()
            if express || sriovMaxVFs != nil { try cs.addPCIExpress(PCIExpressOptions(portType: .endpoint)) }
            try cs.addMSIX(Self.msixLayout)
            if let sriovMaxVFs {
                precondition((1...Self.maximumVFs).contains(sriovMaxVFs), "sriov_max_vfs is checked by the caller")
                try cs.addARI(nextFunction: 0)
                try cs.addSRIOV(SRIOVOptions(totalVFs: UInt16(sriovMaxVFs), firstVFOffset: 1, vfStride: 1,
                                             vfDeviceID: Self.vfDeviceID, vfBARs: Self.vfBARs))
            }
        } catch {
            preconditionFailure("PCITestDevice layout: \(error)")
        }
        cs.captureResetState()
        var vfs: VirtualFunctionTable?
        var vfHeaderMade: ConfigSpace?
        if sriovMaxVFs != nil {
            let vfHeader: ConfigSpace
            do {
                vfHeader = try ConfigSpace.virtualFunction(of: cs)
            } catch {
                preconditionFailure("PCITestDevice VF layout: \(error)")
            }
            vfHeaderMade = vfHeader
            let owner = name
            vfs = VirtualFunctionTable { index in PCITestVirtualFunction(name: "\(owner)-vf\(index)", config: vfHeader) }
        }
        vfHeader = vfHeaderMade
        state = Mutex(State(config: cs, resetConfig: cs, sriov: cs.sriovState, vfs: vfs))
    }

    // MARK: SR-IOV

    public func virtualFunction(atRoutingOffset offset: Int) -> (any PCIFunction)? {
        guard isSRIOVCapable else { return nil }
        return state.withLock { s in s.vfs?.function(atRoutingOffset: offset, state: s.sriov) }
    }

    public var enabledVirtualFunctions: [EnabledVirtualFunction] {
        guard isSRIOVCapable else { return [] }
        return state.withLock { s in s.vfs?.enabled(state: s.sriov) ?? [] }
    }

    /// After SR-IOV registers changed: VF BARs follow the System Page Size, VFs no longer
    /// enabled are gone.
    private static func followSRIOV(_ s: inout State) {
        guard s.sriov != nil else { return }
        s.config.alignVFBARs(vfBARs)
        s.sriov = s.config.sriovState
        s.vfs?.release(outside: s.sriov)
    }

    public func connect(interrupts: any PCIInterruptOutput) { state.withLock { $0.output = interrupts } }

    /// How many config and BAR accesses reached this function (snapshots and reset excluded):
    /// stress tests check that none reaches it after its unplug returned.
    public var accessCount: UInt64 { state.withLock { $0.accesses } }

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { s in
            s.accesses &+= 1
            return s.config.read(offset, width: width)
        }
    }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        let (effects, delivery, output) = state.withLock { s in
            s.accesses &+= 1
            let effects = s.config.write(offset, width: width, value: value)
            if effects.contains(.sriovChanged) { Self.followSRIOV(&s) }
            return (effects, s.interrupts.configWritten(effects, in: &s.config), s.output)
        }
        delivery.send(to: output)
        return effects
    }

    public func configSnapshot() -> ConfigSpace { state.withLock { $0.config } }

    public func reset() {
        let (delivery, output) = state.withLock { s in
            s.config = s.resetConfig
            Self.followSRIOV(&s)
            s.scratch = [UInt8](repeating: 0, count: 3 * 256)
            return (s.interrupts.reset(in: &s.config), s.output)
        }
        delivery.send(to: output)
    }

    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 {
        state.withLock { s in
            s.accesses &+= 1
            if let value = s.interrupts.msixRead(bar: index, offset: offset, width: width) { return value }
            guard (0...2).contains(index), offset + UInt64(width.bytes) <= 256 else { return 0 }
            return LittleEndian.load(s.scratch, at: index * 256 + Int(offset), count: width.bytes)
        }
    }

    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        let (delivery, output) = state.withLock { s -> (InterruptDelivery, any PCIInterruptOutput) in
            s.accesses &+= 1
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

extension PCITestDevice: SnapshottableFunction {
    public static var snapshotModel: String { "pci-testdev" }
}

extension PCITestDevice: DeviceStateSnapshotting {
    /// Config space (with the SR-IOV registers), interrupt state (MSI-X table and PBA, INTx),
    /// the scratch BARs, and each enabled VF's state in VF order.
    public struct Snapshot: Sendable, Hashable, Codable {
        var config: ConfigSpace
        var interrupts: InterruptArbiter
        var scratch: [UInt8]
        var virtualFunctions: [PCITestVirtualFunction.Snapshot]
    }

    public func snapshot() -> Snapshot {
        state.withLock { s in
            // A VF not yet touched is made here in its reset state, as the guest would find it.
            let vfs = (s.vfs?.enabled(state: s.sriov) ?? []).compactMap { ($0.function as? PCITestVirtualFunction)?.snapshot() }
            return Snapshot(config: s.config, interrupts: s.interrupts, scratch: s.scratch, virtualFunctions: vfs)
        }
    }

    /// Throws unless the snapshot's VF states are one per VF its SR-IOV registers enable, each
    /// of this PF's VF layout.
    private func checkVirtualFunctions(of snapshot: Snapshot) throws(DeviceStateError) {
        let enabled = snapshot.config.sriovState?.activeVFs ?? 0
        guard snapshot.virtualFunctions.count == enabled else {
            throw .invalidValue(device: name, reason: "\(snapshot.virtualFunctions.count) VF states for \(enabled) enabled VFs")
        }
        guard let vfHeader else { return }
        for vf in snapshot.virtualFunctions {
            try PCITestVirtualFunction.check(vf, fits: vfHeader, device: "\(name) VF")
        }
    }

    public func restore(_ snapshot: Snapshot) throws(DeviceStateError) {
        let (delivery, output) = try state.withLock { s throws(DeviceStateError) in
            try s.config.checkLayout(of: snapshot.config, device: name)
            try s.interrupts.checkLayout(of: snapshot.interrupts, device: name)
            guard snapshot.scratch.count == s.scratch.count else {
                throw .layoutMismatch(device: name, reason: "\(snapshot.scratch.count) scratch bytes, not \(s.scratch.count)")
            }
            try checkVirtualFunctions(of: snapshot)
            let delivery = s.interrupts.delivery(restoring: snapshot.interrupts)
            s.config = snapshot.config
            s.interrupts = snapshot.interrupts
            s.scratch = snapshot.scratch
            Self.followSRIOV(&s)
            // The VFs come through the table as a guest access would make them, then take
            // their state (checked above, so this cannot refuse).
            for (vf, vfState) in zip(s.vfs?.enabled(state: s.sriov) ?? [], snapshot.virtualFunctions) {
                try (vf.function as? PCITestVirtualFunction)?.restore(vfState)
            }
            return (delivery, s.output)
        }
        delivery.send(to: output)
    }
}
