/// Register offsets inside the Power Management capability (PCI Power Management 1.2, ch. 3).
public enum PowerManagementRegister {
    /// PMC: version, D1/D2 support, PME support per state (16 bits, read-only).
    public static let capabilities = 0x02
    /// PMCSR: power state, No_Soft_Reset, PME_En, PME_Status (16 bits).
    public static let controlStatus = 0x04
    /// PMCSR bridge support extensions (8 bits).
    public static let bridgeExtensions = 0x06
    /// Data register (8 bits); unused here, reads 0.
    public static let data = 0x07
    public static let length = 8

    static let stateMask: UInt16 = 0x0003
    static let noSoftReset: UInt16 = 1 << 3
    static let pmeEnable: UInt16 = 1 << 8
    static let pmeStatus: UInt16 = 1 << 15
}

/// Device power states, as encoded in PMCSR bits 1:0.
public enum PowerState: UInt8, Sendable, Hashable {
    case d0 = 0, d1 = 1, d2 = 2, d3hot = 3
}

/// States from which a function can signal PME (PMC bits 15:11).
public struct PMEStates: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue & 0x1F }
    public static let d0 = PMEStates(rawValue: 1 << 0)
    public static let d1 = PMEStates(rawValue: 1 << 1)
    public static let d2 = PMEStates(rawValue: 1 << 2)
    public static let d3hot = PMEStates(rawValue: 1 << 3)
    public static let d3cold = PMEStates(rawValue: 1 << 4)
}

/// What a function advertises in its Power Management capability.
public struct PowerManagementOptions: Sendable, Hashable {
    public var supportsD1: Bool
    public var supportsD2: Bool
    public var pmeStates: PMEStates
    /// Set when a D3hot -> D0 transition keeps the function's state (no internal reset).
    /// Virtual devices usually keep their state, and guests then skip re-initialising them.
    public var noSoftReset: Bool
    /// Device Specific Initialization: the driver must run extra set-up after D0.
    public var deviceSpecificInitialization: Bool

    public init(supportsD1: Bool = false, supportsD2: Bool = false, pmeStates: PMEStates = [],
                noSoftReset: Bool = true, deviceSpecificInitialization: Bool = false) {
        self.supportsD1 = supportsD1
        self.supportsD2 = supportsD2
        self.pmeStates = pmeStates
        self.noSoftReset = noSoftReset
        self.deviceSpecificInitialization = deviceSpecificInitialization
    }
}

/// The Power Management registers, decoded.
public struct PowerManagementState: Sendable, Hashable {
    public let offset: Int
    public let powerState: PowerState
    public let pmeEnabled: Bool
    public let pmeStatus: Bool
    public let noSoftReset: Bool
    public let supportedStates: Set<PowerState>
    public let pmeStates: PMEStates
}

extension ConfigSpace {
    /// Adds the Power Management capability (version 3, PM 1.2). The function starts in D0;
    /// software may move it between the states it supports (D0, D3hot, plus D1/D2 when
    /// advertised). A write of an unsupported state is ignored, as the specification demands.
    @discardableResult
    public mutating func addPowerManagement(_ options: PowerManagementOptions = .init(),
                                           at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        if options.pmeStates.contains(.d1) && !options.supportsD1 {
            throw .invalidCapability(name: "Power Management", reason: "PME from D1 needs D1 support")
        }
        if options.pmeStates.contains(.d2) && !options.supportsD2 {
            throw .invalidCapability(name: "Power Management", reason: "PME from D2 needs D2 support")
        }
        let base = try addCapability(id: CapabilityID.powerManagement, length: PowerManagementRegister.length, at: offset)
        var pmc: UInt16 = 3  // version 3: PCI PM 1.2
        if options.deviceSpecificInitialization { pmc |= 1 << 5 }
        if options.supportsD1 { pmc |= 1 << 9 }
        if options.supportsD2 { pmc |= 1 << 10 }
        pmc |= UInt16(options.pmeStates.rawValue) << 11
        set(base + PowerManagementRegister.capabilities, width: 2, value: UInt64(pmc))

        let csr = base + PowerManagementRegister.controlStatus
        set(csr, width: 2, value: options.noSoftReset ? UInt64(PowerManagementRegister.noSoftReset) : 0)
        var writableBits = PowerManagementRegister.stateMask
        if !options.pmeStates.isEmpty { writableBits |= PowerManagementRegister.pmeEnable }
        setWritable(csr, width: 2, mask: UInt64(writableBits))
        // PME_Status is only ever set by the device, so a W1C mask on it is harmless when
        // PME is unsupported: the bit then simply stays 0.
        setWriteOneToClear(csr, width: 2, mask: UInt64(PowerManagementRegister.pmeStatus))
        return base
    }

    public var powerManagementState: PowerManagementState? {
        guard let record = capability(.standard(CapabilityID.powerManagement)) else { return nil }
        let pmc = UInt16(get(record.offset + PowerManagementRegister.capabilities, width: 2))
        let csr = UInt16(get(record.offset + PowerManagementRegister.controlStatus, width: 2))
        return PowerManagementState(
            offset: record.offset,
            powerState: PowerState(rawValue: UInt8(csr & PowerManagementRegister.stateMask))!,
            pmeEnabled: csr & PowerManagementRegister.pmeEnable != 0,
            pmeStatus: csr & PowerManagementRegister.pmeStatus != 0,
            noSoftReset: csr & PowerManagementRegister.noSoftReset != 0,
            supportedStates: Self.supportedPowerStates(pmc: pmc),
            pmeStates: PMEStates(rawValue: UInt8(truncatingIfNeeded: pmc >> 11)))
    }

    /// Device side: records a power-management event. Returns true when PME_En is set, i.e.
    /// when the caller should actually signal it.
    @discardableResult
    public mutating func signalPME() -> Bool {
        guard let state = powerManagementState, state.pmeStates.contains(pmeState(for: state.powerState)) else {
            return false
        }
        setBits(state.offset + PowerManagementRegister.controlStatus, width: 2,
                UInt64(PowerManagementRegister.pmeStatus), to: true)
        return state.pmeEnabled
    }

    private func pmeState(for state: PowerState) -> PMEStates {
        switch state {
        case .d0: .d0
        case .d1: .d1
        case .d2: .d2
        case .d3hot: .d3hot
        }
    }

    static func supportedPowerStates(pmc: UInt16) -> Set<PowerState> {
        var states: Set<PowerState> = [.d0, .d3hot]
        if pmc & (1 << 9) != 0 { states.insert(.d1) }
        if pmc & (1 << 10) != 0 { states.insert(.d2) }
        return states
    }

    /// PMCSR's low byte: a write naming an unsupported state leaves the state as it was.
    func powerManagementRule(relative: Int, capabilityOffset: Int, old: UInt8, proposed: UInt8,
                             effects: inout ConfigWriteEffects) -> UInt8 {
        guard relative == PowerManagementRegister.controlStatus else { return proposed }
        let pmc = UInt16(get(capabilityOffset + PowerManagementRegister.capabilities, width: 2))
        let requested = PowerState(rawValue: proposed & 0x3)!
        guard Self.supportedPowerStates(pmc: pmc).contains(requested) else {
            return (proposed & ~0x3) | (old & 0x3)
        }
        if requested.rawValue != old & 0x3 { effects.insert(.powerStateChanged) }
        return proposed
    }
}
