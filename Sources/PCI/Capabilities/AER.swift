/// Register offsets and bit sets of the Advanced Error Reporting extended capability
/// (PCI Express Base, 7.8.4).
public enum AERRegister {
    public static let uncorrectableStatus = 0x04
    public static let uncorrectableMask = 0x08
    public static let uncorrectableSeverity = 0x0C
    public static let correctableStatus = 0x10
    public static let correctableMask = 0x14
    public static let capabilitiesControl = 0x18
    /// Header of the first logged TLP, 16 bytes.
    public static let headerLog = 0x1C
    // Root ports and event collectors only.
    public static let rootErrorCommand = 0x2C
    public static let rootErrorStatus = 0x30
    public static let errorSourceID = 0x34

    public static let endpointLength = 0x2C
    public static let rootLength = 0x38

    /// Uncorrectable errors this model can record: data link protocol, surprise down, and
    /// poisoned TLP through TLP prefix blocked (bits 4, 5, 12-25).
    public static let uncorrectableSupported: UInt32 = 0x03FF_F030
    /// Spec defaults: uncorrectable internal errors masked.
    public static let uncorrectableMaskDefault: UInt32 = 1 << 22
    /// Spec defaults: data link protocol, surprise down, flow control protocol, receiver
    /// overflow, malformed TLP and uncorrectable internal errors are fatal.
    public static let uncorrectableSeverityDefault: UInt32 = 0x0046_2030
    /// Receiver error, bad TLP, bad DLLP, replay rollover, replay timeout, advisory non-fatal,
    /// corrected internal, header log overflow.
    public static let correctableSupported: UInt32 = 0x0000_F1C1
    /// Spec defaults: advisory non-fatal, corrected internal and header log overflow masked.
    public static let correctableMaskDefault: UInt32 = 0x0000_E000
}

public struct AEROptions: Sendable, Hashable {
    public var ecrcGenerationCapable: Bool
    public var ecrcCheckCapable: Bool
    public var multipleHeaderRecordingCapable: Bool
    /// Advanced Error Interrupt Message Number (root ports): 0...31.
    public var interruptMessageNumber: UInt8

    public init(ecrcGenerationCapable: Bool = false, ecrcCheckCapable: Bool = false,
                multipleHeaderRecordingCapable: Bool = false, interruptMessageNumber: UInt8 = 0) {
        self.ecrcGenerationCapable = ecrcGenerationCapable
        self.ecrcCheckCapable = ecrcCheckCapable
        self.multipleHeaderRecordingCapable = multipleHeaderRecordingCapable
        self.interruptMessageNumber = interruptMessageNumber
    }
}

extension ConfigSpace {
    /// Adds AER (version 2). The PCI Express capability must already be present: its port
    /// type decides whether the root error registers exist.
    @discardableResult
    public mutating func addAER(_ options: AEROptions = .init(), at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        guard let type = pciExpressPortType else {
            throw .invalidCapability(name: "AER", reason: "add the PCI Express capability first")
        }
        guard options.interruptMessageNumber < 32 else {
            throw .invalidCapability(name: "AER", reason: "interrupt message number above 31")
        }
        let root = type.hasRootRegisters
        let base = try addExtendedCapability(id: ExtendedCapabilityID.aer, version: 2,
                                             length: root ? AERRegister.rootLength : AERRegister.endpointLength, at: offset)
        setWriteOneToClear(base + AERRegister.uncorrectableStatus, width: 4, mask: UInt64(AERRegister.uncorrectableSupported))
        set(base + AERRegister.uncorrectableMask, width: 4, value: UInt64(AERRegister.uncorrectableMaskDefault))
        setWritable(base + AERRegister.uncorrectableMask, width: 4, mask: UInt64(AERRegister.uncorrectableSupported))
        set(base + AERRegister.uncorrectableSeverity, width: 4, value: UInt64(AERRegister.uncorrectableSeverityDefault))
        setWritable(base + AERRegister.uncorrectableSeverity, width: 4, mask: UInt64(AERRegister.uncorrectableSupported))
        setWriteOneToClear(base + AERRegister.correctableStatus, width: 4, mask: UInt64(AERRegister.correctableSupported))
        set(base + AERRegister.correctableMask, width: 4, value: UInt64(AERRegister.correctableMaskDefault))
        setWritable(base + AERRegister.correctableMask, width: 4, mask: UInt64(AERRegister.correctableSupported))

        // Each enable is writable only next to its "capable" bit; First Error Pointer is the device's.
        var capabilities: UInt32 = 0
        var writable: UInt32 = 0
        if options.ecrcGenerationCapable { capabilities |= 1 << 5; writable |= 1 << 6 }
        if options.ecrcCheckCapable { capabilities |= 1 << 7; writable |= 1 << 8 }
        if options.multipleHeaderRecordingCapable { capabilities |= 1 << 9; writable |= 1 << 10 }
        set(base + AERRegister.capabilitiesControl, width: 4, value: UInt64(capabilities))
        setWritable(base + AERRegister.capabilitiesControl, width: 4, mask: UInt64(writable))

        if root {
            setWritable(base + AERRegister.rootErrorCommand, width: 4, mask: 0x7)
            set(base + AERRegister.rootErrorStatus, width: 4, value: UInt64(options.interruptMessageNumber) << 27)
            setWriteOneToClear(base + AERRegister.rootErrorStatus, width: 4, mask: 0x7F)
        }
        return base
    }
}
