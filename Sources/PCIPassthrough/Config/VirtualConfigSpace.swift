import PCI
import VMMBase

/// The assigned device's own config space (VFIO's config region). Reads of a gone device
/// return all ones; the adapter logs failures.
public protocol HostConfigAccess: Sendable {
    func readConfig(_ offset: Int, width: AccessWidth) -> UInt32
    func writeConfig(_ offset: Int, width: AccessWidth, value: UInt32)
}

/// Where the function sits in the guest's topology, which decides what its PCI Express
/// capability says about its link (the guest's, never the host's).
public enum GuestPCIExpressPosition: Sendable, Hashable {
    /// Behind a root or downstream port: Link Capabilities and Link Status show this link.
    case behindPort(speed: PCIExpressOptions.LinkSpeed, width: Int)
    /// On the root bus: a Root Complex Integrated Endpoint, which has no link (as QEMU does).
    case rootComplexIntegrated
    /// Behind a conventional PCI bridge: the capability is hidden.
    case conventionalBus
}

/// Why an assigned function cannot be presented to the guest.
public enum VirtualConfigSpaceError: Error, Hashable, CustomStringConvertible {
    case configSize(Int)
    case notAnEndpoint(headerType: UInt8)

    public var description: String {
        switch self {
        case .configSize(let size): "the device's config region is \(size) bytes, not 256 or 4096"
        case .notAnEndpoint(let type):
            "header type 0x\(String(type, radix: 16)) is not an endpoint (type 0): bridges cannot be assigned"
        }
    }
}

/// The config space the guest sees of an assigned function, QEMU's model: per bit, either
/// emulated (its value lives in `cells`, our `ConfigSpace` with its masks and capability
/// builders) or the device's (read from and written to the host). Every guest write also goes
/// to `cells`, whose writable masks mirror registers the VMM must follow without owning them
/// (Command's decode enables, which gate the virtual BARs); reads of such bits come from the
/// device.
public struct VirtualConfigSpace: Sendable, Equatable {
    /// Emulated values, and the mirror of the registers the VMM follows.
    public private(set) var cells: ConfigSpace
    /// Per byte: the bits whose value is `cells`'s.
    public let emulated: [UInt8]
    /// Per byte: the bits a guest write reaches the device in (not emulated, not read-only).
    public let passThrough: [UInt8]
    /// Capabilities left out of the chains (by a quirk, or because they cannot be emulated).
    public let hidden: [HostCapability]

    /// - Parameters:
    ///   - host: the device's config bytes at assignment (256 or 4096).
    ///   - bars: the virtual BARs (from region sizes and the device's BAR types, see `VirtualBARs`).
    ///   - romSize: the expansion ROM's size, nil for none (or `rombar=0`).
    public init(host: [UInt8], bars: [BARDescriptor?], romSize: UInt64?, position: GuestPCIExpressPosition,
                quirks: [VFIOQuirk]) throws(VirtualConfigSpaceError) {
        guard host.count == ConfigSpace.conventionalSize || host.count == ConfigSpace.expressSize else {
            throw .configSize(host.count)
        }
        guard host[Reg.headerType] & 0x7F == HeaderLayout.endpoint.rawValue else {
            throw .notAnEndpoint(headerType: host[Reg.headerType])
        }
        var builder = Builder(cells: ConfigSpace(layout: .endpoint, express: host.count == ConfigSpace.expressSize),
                              host: host)
        builder.emulateHeader(bars: bars, romSize: romSize)
        builder.emulateCapabilities(position: position, quirks: quirks)
        var passThrough = builder.emulated.map { ~$0 }
        for case .readOnly(let offset, let width, let mask) in quirks.map(\.action) {
            for i in 0..<width { passThrough[offset + i] &= ~UInt8(truncatingIfNeeded: mask >> (8 * UInt32(i))) }
        }
        builder.cells.captureResetState()
        cells = builder.cells
        emulated = builder.emulated
        self.passThrough = passThrough
        hidden = builder.hidden
    }

    // MARK: Guest access

    /// Emulated bits from `cells`, the rest from the device (read only when some are needed).
    public func read(_ offset: Int, width: AccessWidth, host: any HostConfigAccess) -> UInt32 {
        guard offset >= 0, offset + width.bytes <= cells.size else { return UInt32(truncatingIfNeeded: width.allOnes) }
        let mask = UInt32(LittleEndian.load(emulated, at: offset, count: width.bytes))
        let own = cells.read(offset, width: width) & mask
        guard mask != UInt32(truncatingIfNeeded: width.allOnes) else { return own }
        return own | (host.readConfig(offset, width: width) & ~mask)
    }

    /// The write goes to `cells` (whose masks keep what the VMM owns or follows) and, for the
    /// bits that pass through, to the device. Bytes that pass through only in part are
    /// written alone, their other bits as the device has them.
    public mutating func write(_ offset: Int, width: AccessWidth, value: UInt32,
                               host: any HostConfigAccess) -> ConfigWriteEffects {
        guard offset >= 0, offset + width.bytes <= cells.size else { return [] }
        let effects = cells.write(offset, width: width, value: value)
        let pass = UInt32(LittleEndian.load(passThrough, at: offset, count: width.bytes))
        if pass == UInt32(truncatingIfNeeded: width.allOnes) {
            host.writeConfig(offset, width: width, value: value)
        } else if pass != 0 {
            for i in 0..<width.bytes where passThrough[offset + i] != 0 {
                let bits = UInt32(passThrough[offset + i])
                let written = (value >> (8 * UInt32(i))) & bits
                let kept = bits == 0xFF ? 0 : host.readConfig(offset + i, width: .byte) & ~bits
                host.writeConfig(offset + i, width: .byte, value: written | kept)
            }
        }
        return effects
    }

    /// Device-side changes of emulated state (MSI pending bits, Interrupt Status) and the
    /// interrupt arbiter work on `cells` directly.
    public mutating func withCells<R>(_ body: (inout ConfigSpace) -> R) -> R { body(&cells) }

    /// Emulated registers back to their values at assignment (the device resets its own).
    public mutating func reset() { cells.reset() }

    /// Takes `restored` as the emulated state and gives the device the registers `cells`
    /// mirrors (bits both followed here and passed through, like Command's decode enables),
    /// so the device decodes as the guest left it. `restored` must have `cells`'s layout.
    public mutating func restore(cells restored: ConfigSpace, host: any HostConfigAccess) {
        cells = restored
        for offset in 0..<cells.size where passThrough[offset] & cells.writable[offset] != 0 {
            let bits = UInt32(passThrough[offset] & cells.writable[offset])
            let kept = host.readConfig(offset, width: .byte) & ~bits
            host.writeConfig(offset, width: .byte, value: UInt32(cells.get(offset, width: 1)) & bits | kept)
        }
    }

    /// What the guest sees right now, whole (for monitors and `configSnapshot`).
    public func merged(host: any HostConfigAccess) -> ConfigSpace {
        var view = cells
        for dword in stride(from: 0, to: cells.size, by: 4) {
            view.set(dword, width: 4, value: UInt64(read(dword, width: .dword, host: host)))
        }
        return view
    }
}

/// Builds `cells` and the emulated mask from the device's bytes.
private struct Builder {
    var cells: ConfigSpace
    let host: [UInt8]
    var emulated = [UInt8](repeating: 0, count: ConfigSpace.expressSize)
    var hidden: [HostCapability] = []

    init(cells: ConfigSpace, host: [UInt8]) {
        self.cells = cells
        self.host = host
    }

    mutating func emulate(_ offset: Int, count: Int, mask: UInt8 = 0xFF) {
        for o in offset..<(offset + count) { emulated[o] |= mask }
    }

    mutating func emulate(_ offset: Int, width: Int, bits: UInt64) {
        for i in 0..<width { emulated[offset + i] |= UInt8(truncatingIfNeeded: bits >> (8 * UInt64(i))) }
    }

    /// The device's bytes at `offset`, little-endian. A capability the device placed at the
    /// very end of its config space reaches past it (found by the vfio fuzz target: an MSI-X
    /// capability at 0xF4 of 256 bytes): those bytes read as 0, and the caller's length check
    /// refuses the capability.
    func hostValue(_ offset: Int, width: Int) -> UInt64 {
        guard offset >= 0, width >= 0, offset <= host.count - width else {
            var value: UInt64 = 0
            for i in 0..<max(width, 0) where offset + i >= 0 && offset + i < host.count {
                value |= UInt64(host[offset + i]) << (8 * UInt64(i))
            }
            return value
        }
        return LittleEndian.load(host, at: offset, count: width)
    }

    /// Single-function (the guest's slot is ours), BARs and ROM ours, the capability pointer
    /// and list bit follow the visible chain, interrupt line ours and pin as the device has it.
    mutating func emulateHeader(bars: [BARDescriptor?], romSize: UInt64?) {
        emulate(Reg.headerType, count: 1, mask: 0x80)
        emulate(Reg.bar0, count: 6 * 4)
        for (index, bar) in bars.prefix(6).enumerated() {
            guard let bar else { continue }
            do { try cells.defineBAR(index, bar) } catch {
                // VirtualBARs only offers BARs the PCI rules allow; an overlap means a
                // 64-bit BAR's upper half was offered too. Leaving it out keeps the rest.
                continue
            }
        }
        emulate(Reg.romType0, count: 4)
        if let romSize { try? cells.defineROM(size: romSize) }
        emulate(Reg.capabilitiesPointer, count: 1)
        emulate(Reg.status, count: 1, mask: UInt8(StatusBits.capabilityList.rawValue))
        emulate(Reg.interruptLine, count: 2)
        cells.setInterruptPin(host[Reg.interruptPin] <= 4 ? host[Reg.interruptPin] : 0)
    }

    mutating func emulateCapabilities(position: GuestPCIExpressPosition, quirks: [VFIOQuirk]) {
        let hiddenKinds = Set(quirks.compactMap { if case .hide(let kind) = $0.action { kind } else { nil } })
        if cells.size == ConfigSpace.expressSize { emulate(Reg.extendedStart, count: 4) }
        for cap in HostCapabilities.walk(host) {
            let placed: Bool
            if hiddenKinds.contains(cap.kind) {
                placed = false
            } else {
                switch cap.kind {
                case .msi: placed = addMSI(cap)
                case .msix: placed = addMSIX(cap)
                case .standard(CapabilityID.pciExpress): placed = addPCIExpress(cap, position: position)
                case .extended(ExtendedCapabilityID.ari): placed = addARI(cap)
                case .standard(let id): placed = link { (c: inout ConfigSpace) throws(ConfigSpaceError) in try c.addCapability(id: id, length: 2, at: cap.offset) }
                case .extended(let id):
                    placed = link { (c: inout ConfigSpace) throws(ConfigSpaceError) in
                        try c.addExtendedCapability(id: id, version: cap.version, length: 4, at: cap.offset)
                    }
                }
            }
            if placed {
                // The chain is ours: ID and next pointer (standard) or the header dword.
                if case .standard = cap.kind { emulate(cap.offset, count: 2) } else { emulate(cap.offset, count: 4) }
            } else {
                // Hidden: out of the chain, its bytes read as zero and writes stay here.
                hidden.append(cap)
                emulate(cap.offset, count: cap.span)
            }
        }
    }

    private mutating func link(_ add: (inout ConfigSpace) throws(ConfigSpaceError) -> Int) -> Bool {
        do { _ = try add(&cells); return true } catch { return false }
    }

    /// MSI: ours whole, with the device's vector count, address width and masking.
    private mutating func addMSI(_ cap: HostCapability) -> Bool {
        let control = UInt16(hostValue(cap.offset + MSIRegister.control, width: 2))
        let options = MSIOptions(vectors: 1 << min(Int((control >> 1) & 0x7), 5), is64Bit: control & 1 << 7 != 0,
                                 perVectorMasking: control & 1 << 8 != 0)
        let length = options.perVectorMasking ? (options.is64Bit ? 0x18 : 0x14) : (options.is64Bit ? 0x0E : 0x0A)
        guard length <= cap.span, link({ (c: inout ConfigSpace) throws(ConfigSpaceError) in try c.addMSI(options, at: cap.offset) }) else { return false }
        emulate(cap.offset, count: length)
        return true
    }

    /// MSI-X: ours whole, with the device's table and PBA placement (the table is trapped).
    private mutating func addMSIX(_ cap: HostCapability) -> Bool {
        guard MSIXRegister.length <= cap.span else { return false }
        let control = UInt16(hostValue(cap.offset + MSIXRegister.control, width: 2))
        let table = hostValue(cap.offset + MSIXRegister.table, width: 4)
        let pba = hostValue(cap.offset + MSIXRegister.pba, width: 4)
        let layout = MSIXLayout(vectors: Int(control & 0x7FF) + 1, tableBAR: Int(table & 7), tableOffset: table & ~7,
                                pbaBAR: Int(pba & 7), pbaOffset: pba & ~7)
        guard link({ (c: inout ConfigSpace) throws(ConfigSpaceError) in try c.addMSIX(layout, at: cap.offset) }) else { return false }
        emulate(cap.offset, count: MSIXRegister.length)
        return true
    }

    /// ARI: the device's, except Next Function Number, which is the guest's: 0, the end of the
    /// chain, as the function sits alone in its guest slot. The host's value names the host's
    /// functions (a PF's next function, a VF's neighbours), and a guest with ARI forwarding on
    /// follows it when it scans the bus. (QEMU hides ARI instead.)
    private mutating func addARI(_ cap: HostCapability) -> Bool {
        guard link({ (c: inout ConfigSpace) throws(ConfigSpaceError) in
            try c.addExtendedCapability(id: ExtendedCapabilityID.ari, version: cap.version, length: 4, at: cap.offset)
        }) else { return false }
        if cap.span >= ARIRegister.length {
            let nextFunction = cap.offset + ARIRegister.capability + 1
            cells.set(nextFunction, width: 1, value: 0)
            emulate(nextFunction, count: 1)
        }
        return true
    }

    /// PCI Express: the device's registers, except the link, which is the guest's.
    private mutating func addPCIExpress(_ cap: HostCapability, position: GuestPCIExpressPosition) -> Bool {
        let linkEnd = PCIExpressRegister.linkStatus + 2
        if position == .conventionalBus || cap.span < linkEnd { return false }
        guard link({ (c: inout ConfigSpace) throws(ConfigSpaceError) in try c.addCapability(id: CapabilityID.pciExpress, length: 2, at: cap.offset) }) else { return false }
        let flags = cap.offset + PCIExpressRegister.capabilities
        let linkCapabilities = cap.offset + PCIExpressRegister.linkCapabilities
        let linkStatus = cap.offset + PCIExpressRegister.linkStatus
        let speedAndWidth: UInt64 = 0x3FF  // Max Link Speed/Width; Current Speed/Negotiated Width
        switch position {
        case .behindPort(let speed, let width):
            let value = UInt64(speed.rawValue) | UInt64(width) << 4
            cells.set(linkCapabilities, width: 4, value: value)
            cells.set(linkStatus, width: 2, value: value)
            emulate(linkCapabilities, width: 4, bits: speedAndWidth)
            emulate(linkStatus, width: 2, bits: speedAndWidth)
        case .rootComplexIntegrated:
            // Device/Port Type 9; an integrated endpoint has no link registers.
            let type = (hostValue(flags, width: 2) & ~0x00F0) | 0x0090
            cells.set(flags, width: 2, value: type)
            emulate(flags, width: 2, bits: 0x00F0)
            emulate(linkCapabilities, count: 4)
            emulate(cap.offset + PCIExpressRegister.linkControl, count: 4)
        case .conventionalBus:
            return false
        }
        return true
    }
}
