public enum VendorSpecificRegister {
    /// Standard capability: total length in bytes, header included.
    public static let length = 0x02
    public static let standardPayload = 0x03
    /// Extended capability: VSEC ID (15:0), revision (19:16), length (31:20, header included).
    public static let vsecHeader = 0x04
    public static let extendedPayload = 0x08
}

extension ConfigSpace {
    /// Adds a standard vendor-specific capability (ID 9): ID, next, length byte, then
    /// `payload`, read-only (a device makes parts writable with `setWritable` afterwards).
    @discardableResult
    public mutating func addVendorSpecific(payload: [UInt8], at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        let length = VendorSpecificRegister.standardPayload + payload.count
        // The capability must fit in the 192 bytes from 0x40.
        guard length <= Self.conventionalSize - Reg.firstCapability else {
            throw .invalidCapability(name: "Vendor Specific", reason: "\(length) bytes do not fit the capability area")
        }
        let base = try addCapability(id: CapabilityID.vendorSpecific, length: length, at: offset)
        set(base + VendorSpecificRegister.length, width: 1, value: UInt64(length))
        for (i, byte) in payload.enumerated() {
            set(base + VendorSpecificRegister.standardPayload + i, width: 1, value: UInt64(byte))
        }
        return base
    }

    /// Adds a Vendor-Specific Extended Capability (0x000B, version 1) with a VSEC header.
    @discardableResult
    public mutating func addVendorSpecificExtended(vsecID: UInt16, revision: UInt8, payload: [UInt8],
                                                   at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        let length = VendorSpecificRegister.extendedPayload + payload.count
        guard revision < 16 else { throw .invalidCapability(name: "VSEC", reason: "revision \(revision) above 15") }
        guard length <= Self.expressSize - Reg.extendedStart else {
            throw .invalidCapability(name: "VSEC", reason: "\(length) bytes do not fit extended config space")
        }
        let base = try addExtendedCapability(id: ExtendedCapabilityID.vendorSpecific, version: 1, length: length, at: offset)
        set(base + VendorSpecificRegister.vsecHeader, width: 4,
            value: UInt64(vsecID) | UInt64(revision) << 16 | UInt64(length) << 20)
        for (i, byte) in payload.enumerated() {
            set(base + VendorSpecificRegister.extendedPayload + i, width: 1, value: UInt64(byte))
        }
        return base
    }
}
