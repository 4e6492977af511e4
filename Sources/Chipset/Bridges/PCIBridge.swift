import PCI
import Synchronization
import VMMBase

/// What a QEMU-compatible bridge is built with. The defaults are QEMU 10's defaults.
public struct PCIBridgeOptions: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        /// `pci-bridge`, 1b36:0001: conventional PCI-PCI bridge with a Slot ID capability.
        case pciBridge = "pci-bridge"
        /// `pcie-pci-bridge`, 1b36:000e: PCI Express to PCI bridge (PCIe, PM and AER).
        case pcieToPCIBridge = "pcie-pci-bridge"
    }

    public var kind: Kind
    /// Slot ID capability chassis number (pci-bridge only), 1...255.
    public var chassisNumber: UInt8
    /// A Standard Hot-Plug Controller for the 31 slots behind the bridge.
    public var shpc: Bool
    /// MSI for the SHPC's interrupts; only with `shpc`.
    public var msi: Bool
    /// The Header Type multi-function bit.
    public var multiFunction: Bool

    public init(kind: Kind = .pciBridge, chassisNumber: UInt8 = 1, shpc: Bool = true, msi: Bool = true,
                multiFunction: Bool = false) {
        self.kind = kind
        self.chassisNumber = chassisNumber
        self.shpc = shpc
        self.msi = msi
        self.multiFunction = multiFunction
    }
}

/// A PCI-to-PCI bridge laid out as QEMU 10 lays out `pci-bridge` (1b36:0001) or
/// `pcie-pci-bridge` (1b36:000e), with the Standard Hot-Plug Controller behind BAR 0 and the
/// SHPC capability's DWORD select/data window. Config cycles for buses in
/// [secondary, subordinate] pass through it; its windows route memory and 16-bit I/O.
///
/// SHPC interrupts go out as MSI when the guest enabled MSI, otherwise on INTA.
public final class PCIBridge: PCIBridgeFunction, InterruptingFunction, HotPlugController {
    public let name: String
    public let secondary: PCIBus
    public let options: PCIBridgeOptions

    /// QEMU's pci-bridge identity (Red Hat 1b36:0001, class 0604).
    public static let pciBridgeIdentity = PCIIdentity(vendorID: 0x1B36, deviceID: 0x0001, classCode: 0x06_04_00)
    /// QEMU's pcie-pci-bridge identity (Red Hat 1b36:000e, class 0604).
    public static let pcieToPCIBridgeIdentity = PCIIdentity(vendorID: 0x1B36, deviceID: 0x000E, classCode: 0x06_04_00)

    private struct State {
        var config: ConfigSpace
        var shpc: SHPCController?
        /// The SHPC's interrupt condition becomes an MSI or the INTA level.
        var interrupts = InterruptArbiter()
        var events: [HotPlugEvent] = []
    }
    private let state: Mutex<State>
    private let output = Mutex<any PCIInterruptOutput>(DisconnectedInterrupts())
    /// Offset of the SHPC capability, when there is one.
    public let shpcCapability: Int?

    /// Builds the bridge. `configure` may adjust the config space before its reset state is
    /// captured (callers use it for the multi-function bit).
    public init(name: String, options: PCIBridgeOptions = .init(),
                configure: (inout ConfigSpace) throws(ConfigSpaceError) -> Void = { _ in }) throws(ConfigSpaceError) {
        self.name = name
        self.options = options
        var (cs, cap) = try Self.qemuConfigSpace(options)
        try configure(&cs)
        cs.captureResetState()
        shpcCapability = cap
        secondary = PCIBus(name: name)
        let shpc = options.shpc ? SHPCController(name: name) : nil
        state = Mutex(State(config: cs, shpc: shpc))
    }

    // MARK: Config space layout (QEMU 10, default properties; see DeviceTables/fixtures)

    /// SHPC capability: ID, next, DWORD Select (RW), CSP/CIP (RO 0), DWORD Data.
    static let shpcCapabilityLength = 8
    static let dwordSelect = 2
    static let dwordData = 4

    static func qemuConfigSpace(_ o: PCIBridgeOptions) throws(ConfigSpaceError) -> (ConfigSpace, Int?) {
        let express = o.kind == .pcieToPCIBridge
        var cs = ConfigSpace(layout: .bridge, express: express)
        cs.setIdentity(express ? pcieToPCIBridgeIdentity : pciBridgeIdentity)
        cs.setMultiFunction(o.multiFunction)
        // Header as QEMU's pci_bridge_initfn: 66 MHz and fast back-to-back capable on both
        // sides, 16-bit I/O windows, no Parity Error Response in Command, discard timer bits
        // in Bridge Control.
        cs.setWritable(Reg.command, width: 2, mask: 0x0507)
        cs.setBits(Reg.status, width: 2, 0x00A0, to: true)
        cs.setBits(Reg.secondaryStatus, width: 2, 0x00A0, to: true)
        cs.set(Reg.ioBase, width: 1, value: 0)
        cs.set(Reg.ioLimit, width: 1, value: 0)
        cs.setWritable(Reg.ioBaseUpper, width: 4, mask: 0)
        cs.setWritable(Reg.bridgeControl, width: 2, mask: 0x0BFF)
        cs.setWriteOneToClear(Reg.bridgeControl, width: 2, mask: 0x0400)
        if o.shpc {
            cs.setInterruptPin(INTxPinRegister.a)
            try cs.defineBAR(0, BARDescriptor(.memory64(prefetchable: false), size: SHPCController.barSize))
        }

        // QEMU places each capability in the first free space and links it at the head of
        // the list, so the list runs from the last added to the first.
        var added: [Int] = []
        var shpcCap: Int?
        if o.shpc {
            let cap = try cs.addCapability(id: CapabilityID.hotPlug, length: shpcCapabilityLength)
            cs.setWritable(cap + dwordSelect, width: 1, mask: 0xFF)
            shpcCap = cap
            added.append(cap)
        }
        switch o.kind {
        case .pciBridge:
            // Slot Identification: no expansion slots, first in chassis; chassis writable.
            let cap = try cs.addCapability(id: 0x04, length: 4)
            cs.set(cap + 2, width: 1, value: 0x20)
            cs.set(cap + 3, width: 1, value: UInt64(o.chassisNumber))
            cs.setWritable(cap + 3, width: 1, mask: 0xFF)
            added.append(cap)
        case .pcieToPCIBridge:
            let pcie = try cs.addPCIExpress(PCIExpressOptions(portType: .pcieToPCIBridge, maxPayloadSize: 128,
                                                              extendedTagField: true, linkSpeed: .gt2_5, linkWidth: 1))
            // QEMU's values where the generic builder differs: no default Device Control bits
            // and only the error reporting enables writable; L0s in Link Capabilities; Link
            // Control, Link Capabilities 2 and Link Control 2 all zero and read-only; ARI
            // forwarding advertised and enabled through Device Control 2.
            cs.set(pcie + PCIExpressRegister.deviceControl, width: 2, value: 0)
            cs.setWritable(pcie + PCIExpressRegister.deviceControl, width: 2, mask: 0x000F)
            cs.set(pcie + PCIExpressRegister.linkCapabilities, width: 4, value: 0x0000_0411)
            cs.setWritable(pcie + PCIExpressRegister.linkControl, width: 2, mask: 0)
            cs.set(pcie + PCIExpressRegister.linkCapabilities2, width: 4, value: 0)
            cs.set(pcie + PCIExpressRegister.linkControl2, width: 2, value: 0)
            cs.setWritable(pcie + PCIExpressRegister.linkControl2, width: 2, mask: 0)
            cs.set(pcie + PCIExpressRegister.deviceCapabilities2, width: 4, value: 0x0030_0020)
            cs.setWritable(pcie + PCIExpressRegister.deviceControl2, width: 2, mask: 0x8020)
            added.append(pcie)
            let pm = try cs.addPowerManagement(PowerManagementOptions(noSoftReset: false))
            // QEMU 10 keeps this bridge in D0: PMCSR ignores writes.
            cs.setWritable(pm + PowerManagementRegister.controlStatus, width: 2, mask: 0)
            added.append(pm)
        }
        if o.shpc && o.msi {
            added.append(try cs.addMSI(MSIOptions(vectors: 1, is64Bit: true, perVectorMasking: true)))
        }
        if o.kind == .pcieToPCIBridge {
            let aer = try cs.addAER(AEROptions(ecrcGenerationCapable: true, ecrcCheckCapable: true),
                                    at: Reg.extendedStart)
            // Uncorrectable Internal Error and TLP Prefix Blocked start masked.
            cs.set(aer + AERRegister.uncorrectableMask, width: 4, value: 0x0240_0000)
        }
        cs.set(Reg.capabilitiesPointer, width: 1, value: UInt64(added.last ?? 0))
        for (i, cap) in added.enumerated() {
            cs.set(cap + 1, width: 1, value: UInt64(i == 0 ? 0 : added[i - 1]))
        }
        return (cs, shpcCap)
    }

    // MARK: PCIFunction

    public var busNumbers: BridgeBusNumbers { state.withLock { $0.config.busNumbers } }

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { $0.config.read(offset, width: width) }
    }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        let (effects, delivery) = state.withLock { s -> (ConfigWriteEffects, InterruptDelivery) in
            var effects = s.config.write(offset, width: width, value: value)
            if let cap = shpcCapability, s.shpc != nil {
                // Bytes of the DWORD Data register go to the selected SHPC register.
                let data = cap + Self.dwordData
                let lo = max(offset, data), hi = min(offset + width.bytes, data + 4)
                if lo < hi {
                    let part = UInt32(truncatingIfNeeded: UInt64(value) >> (8 * UInt64(lo - offset)))
                    let select = Int(s.config.get(cap + Self.dwordSelect, width: 1))
                    s.events += s.shpc!.write(select * 4 + (lo - data), width: hi - lo, value: part)
                    effects.insert(.deviceSpecific)
                }
            }
            var delivery = s.interrupts.configWritten(effects, in: &s.config)
            delivery.append(self.update(&s))
            return (effects, delivery)
        }
        deliver(delivery)
        return effects
    }

    public func configSnapshot() -> ConfigSpace { state.withLock { $0.config } }

    public func reset() {
        let occupied = occupiedDevices()
        let delivery = state.withLock { s -> InterruptDelivery in
            s.config.reset()
            s.shpc?.reset(occupiedDevices: occupied)
            var delivery = s.interrupts.reset(in: &s.config)
            delivery.append(update(&s))
            return delivery
        }
        deliver(delivery)
    }

    /// BAR 0 is the SHPC register set (256 bytes). Accesses of any width and alignment are
    /// taken byte-wise as QEMU does; a 64-bit access is two 32-bit accesses.
    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 {
        guard index == 0, offset < SHPCController.barSize else { return 0 }
        return state.withLock { s -> UInt64 in
            guard let shpc = s.shpc else { return 0 }
            let o = Int(offset)
            if width == .qword {
                return UInt64(shpc.read(o, width: 4)) | UInt64(shpc.read(o + 4, width: 4)) << 32
            }
            return UInt64(shpc.read(o, width: width.bytes))
        }
    }

    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        guard index == 0, offset < SHPCController.barSize else { return }
        let delivery = state.withLock { s -> InterruptDelivery in
            guard s.shpc != nil else { return InterruptDelivery() }
            let o = Int(offset)
            if width == .qword {
                s.events += s.shpc!.write(o, width: 4, value: UInt32(truncatingIfNeeded: value))
                s.events += s.shpc!.write(o + 4, width: 4, value: UInt32(truncatingIfNeeded: value >> 32))
            } else {
                s.events += s.shpc!.write(o, width: width.bytes, value: UInt32(truncatingIfNeeded: value))
            }
            return update(&s)
        }
        deliver(delivery)
    }

    // MARK: Interrupts

    public func connect(interrupts: any PCIInterruptOutput) {
        output.withLock { $0 = interrupts }
    }

    /// Refreshes the DWORD Data window and hands the SHPC's interrupt level to the arbiter.
    private func update(_ s: inout State) -> InterruptDelivery {
        guard let shpc = s.shpc else { return InterruptDelivery() }
        if let cap = shpcCapability {
            let select = Int(s.config.get(cap + Self.dwordSelect, width: 1))
            s.config.set(cap + Self.dwordData, width: 4, value: UInt64(shpc.read(select * 4, width: 4)))
        }
        return s.interrupts.setCondition(shpc.interruptLevel, in: &s.config)
    }

    private func deliver(_ delivery: InterruptDelivery) {
        guard !delivery.isEmpty else { return }
        delivery.send(to: output.withLock { $0 })
    }

    // MARK: HotPlugController

    public var hotPlugSlots: [UInt8] { state.withLock { $0.shpc?.hotPlugDevices ?? [] } }

    public func plug(device: UInt8) throws(HotPlugError) {
        let delivery = try state.withLock { (s: inout State) throws(HotPlugError) -> InterruptDelivery in
            guard s.shpc != nil else { throw .noSuchSlot(controller: name, device: device) }
            try s.shpc!.plug(device: device)
            return update(&s)
        }
        deliver(delivery)
    }

    /// A device attached while the machine is built: its SHPC slot is found occupied and enabled.
    public func coldPlug(device: UInt8) {
        let delivery = state.withLock { s -> InterruptDelivery in
            s.shpc?.coldPlug(device: device)
            return update(&s)
        }
        deliver(delivery)
    }

    public func requestUnplug(device: UInt8, mode: UnplugMode) throws(HotPlugError) {
        let delivery = try state.withLock { (s: inout State) throws(HotPlugError) -> InterruptDelivery in
            guard s.shpc != nil else { throw .noSuchSlot(controller: name, device: device) }
            s.events += try s.shpc!.requestUnplug(device: device, mode: mode)
            return update(&s)
        }
        deliver(delivery)
    }

    public func takeEvents() -> [HotPlugEvent] {
        state.withLock { s in
            defer { s.events = [] }
            return s.events
        }
    }

    /// The SHPC's registers, for monitors and tests.
    public var shpcSnapshot: SHPCController? { state.withLock { $0.shpc } }

    private func occupiedDevices() -> Set<UInt8> {
        Set(secondary.functions.map { $0.devfn >> 3 })
    }
}

/// Interrupt Pin register values.
public enum INTxPinRegister {
    public static let none: UInt8 = 0
    public static let a: UInt8 = 1
}

extension PCIBridge: SnapshottableFunction {
    public static var snapshotModel: String { "pci-bridge" }
}

extension PCIBridge: DeviceStateSnapshotting {
    /// Config space, the SHPC's registers and the interrupt state. Hot-plug events not yet
    /// taken by the machine are not state: they were already acted on or will be re-raised.
    public struct Snapshot: Sendable, Hashable, Codable {
        var config: ConfigSpace
        var shpc: SHPCController?
        var interrupts: InterruptArbiter
    }

    public func snapshot() -> Snapshot {
        state.withLock { Snapshot(config: $0.config, shpc: $0.shpc, interrupts: $0.interrupts) }
    }

    public func restore(_ snapshot: Snapshot) throws(DeviceStateError) {
        let delivery = try state.withLock { s throws(DeviceStateError) in
            try s.config.checkLayout(of: snapshot.config, device: name)
            try s.interrupts.checkLayout(of: snapshot.interrupts, device: name)
            guard s.shpc?.size == snapshot.shpc?.size else {
                throw .layoutMismatch(device: name, reason: "a different SHPC")
            }
            let delivery = s.interrupts.delivery(restoring: snapshot.interrupts)
            s.config = snapshot.config
            s.shpc = snapshot.shpc
            s.interrupts = snapshot.interrupts
            return delivery
        }
        deliver(delivery)
    }
}
