/// A capability placed in a config space: where it is, how long, and what it is.
public struct CapabilityRecord: Sendable, Hashable, Codable {
    public enum Kind: Sendable, Hashable, Codable {
        /// A standard capability (list at 0x34), by its 8-bit ID.
        case standard(UInt8)
        /// An extended capability (list at 0x100), by its 16-bit ID.
        case extended(UInt16)

        public static let msi = Kind.standard(CapabilityID.msi)
        public static let msix = Kind.standard(CapabilityID.msix)
    }

    public let kind: Kind
    public let offset: Int
    public let length: Int
}

/// Standard capability IDs (PCI Code and ID Assignment Specification).
public enum CapabilityID {
    public static let powerManagement: UInt8 = 0x01
    public static let msi: UInt8 = 0x05
    public static let vendorSpecific: UInt8 = 0x09
    public static let bridgeSubsystemVendor: UInt8 = 0x0D
    public static let pciExpress: UInt8 = 0x10
    public static let msix: UInt8 = 0x11
    public static let sataConfig: UInt8 = 0x12
    public static let hotPlug: UInt8 = 0x0C   // SHPC
}

/// Extended capability IDs.
public enum ExtendedCapabilityID {
    public static let aer: UInt16 = 0x0001
    public static let vendorSpecific: UInt16 = 0x000B
    public static let acs: UInt16 = 0x000D
    public static let ari: UInt16 = 0x000E
    public static let sriov: UInt16 = 0x0010
}

extension ConfigSpace {
    /// Places a standard capability and links it at the end of the list. With no `offset`,
    /// the first free dword-aligned gap at or above 0x40 is used. The ID and next-pointer bytes
    /// are written here; the body is the caller's.
    @discardableResult
    public mutating func addCapability(id: UInt8, length: Int, at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        precondition(length >= 2, "a capability has at least an ID and a next pointer")
        let where_ = try place(length: length, at: offset, area: Reg.firstCapability..<Self.conventionalSize, extended: false)
        let index = appendCapability(CapabilityRecord(kind: .standard(id), offset: where_, length: length))
        claim(where_, length: length, for: index)
        set(where_, width: 1, value: UInt64(id))
        set(where_ + 1, width: 1, value: 0)
        // Link: the last standard capability (or the header pointer) points at the new one.
        if let last = capabilities.dropLast().last(where: { if case .standard = $0.kind { true } else { false } }) {
            set(last.offset + 1, width: 1, value: UInt64(where_))
        } else {
            set(Reg.capabilitiesPointer, width: 1, value: UInt64(where_))
            setBits(Reg.status, width: 2, UInt64(StatusBits.capabilityList.rawValue), to: true)
        }
        return where_
    }

    /// Places an extended capability (PCI Express functions only) and links it. The header
    /// dword (ID, version, next offset) is written here.
    @discardableResult
    public mutating func addExtendedCapability(id: UInt16, version: UInt8, length: Int,
                                               at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        precondition(length >= 4)
        guard size == Self.expressSize else { throw .capabilityOutOfRange(offset: offset ?? 0x100, length: length) }
        let where_ = try place(length: length, at: offset, area: Reg.extendedStart..<Self.expressSize, extended: true)
        let previous = capabilities.last(where: { if case .extended = $0.kind { true } else { false } })
        let index = appendCapability(CapabilityRecord(kind: .extended(id), offset: where_, length: length))
        claim(where_, length: length, for: index)
        set(where_, width: 4, value: UInt64(id) | UInt64(version & 0xF) << 16)
        if let previous {
            let header = get(previous.offset, width: 4) & 0x000F_FFFF
            set(previous.offset, width: 4, value: header | UInt64(where_) << 20)
        } else if where_ != Reg.extendedStart {
            // The list must start at 0x100; a null header there (ID 0, version 0) points on.
            set(Reg.extendedStart, width: 4, value: UInt64(where_) << 20)
        }
        return where_
    }

    /// The first capability of the given kind.
    public func capability(_ kind: CapabilityRecord.Kind) -> CapabilityRecord? {
        capabilities.first { $0.kind == kind }
    }

    private func place(length: Int, at requested: Int?, area: Range<Int>, extended: Bool) throws(ConfigSpaceError) -> Int {
        if let requested {
            guard requested >= area.lowerBound, requested % 4 == 0, requested + length <= area.upperBound else {
                throw .capabilityOutOfRange(offset: requested, length: length)
            }
            for o in requested..<(requested + length) where ownerIndex(o) != 0 {
                let other = capabilities[ownerIndex(o) - 1]
                throw .capabilityOverlap(offset: requested, length: length,
                                         existing: "\(other.kind) at 0x\(String(other.offset, radix: 16))")
            }
            return requested
        }
        var candidate = area.lowerBound
        while candidate + length <= area.upperBound {
            if let busy = (candidate..<(candidate + length)).first(where: { ownerIndex($0) != 0 }) {
                let other = capabilities[ownerIndex(busy) - 1]
                candidate = (other.offset + other.length + 3) & ~3
            } else {
                return candidate
            }
        }
        throw .noRoomForCapability(length: length, extended: extended)
    }
}
