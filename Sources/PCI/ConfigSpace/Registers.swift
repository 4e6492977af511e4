/// Offsets and bits of the standard configuration header (PCI Local Bus 3.0, chapter 6;
/// PCI-to-PCI Bridge 1.2, chapter 3). Facts, not policy.
public enum Reg {
    public static let vendorID = 0x00
    public static let deviceID = 0x02
    public static let command = 0x04
    public static let status = 0x06
    public static let revisionID = 0x08
    public static let classCode = 0x09       // 3 bytes: prog-if, subclass, base class
    public static let cacheLineSize = 0x0C
    public static let latencyTimer = 0x0D
    public static let headerType = 0x0E
    public static let bist = 0x0F
    public static let bar0 = 0x10
    public static let subsystemVendorID = 0x2C
    public static let subsystemID = 0x2E
    public static let romType0 = 0x30
    public static let capabilitiesPointer = 0x34
    public static let interruptLine = 0x3C
    public static let interruptPin = 0x3D
    public static let minGrant = 0x3E
    public static let maxLatency = 0x3F

    // Type 1 (bridge) header.
    public static let primaryBus = 0x18
    public static let secondaryBus = 0x19
    public static let subordinateBus = 0x1A
    public static let secondaryLatency = 0x1B
    public static let ioBase = 0x1C
    public static let ioLimit = 0x1D
    public static let secondaryStatus = 0x1E
    public static let memoryBase = 0x20
    public static let memoryLimit = 0x22
    public static let prefetchBase = 0x24
    public static let prefetchLimit = 0x26
    public static let prefetchBaseUpper = 0x28
    public static let prefetchLimitUpper = 0x2C
    public static let ioBaseUpper = 0x30
    public static let ioLimitUpper = 0x32
    public static let romType1 = 0x38
    public static let bridgeControl = 0x3E

    public static let firstCapability = 0x40
    public static let extendedStart = 0x100
}

/// Command register bits.
public struct CommandBits: OptionSet, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let io = CommandBits(rawValue: 1 << 0)
    public static let memory = CommandBits(rawValue: 1 << 1)
    public static let busMaster = CommandBits(rawValue: 1 << 2)
    public static let parityErrorResponse = CommandBits(rawValue: 1 << 6)
    public static let serr = CommandBits(rawValue: 1 << 8)
    public static let intxDisable = CommandBits(rawValue: 1 << 10)
}

/// Status register bits.
public struct StatusBits: OptionSet, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let interrupt = StatusBits(rawValue: 1 << 3)
    public static let capabilityList = StatusBits(rawValue: 1 << 4)
    public static let masterDataParityError = StatusBits(rawValue: 1 << 8)
    public static let signaledTargetAbort = StatusBits(rawValue: 1 << 11)
    public static let receivedTargetAbort = StatusBits(rawValue: 1 << 12)
    public static let receivedMasterAbort = StatusBits(rawValue: 1 << 13)
    public static let signaledSystemError = StatusBits(rawValue: 1 << 14)
    public static let detectedParityError = StatusBits(rawValue: 1 << 15)
    /// The error bits software clears by writing one.
    public static let errorBits: StatusBits = [.masterDataParityError, .signaledTargetAbort, .receivedTargetAbort,
                                              .receivedMasterAbort, .signaledSystemError, .detectedParityError]
}

/// Bridge Control register bits (type 1 header, 0x3E).
public struct BridgeControlBits: OptionSet, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let parityErrorResponse = BridgeControlBits(rawValue: 1 << 0)
    public static let serr = BridgeControlBits(rawValue: 1 << 1)
    public static let isa = BridgeControlBits(rawValue: 1 << 2)
    public static let vga = BridgeControlBits(rawValue: 1 << 3)
    public static let vga16 = BridgeControlBits(rawValue: 1 << 4)
    public static let masterAbortMode = BridgeControlBits(rawValue: 1 << 5)
    public static let secondaryBusReset = BridgeControlBits(rawValue: 1 << 6)
    public static let fastBackToBack = BridgeControlBits(rawValue: 1 << 7)
}

/// Header layout, from bits 6:0 of the Header Type register.
public enum HeaderLayout: UInt8, Sendable, Codable {
    case endpoint = 0
    case bridge = 1

    public var barCount: Int { self == .endpoint ? 6 : 2 }
    public var romOffset: Int { self == .endpoint ? Reg.romType0 : Reg.romType1 }
}
