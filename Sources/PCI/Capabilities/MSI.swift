import VMMBase

/// Register offsets inside the MSI capability (PCI Local Bus 3.0, 6.8.1). The address, data
/// and mask registers move with the 64-bit option, so they are computed by `MSIState`.
public enum MSIRegister {
    /// Message Control (16 bits): enable, multiple message capable/enable, 64-bit, masking.
    public static let control = 0x02
    public static let addressLow = 0x04

    static let enable: UInt16 = 1 << 0
    static let capableShift: UInt16 = 1
    static let enableShift: UInt16 = 4
    static let is64Bit: UInt16 = 1 << 7
    static let perVectorMasking: UInt16 = 1 << 8

    static func dataOffset(is64Bit: Bool) -> Int { is64Bit ? 0x0C : 0x08 }
    static func maskOffset(is64Bit: Bool) -> Int { is64Bit ? 0x10 : 0x0C }
    static func pendingOffset(is64Bit: Bool) -> Int { maskOffset(is64Bit: is64Bit) + 4 }
    static func length(is64Bit: Bool, perVectorMasking: Bool) -> Int {
        perVectorMasking ? pendingOffset(is64Bit: is64Bit) + 4 : dataOffset(is64Bit: is64Bit) + 2
    }
}

/// What a function advertises in its MSI capability.
public struct MSIOptions: Sendable, Hashable {
    /// Vectors the function can use: 1, 2, 4, 8, 16 or 32.
    public var vectors: Int
    public var is64Bit: Bool
    public var perVectorMasking: Bool

    public init(vectors: Int = 1, is64Bit: Bool = true, perVectorMasking: Bool = false) {
        self.vectors = vectors
        self.is64Bit = is64Bit
        self.perVectorMasking = perVectorMasking
    }
}

/// The MSI capability's registers, decoded.
public struct MSIState: Sendable, Hashable {
    public let offset: Int
    public let is64Bit: Bool
    public let perVectorMasking: Bool
    /// Multiple Message Capable, as a count (1...32).
    public let vectorsCapable: Int
    public let enabled: Bool
    /// Multiple Message Enable as a count, never above `vectorsCapable`.
    public let vectorsAllocated: Int
    public let address: UInt64
    public let data: UInt16
    /// Per-vector mask and pending bits; 0 without per-vector masking.
    public let maskBits: UInt32
    public let pendingBits: UInt32

    public init(_ config: ConfigSpace, at offset: Int) {
        self.offset = offset
        let control = UInt16(config.get(offset + MSIRegister.control, width: 2))
        is64Bit = control & MSIRegister.is64Bit != 0
        perVectorMasking = control & MSIRegister.perVectorMasking != 0
        vectorsCapable = 1 << min(Int((control >> MSIRegister.capableShift) & 0x7), 5)
        enabled = control & MSIRegister.enable != 0
        // Values above the capability (including the reserved encodings 6 and 7) are undefined;
        // clamping keeps a hostile guest from making vector numbers overflow the field.
        vectorsAllocated = min(1 << min(Int((control >> MSIRegister.enableShift) & 0x7), 5), vectorsCapable)
        var address = config.get(offset + MSIRegister.addressLow, width: 4)
        if is64Bit { address |= config.get(offset + MSIRegister.addressLow + 4, width: 4) << 32 }
        self.address = address
        data = UInt16(config.get(offset + MSIRegister.dataOffset(is64Bit: is64Bit), width: 2))
        if perVectorMasking {
            maskBits = UInt32(config.get(offset + MSIRegister.maskOffset(is64Bit: is64Bit), width: 4))
            pendingBits = UInt32(config.get(offset + MSIRegister.pendingOffset(is64Bit: is64Bit), width: 4))
        } else {
            maskBits = 0
            pendingBits = 0
        }
    }

    /// The message vector `n` sends: the programmed data with its low log2(allocated) bits
    /// replaced by `n`. Nil for vectors that are not allocated.
    public func message(forVector n: Int) -> MSIMessage? {
        guard n >= 0, n < vectorsAllocated else { return nil }
        let lowBits = UInt16(vectorsAllocated - 1)
        return MSIMessage(address: address, data: UInt32((data & ~lowBits) | UInt16(n)))
    }

    public func isMasked(_ vector: Int) -> Bool {
        vector >= 0 && vector < 32 && maskBits & (1 << UInt32(vector)) != 0
    }

    public func isPending(_ vector: Int) -> Bool {
        vector >= 0 && vector < 32 && pendingBits & (1 << UInt32(vector)) != 0
    }
}

extension ConfigSpace {
    /// Adds an MSI capability. Software may write the enable bit, Multiple Message Enable,
    /// the address (dword aligned; the high half only when 64-bit), the 16-bit data and the
    /// mask bits of the advertised vectors; pending bits belong to the device.
    @discardableResult
    public mutating func addMSI(_ options: MSIOptions = .init(), at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        guard (1...32).contains(options.vectors), options.vectors.nonzeroBitCount == 1 else {
            throw .invalidCapability(name: "MSI", reason: "\(options.vectors) vectors: must be a power of two from 1 to 32")
        }
        if capability(.msi) != nil { throw .invalidCapability(name: "MSI", reason: "a function has one MSI capability") }
        let length = MSIRegister.length(is64Bit: options.is64Bit, perVectorMasking: options.perVectorMasking)
        let base = try addCapability(id: CapabilityID.msi, length: length, at: offset)
        var control = UInt16(options.vectors.trailingZeroBitCount) << MSIRegister.capableShift
        if options.is64Bit { control |= MSIRegister.is64Bit }
        if options.perVectorMasking { control |= MSIRegister.perVectorMasking }
        set(base + MSIRegister.control, width: 2, value: UInt64(control))
        setWritable(base + MSIRegister.control, width: 2, mask: UInt64(MSIRegister.enable | 0x7 << MSIRegister.enableShift))
        setWritable(base + MSIRegister.addressLow, width: 4, mask: 0xFFFF_FFFC)
        if options.is64Bit { setWritable(base + MSIRegister.addressLow + 4, width: 4, mask: 0xFFFF_FFFF) }
        setWritable(base + MSIRegister.dataOffset(is64Bit: options.is64Bit), width: 2, mask: 0xFFFF)
        if options.perVectorMasking {
            let vectorBits = UInt64(UInt32.max >> UInt32(32 - options.vectors))
            setWritable(base + MSIRegister.maskOffset(is64Bit: options.is64Bit), width: 4, mask: vectorBits)
        }
        return base
    }

    public var msiState: MSIState? {
        capability(.msi).map { MSIState(self, at: $0.offset) }
    }

    /// Device side: sets or clears vector `vector`'s pending bit. Ignored without per-vector
    /// masking or for vectors the function does not have.
    public mutating func setMSIPending(_ vector: Int, _ pending: Bool) {
        guard let state = msiState, state.perVectorMasking, vector >= 0, vector < state.vectorsCapable else { return }
        setBits(state.offset + MSIRegister.pendingOffset(is64Bit: state.is64Bit), width: 4,
                UInt64(1) << UInt64(vector), to: pending)
    }

    /// Device side: raises vector `vector`. Returns the message to send, or nil when MSI is
    /// off, the vector is not allocated, or it is masked (then its pending bit is set).
    public mutating func signalMSI(_ vector: Int) -> MSIMessage? {
        guard let state = msiState, state.enabled, let message = state.message(forVector: vector) else { return nil }
        if state.isMasked(vector) {
            setMSIPending(vector, true)
            return nil
        }
        return message
    }

    /// Device side, after a write reported `.msiChanged`: the messages of vectors that are
    /// pending but no longer masked. Their pending bits are cleared.
    public mutating func takeUnmaskedPendingMSI() -> [MSIMessage] {
        guard let state = msiState, state.enabled, state.perVectorMasking else { return [] }
        var messages: [MSIMessage] = []
        for vector in 0..<state.vectorsAllocated where state.isPending(vector) && !state.isMasked(vector) {
            if let message = state.message(forVector: vector) { messages.append(message) }
            setMSIPending(vector, false)
        }
        return messages
    }

    /// Message Control's low byte: Multiple Message Enable is clamped to Multiple Message
    /// Capable, so that what software reads back is what the function uses.
    func msiRule(relative: Int, old: UInt8, proposed: UInt8) -> UInt8 {
        guard relative == MSIRegister.control else { return proposed }
        let capable = (proposed >> 1) & 0x7
        let requested = (proposed >> 4) & 0x7
        return requested > capable ? (proposed & ~0x70) | capable << 4 : proposed
    }
}
