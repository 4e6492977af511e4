import VMMBase

/// Register offsets inside the SR-IOV extended capability (SR-IOV 1.1, 3.3).
public enum SRIOVRegister {
    public static let capabilities = 0x04
    /// SR-IOV Control (16): VF Enable (0), VF Migration Enable (1), VF Migration Interrupt
    /// Enable (2), VF MSE (3), ARI Capable Hierarchy (4).
    public static let control = 0x08
    public static let status = 0x0A
    public static let initialVFs = 0x0C
    public static let totalVFs = 0x0E
    public static let numVFs = 0x10
    public static let functionDependencyLink = 0x12
    public static let firstVFOffset = 0x14
    public static let vfStride = 0x16
    public static let vfDeviceID = 0x1A
    public static let supportedPageSizes = 0x1C
    public static let systemPageSize = 0x20
    public static let vfBAR0 = 0x24
    public static let migrationStateArray = 0x3C
    public static let length = 0x40

    static let vfEnable: UInt16 = 1 << 0
    static let vfMemorySpaceEnable: UInt16 = 1 << 3
    static let ariCapableHierarchy: UInt16 = 1 << 4
}

public struct SRIOVOptions: Sendable, Hashable {
    public var totalVFs: UInt16
    /// Nil means equal to `totalVFs` (required without VF migration).
    public var initialVFs: UInt16?
    /// Routing-ID distance from the PF to VF 1, and between consecutive VFs.
    public var firstVFOffset: UInt16
    public var vfStride: UInt16
    public var vfDeviceID: UInt16
    /// Bit n set: pages of 4 KiB << n supported. 4 KiB (bit 0) is mandatory.
    public var supportedPageSizes: UInt32
    public var functionDependencyLink: UInt8
    /// VF BARs 0-5 (memory only); a 64-bit BAR also takes the next slot.
    public var vfBARs: [Int: BARDescriptor]

    public init(totalVFs: UInt16, initialVFs: UInt16? = nil, firstVFOffset: UInt16 = 1, vfStride: UInt16 = 1,
                vfDeviceID: UInt16, supportedPageSizes: UInt32 = 0x553, functionDependencyLink: UInt8 = 0,
                vfBARs: [Int: BARDescriptor] = [:]) {
        self.totalVFs = totalVFs
        self.initialVFs = initialVFs
        self.firstVFOffset = firstVFOffset
        self.vfStride = vfStride
        self.vfDeviceID = vfDeviceID
        self.supportedPageSizes = supportedPageSizes
        self.functionDependencyLink = functionDependencyLink
        self.vfBARs = vfBARs
    }
}

/// The SR-IOV registers, decoded.
public struct SRIOVState: Sendable, Hashable {
    public let offset: Int
    public let vfEnabled: Bool
    public let vfMemorySpaceEnabled: Bool
    public let ariCapableHierarchy: Bool
    public let initialVFs: UInt16
    public let totalVFs: UInt16
    /// NumVFs as software wrote it.
    public let numVFsRequested: UInt16
    public let firstVFOffset: UInt16
    public let vfStride: UInt16
    public let vfDeviceID: UInt16
    /// The system page size in bytes (the lowest set bit of the register; 4 KiB if none).
    public let systemPageSize: UInt64
    /// Per VF BAR index: the BAR's kind and per-VF size.
    public let vfBARs: [Int: BARDescriptor]
    /// Per VF BAR index: the programmed base address of VF 0's copy.
    public let vfBARAddresses: [Int: UInt64]

    /// VFs that exist: NumVFs clamped to TotalVFs, zero while VF Enable is off.
    public var activeVFs: Int { vfEnabled ? Int(min(numVFsRequested, totalVFs)) : 0 }

    /// The routing-ID offset of VF `n` (0-based) from its PF.
    public func routingIDOffset(ofVF n: Int) -> Int { Int(firstVFOffset) + n * Int(vfStride) }

    /// The 0-based VF whose routing ID lies `offset` past the PF's, if that VF is enabled.
    public func vfIndex(atRoutingOffset offset: Int) -> Int? {
        let distance = offset - Int(firstVFOffset)
        guard distance >= 0, activeVFs > 0 else { return nil }
        let index = vfStride == 0 ? (distance == 0 ? 0 : -1) : (distance % Int(vfStride) == 0 ? distance / Int(vfStride) : -1)
        return (0..<activeVFs).contains(index) ? index : nil
    }

    /// What VF BAR `index` decodes for VF `vf`: nil unless VFs and VF MSE are enabled and the
    /// aperture is programmed and does not wrap.
    public func vfBARRange(_ index: Int, vf: Int) -> AddressRange? {
        guard vfMemorySpaceEnabled, vf >= 0, vf < activeVFs, let bar = vfBARs[index],
              let base = vfBARAddresses[index], base != 0 else { return nil }
        let (offset, overflow) = bar.size.multipliedReportingOverflow(by: UInt64(vf))
        guard !overflow, base <= UInt64.max - offset else { return nil }
        return AddressRange(base: base + offset, size: bar.size)
    }
}

extension ConfigSpace {
    /// Adds SR-IOV (extended 0x0010, version 1). Software may write VF Enable, VF MSE, ARI
    /// Capable Hierarchy, NumVFs, the System Page Size (supported sizes only) and the VF BARs,
    /// which size like ordinary BARs: address bits below the per-VF size read as zero.
    @discardableResult
    public mutating func addSRIOV(_ options: SRIOVOptions, at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        func fail(_ reason: String) -> ConfigSpaceError { .invalidCapability(name: "SR-IOV", reason: reason) }
        let initial = options.initialVFs ?? options.totalVFs
        guard options.totalVFs >= 1 else { throw fail("TotalVFs must be at least 1") }
        guard initial <= options.totalVFs else { throw fail("InitialVFs above TotalVFs") }
        guard options.firstVFOffset != 0 else { throw fail("First VF Offset must not be 0 (that is the PF)") }
        guard options.vfStride != 0 || options.totalVFs == 1 else { throw fail("VF Stride 0 with several VFs") }
        let lastOffset = Int(options.firstVFOffset) + Int(options.totalVFs - 1) * Int(options.vfStride)
        guard lastOffset <= 0xFFFF else { throw fail("VF routing IDs run past 65535") }
        guard options.supportedPageSizes & 1 != 0 else { throw fail("4 KiB pages must be supported") }
        var taken = Set<Int>()
        for (index, bar) in options.vfBARs.sorted(by: { $0.key < $1.key }) {
            let slots = bar.is64Bit ? [index, index + 1] : [index]
            guard slots.allSatisfy({ (0..<6).contains($0) }) else { throw fail("VF BAR \(index) does not fit BARs 0-5") }
            guard !bar.isIO else { throw fail("VF BAR \(index): VFs have no I/O BARs") }
            guard bar.size.nonzeroBitCount == 1, bar.size >= 16 else { throw fail("VF BAR \(index): size \(bar.size)") }
            guard bar.is64Bit || bar.size <= 1 << 31 else { throw fail("VF BAR \(index): 32-bit BAR above 2 GiB") }
            guard taken.isDisjoint(with: slots) else { throw fail("VF BAR \(index) overlaps another VF BAR") }
            taken.formUnion(slots)
        }
        let base = try addExtendedCapability(id: ExtendedCapabilityID.sriov, version: 1, length: SRIOVRegister.length, at: offset)
        let control = SRIOVRegister.vfEnable | SRIOVRegister.vfMemorySpaceEnable | SRIOVRegister.ariCapableHierarchy
        setWritable(base + SRIOVRegister.control, width: 2, mask: UInt64(control))
        set(base + SRIOVRegister.initialVFs, width: 2, value: UInt64(initial))
        set(base + SRIOVRegister.totalVFs, width: 2, value: UInt64(options.totalVFs))
        setWritable(base + SRIOVRegister.numVFs, width: 2, mask: 0xFFFF)
        set(base + SRIOVRegister.functionDependencyLink, width: 1, value: UInt64(options.functionDependencyLink))
        set(base + SRIOVRegister.firstVFOffset, width: 2, value: UInt64(options.firstVFOffset))
        set(base + SRIOVRegister.vfStride, width: 2, value: UInt64(options.vfStride))
        set(base + SRIOVRegister.vfDeviceID, width: 2, value: UInt64(options.vfDeviceID))
        set(base + SRIOVRegister.supportedPageSizes, width: 4, value: UInt64(options.supportedPageSizes))
        set(base + SRIOVRegister.systemPageSize, width: 4, value: 1)
        setWritable(base + SRIOVRegister.systemPageSize, width: 4, mask: UInt64(options.supportedPageSizes))
        for (index, bar) in options.vfBARs {
            let register = base + SRIOVRegister.vfBAR0 + 4 * index
            let mask = ~(bar.size - 1)
            set(register, width: 4, value: bar.flagBits)
            setWritable(register, width: 4, mask: mask & 0xFFFF_FFF0)
            if bar.is64Bit { setWritable(register + 4, width: 4, mask: mask >> 32) }
        }
        return base
    }

    /// Sizes the VF BARs for the System Page Size software chose: each VF's share of an
    /// aperture is at least one page, so that VFs can be mapped apart (SR-IOV 1.1, 3.3.12 and
    /// 3.3.14). `declared` are the per-VF sizes at 4 KiB pages, as given to `addSRIOV`.
    /// Call after every write that changed SR-IOV registers and after a reset.
    public mutating func alignVFBARs(_ declared: [Int: BARDescriptor]) {
        guard let state = sriovState else { return }
        for (index, bar) in declared {
            let register = state.offset + SRIOVRegister.vfBAR0 + 4 * index
            let size = max(bar.size, state.systemPageSize)
            let mask = ~(size - 1)
            setWritable(register, width: 4, mask: mask & 0xFFFF_FFF0)
            set(register, width: 4, value: get(register, width: 4) & (mask | 0xF))
            if bar.is64Bit { setWritable(register + 4, width: 4, mask: mask >> 32) }
        }
    }

    /// The config space of a VF of the PF whose config space is `pf` (SR-IOV 1.1, 3.4): Vendor
    /// and Device ID read FFFFh (software takes them from the PF and its VF Device ID field);
    /// class, revision and subsystem are the PF's; no BARs (the PF's VF BARs place them), no
    /// INTx (Interrupt Pin 0; Interrupt Line stays a plain register, as on QEMU), I/O and
    /// Memory Space Enable, SERR# Enable and Parity Error Response read 0 (the PF's VF MSE
    /// decides memory decoding; error reporting follows the PF); Bus Master is the VF's own.
    /// It carries a PCI Express endpoint capability with Function Level Reset (which VFs must
    /// support), and ARI when the PF has it.
    public static func virtualFunction(of pf: ConfigSpace) throws(ConfigSpaceError) -> ConfigSpace {
        var vf = ConfigSpace(layout: .endpoint, express: true)
        vf.set(Reg.vendorID, width: 4, value: 0xFFFF_FFFF)
        vf.set(Reg.revisionID, width: 4, value: pf.get(Reg.revisionID, width: 4))
        vf.set(Reg.subsystemVendorID, width: 4, value: pf.get(Reg.subsystemVendorID, width: 4))
        vf.setWritable(Reg.command, width: 2, mask: UInt64(CommandBits.busMaster.rawValue))
        try vf.addPCIExpress(PCIExpressOptions(portType: .endpoint, functionLevelReset: true))
        if pf.capability(.extended(ExtendedCapabilityID.ari)) != nil { try vf.addARI(nextFunction: 0) }
        vf.captureResetState()
        return vf
    }

    public var sriovState: SRIOVState? {
        guard let record = capability(.extended(ExtendedCapabilityID.sriov)) else { return nil }
        let base = record.offset
        let control = UInt16(get(base + SRIOVRegister.control, width: 2))
        let pageBits = UInt32(get(base + SRIOVRegister.systemPageSize, width: 4))
        // A VF BAR's kind is in its read-only flag bits, its size in its writable mask.
        var bars: [Int: BARDescriptor] = [:]
        var addresses: [Int: UInt64] = [:]
        var index = 0
        while index < 6 {
            let register = base + SRIOVRegister.vfBAR0 + 4 * index
            var mask = LittleEndian.load(writable, at: register, count: 4)
            guard mask != 0 else { index += 1; continue }
            let flags = get(register, width: 4) & 0xF
            let is64Bit = flags & 0x6 == 0x4
            var address = get(register, width: 4) & ~UInt64(0xF)
            if is64Bit {
                mask |= LittleEndian.load(writable, at: register + 4, count: 4) << 32
                address |= get(register + 4, width: 4) << 32
            } else {
                mask |= 0xFFFF_FFFF_0000_0000
            }
            let size = ~mask &+ 1  // the flag bits are never writable, so they count as address bits here
            let prefetchable = flags & 0x8 != 0
            bars[index] = BARDescriptor(is64Bit ? .memory64(prefetchable: prefetchable) : .memory32(prefetchable: prefetchable),
                                        size: size)
            addresses[index] = address
            index += is64Bit ? 2 : 1
        }
        return SRIOVState(
            offset: base,
            vfEnabled: control & SRIOVRegister.vfEnable != 0,
            vfMemorySpaceEnabled: control & SRIOVRegister.vfMemorySpaceEnable != 0,
            ariCapableHierarchy: control & SRIOVRegister.ariCapableHierarchy != 0,
            initialVFs: UInt16(get(base + SRIOVRegister.initialVFs, width: 2)),
            totalVFs: UInt16(get(base + SRIOVRegister.totalVFs, width: 2)),
            numVFsRequested: UInt16(get(base + SRIOVRegister.numVFs, width: 2)),
            firstVFOffset: UInt16(get(base + SRIOVRegister.firstVFOffset, width: 2)),
            vfStride: UInt16(get(base + SRIOVRegister.vfStride, width: 2)),
            vfDeviceID: UInt16(get(base + SRIOVRegister.vfDeviceID, width: 2)),
            systemPageSize: 4096 << UInt64(pageBits == 0 ? 0 : pageBits.trailingZeroBitCount),
            vfBARs: bars, vfBARAddresses: addresses)
    }
}
