public enum ARIRegister {
    /// ARI Capability (16): MFVC (0) and ACS (1) function groups capable, next function (15:8).
    public static let capability = 0x04
    /// ARI Control (16): MFVC (0) and ACS (1) function groups enable, function group (6:4).
    public static let control = 0x06
    public static let length = 8
}

extension ConfigSpace {
    /// Adds ARI (extended 0x000E, version 1). `nextFunction` links the device's functions in
    /// ARI's 8-bit function space; 0 ends the chain. The function-group enables are writable
    /// only where capable, and the Function Group field only when either is.
    @discardableResult
    public mutating func addARI(nextFunction: UInt8, mfvcFunctionGroups: Bool = false, acsFunctionGroups: Bool = false,
                                at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        guard size == Self.expressSize else {
            throw .invalidCapability(name: "ARI", reason: "needs a PCI Express config space")
        }
        let base = try addExtendedCapability(id: ExtendedCapabilityID.ari, version: 1, length: ARIRegister.length, at: offset)
        var capable: UInt16 = UInt16(nextFunction) << 8
        if mfvcFunctionGroups { capable |= 1 << 0 }
        if acsFunctionGroups { capable |= 1 << 1 }
        set(base + ARIRegister.capability, width: 2, value: UInt64(capable))
        var writable = capable & 0x3
        if writable != 0 { writable |= 0x7 << 4 }
        setWritable(base + ARIRegister.control, width: 2, mask: UInt64(writable))
        return base
    }
}
