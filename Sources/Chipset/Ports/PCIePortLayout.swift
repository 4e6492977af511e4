import PCI

/// Everything that tells the four QEMU port models apart, as data. `makeConfigSpace()`
/// turns it into a config space laid out as QEMU 10 lays out the same device with the same
/// properties (offsets, reset values and write masks established by Tests/Oracle/qemu_ports.py
/// and kept in DeviceTables/fixtures/).
public struct PCIePortLayout: Sendable {
    public enum MessageInterrupts: Sendable, Hashable {
        /// MSI-X with one vector in a 4 KiB memory BAR 0 (table at 0, PBA at 0x800).
        case msixExclusiveBAR(capabilityOffset: Int)
        case msi(MSIOptions, capabilityOffset: Int)
    }

    /// QEMU's resource-reserve hint for firmware (Red Hat vendor capability, type 1):
    /// nil fields are "no hint" (all ones in the register).
    public struct ResourceReserve: Sendable, Hashable {
        public var bus: UInt32?
        public var io: UInt64?
        public var memory: UInt32?
        public var prefetchable32: UInt32?
        public var prefetchable64: UInt64?

        public init(bus: UInt32? = nil, io: UInt64? = nil, memory: UInt32? = nil,
                    prefetchable32: UInt32? = nil, prefetchable64: UInt64? = nil) {
            self.bus = bus
            self.io = io
            self.memory = memory
            self.prefetchable32 = prefetchable32
            self.prefetchable64 = prefetchable64
        }

        public var isEmpty: Bool { self == ResourceReserve() }
    }

    public var identity: PCIIdentity
    public var portType: PCIExpressOptions.PortType
    public var interruptPin: UInt8
    /// Bridge Subsystem Vendor ID capability (0x0D): vendor and subsystem.
    public var subsystem: (vendor: UInt16, id: UInt16)
    public var ssvidOffset: Int
    public var expressOffset: Int
    public var messages: MessageInterrupts
    /// The port's maximum link; Link Capabilities (2), Link Control 2 and the reset Link
    /// Status follow from it (the port number is added separately).
    public var link: PCIeLinkCapabilities
    public var portNumber: UInt8
    /// nil for ports without a slot (the upstream port).
    public var slot: PCIExpressSlotOptions?
    public var ariForwarding: Bool
    /// QEMU's xio3130 ports advertise Function Level Reset.
    public var functionLevelReset: Bool
    public var acs: ACSFeatures?
    /// Root ports come out of reset with their windows disabled (base above limit).
    public var windowsDisabledAtReset: Bool
    public var resourceReserve: ResourceReserve
    /// When false (io-reserve=0 on pcie-root-port) the I/O window and I/O decode are read-only.
    public var ioWindow: Bool

    /// Offsets QEMU uses for its extended capabilities on all four ports.
    public static let aerOffset = 0x100
    /// QEMU's AER capability is 0x48 bytes (it includes the TLP prefix log), so ACS follows at 0x148.
    public static let acsOffset = 0x148

    /// Link Capabilities bit 20: Data Link Layer Link Active Reporting Capable.
    public var reportsLinkActive: Bool { link.reportsLinkActive }

    public func makeConfigSpace() throws(ConfigSpaceError) -> ConfigSpace {
        var cs = ConfigSpace(layout: .bridge, express: true)
        cs.setIdentity(identity)
        cs.setInterruptPin(interruptPin)
        applyBridgeHeader(&cs)

        // Standard capabilities in QEMU's list order: PCI Express first, then (MSI-X, SSVID)
        // on pcie-root-port, (MSI, SSVID) on ioh3420, (SSVID, MSI) on the xio3130 ports.
        let express = try cs.addPCIExpress(PCIExpressOptions(
            portType: portType, maxPayloadSize: 128, extendedTagField: true,
            linkSpeed: .gt2_5, linkWidth: 1, portNumber: portNumber,
            dataLinkLayerActiveReporting: reportsLinkActive, slot: slot, ariForwarding: ariForwarding),
            at: expressOffset)
        applyExpressRegisters(&cs, base: express)
        switch messages {
        case .msixExclusiveBAR(let offset):
            try cs.defineBAR(0, BARDescriptor(.memory32(prefetchable: false), size: 0x1000))
            try cs.addMSIX(Self.msixLayout, at: offset)
            try addSubsystemVendor(&cs)
        case .msi(let options, let offset):
            if offset < ssvidOffset {
                try addSubsystemVendor(&cs)
                try cs.addMSI(options, at: offset)
            } else {
                try cs.addMSI(options, at: offset)
                try addSubsystemVendor(&cs)
            }
        }
        if !resourceReserve.isEmpty { try addResourceReserve(&cs) }

        let aer = try cs.addAER(AEROptions(ecrcGenerationCapable: true, ecrcCheckCapable: true,
                                           multipleHeaderRecordingCapable: true), at: Self.aerOffset)
        // QEMU also masks TLP Prefix Blocked (bit 25) at reset.
        cs.set(aer + AERRegister.uncorrectableMask, width: 4, value: UInt64(AERRegister.uncorrectableMaskDefault | 1 << 25))
        if let acs { try cs.addACS(acs, at: Self.acsOffset) }
        return cs
    }

    public static let msixLayout = MSIXLayout(vectors: 1, tableBAR: 0, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800)

    private func addSubsystemVendor(_ cs: inout ConfigSpace) throws(ConfigSpaceError) {
        let base = try cs.addCapability(id: CapabilityID.bridgeSubsystemVendor, length: 8, at: ssvidOffset)
        cs.set(base + 4, width: 2, value: UInt64(subsystem.vendor))
        cs.set(base + 6, width: 2, value: UInt64(subsystem.id))
    }

    /// The type-1 header as QEMU's pci_bridge presents it: 16-bit I/O addressing, no
    /// parity-error-response or master-abort-mode bits, no secondary latency timer, no
    /// upper I/O registers.
    private func applyBridgeHeader(_ cs: inout ConfigSpace) {
        var command: CommandBits = [.memory, .busMaster, .serr, .intxDisable]
        if ioWindow { command.insert(.io) }
        cs.setWritable(Reg.command, width: 2, mask: UInt64(command.rawValue))
        cs.setWritable(Reg.secondaryLatency, width: 1, mask: 0)
        cs.setWritable(Reg.ioBase, width: 1, mask: ioWindow ? 0xF0 : 0)
        cs.setWritable(Reg.ioLimit, width: 1, mask: ioWindow ? 0xF0 : 0)
        cs.setWritable(Reg.ioBaseUpper, width: 4, mask: 0)
        let control: BridgeControlBits = [.parityErrorResponse, .serr, .isa, .vga, .vga16, .secondaryBusReset]
        cs.setWritable(Reg.bridgeControl, width: 2, mask: UInt64(control.rawValue))
        if windowsDisabledAtReset {
            cs.set(Reg.ioBase, width: 1, value: 0xF0)
            cs.set(Reg.ioLimit, width: 1, value: 0x00)
            cs.set(Reg.memoryBase, width: 2, value: 0xFFF0)
            cs.set(Reg.memoryLimit, width: 2, value: 0x0000)
            cs.set(Reg.prefetchBase, width: 2, value: 0xFFF1)
            cs.set(Reg.prefetchLimit, width: 2, value: 0x0001)
        } else {
            cs.set(Reg.ioBase, width: 1, value: 0)
            cs.set(Reg.ioLimit, width: 1, value: 0)
        }
    }

    /// QEMU's PCI Express capability differs from the generic builder: only the error
    /// reporting enables of Device Control are writable (reset 0), Link Control and Link
    /// Control 2 are read-only, Root Control lacks PME Interrupt Enable, Slot Control lacks
    /// Power Fault Detected Enable.
    private func applyExpressRegisters(_ cs: inout ConfigSpace, base: Int) {
        cs.set(base + PCIExpressRegister.deviceControl, width: 2, value: 0)
        cs.setWritable(base + PCIExpressRegister.deviceControl, width: 2, mask: 0x000F)
        if functionLevelReset {
            let cap = cs.get(base + PCIExpressRegister.deviceCapabilities, width: 4)
            cs.set(base + PCIExpressRegister.deviceCapabilities, width: 4, value: cap | 1 << 28)
        }
        cs.set(base + PCIExpressRegister.linkCapabilities, width: 4,
               value: UInt64(link.register) | UInt64(portNumber) << 24)
        cs.setWritable(base + PCIExpressRegister.linkControl, width: 2, mask: 0)
        cs.set(base + PCIExpressRegister.linkStatus, width: 2, value: UInt64(link.linkStatus(partner: nil, active: false)))
        cs.set(base + PCIExpressRegister.linkCapabilities2, width: 4, value: UInt64(link.capabilities2))
        cs.set(base + PCIExpressRegister.linkControl2, width: 2, value: UInt64(link.targetSpeed))
        cs.setWritable(base + PCIExpressRegister.linkControl2, width: 2, mask: 0)
        if portType.hasRootRegisters {
            cs.setWritable(base + PCIExpressRegister.rootControl, width: 2, mask: 0x0007)
        }
        if slot != nil {
            let writable = cs.writable[base + PCIExpressRegister.slotControl]
            let lowMask = writable & ~UInt8(PCIExpressSlotControl.powerFaultDetectedEnable.rawValue)
            cs.setWritable(base + PCIExpressRegister.slotControl, width: 1, mask: UInt64(lowMask))
        }
    }

    /// QEMU's vendor-specific capability (ID 9) through which firmware learns how much bus,
    /// I/O and memory space to reserve behind a hot-plug port.
    private func addResourceReserve(_ cs: inout ConfigSpace) throws(ConfigSpaceError) {
        var payload: [UInt8] = [1]  // type: resource reserve
        func append(_ value: UInt64, bytes: Int) {
            for i in 0..<bytes { payload.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) }
        }
        let r = resourceReserve
        append(r.bus.map(UInt64.init) ?? 0xFFFF_FFFF, bytes: 4)
        append(r.io ?? UInt64.max, bytes: 8)
        append(r.memory.map(UInt64.init) ?? 0xFFFF_FFFF, bytes: 4)
        append(r.prefetchable32.map(UInt64.init) ?? 0xFFFF_FFFF, bytes: 4)
        append(r.prefetchable64 ?? UInt64.max, bytes: 8)
        try cs.addVendorSpecific(payload: payload)
    }
}
