/// Access Control Services features (ACS Capability register bits 6:0; the ACS Control
/// register uses the same positions for the enables).
public struct ACSFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue & 0x7F }
    public static let sourceValidation = ACSFeatures(rawValue: 1 << 0)
    public static let translationBlocking = ACSFeatures(rawValue: 1 << 1)
    public static let p2pRequestRedirect = ACSFeatures(rawValue: 1 << 2)
    public static let p2pCompletionRedirect = ACSFeatures(rawValue: 1 << 3)
    public static let upstreamForwarding = ACSFeatures(rawValue: 1 << 4)
    public static let p2pEgressControl = ACSFeatures(rawValue: 1 << 5)
    public static let directTranslatedP2P = ACSFeatures(rawValue: 1 << 6)

    /// What a root or downstream port needs for its devices to get their own IOMMU groups.
    public static let isolation: ACSFeatures = [.sourceValidation, .translationBlocking, .p2pRequestRedirect,
                                                .p2pCompletionRedirect, .upstreamForwarding]
}

public enum ACSRegister {
    /// ACS Capability (16): features and, in bits 15:8, the egress control vector size.
    public static let capability = 0x04
    public static let control = 0x06
    public static let egressControlVector = 0x08
}

extension ConfigSpace {
    /// Adds ACS (extended 0x000D, version 1). Each control bit is writable only when the
    /// matching capability bit is set. With P2P egress control, an egress control vector of
    /// `egressVectorBits` (1...256) follows, writable bit for bit.
    @discardableResult
    public mutating func addACS(_ features: ACSFeatures, egressVectorBits: Int = 0,
                                at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        let egress = features.contains(.p2pEgressControl)
        guard egress ? (1...256).contains(egressVectorBits) : egressVectorBits == 0 else {
            throw .invalidCapability(name: "ACS", reason: "an egress control vector of 1-256 bits goes with P2P egress control only")
        }
        let vectorDwords = (egressVectorBits + 31) / 32
        let base = try addExtendedCapability(id: ExtendedCapabilityID.acs, version: 1, length: 8 + 4 * vectorDwords, at: offset)
        // A 256-bit vector is encoded as 0.
        let sizeField = UInt16(egressVectorBits & 0xFF)
        set(base + ACSRegister.capability, width: 2, value: UInt64(features.rawValue | sizeField << 8))
        setWritable(base + ACSRegister.control, width: 2, mask: UInt64(features.rawValue))
        for dword in 0..<vectorDwords {
            let bits = min(32, egressVectorBits - 32 * dword)
            setWritable(base + ACSRegister.egressControlVector + 4 * dword, width: 4, mask: (UInt64(1) << UInt64(bits)) - 1)
        }
        return base
    }

    /// The ACS enables currently set, if the function has ACS.
    public var acsControl: ACSFeatures? {
        capability(.extended(ExtendedCapabilityID.acs)).map {
            ACSFeatures(rawValue: UInt16(get($0.offset + ACSRegister.control, width: 2)))
        }
    }
}
