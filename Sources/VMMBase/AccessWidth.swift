/// The width of a port, MMIO or config access: 1, 2, 4 or 8 bytes.
public enum AccessWidth: Int, Sendable, CaseIterable {
    case byte = 1, word = 2, dword = 4, qword = 8

    public var bytes: Int { rawValue }
    /// All ones for this width: what a read that hits nothing returns.
    public var allOnes: UInt64 { rawValue == 8 ? .max : (1 << (UInt64(rawValue) * 8)) - 1 }
    public func truncate(_ value: UInt64) -> UInt64 { value & allOnes }

    public init?(bytes: Int) { self.init(rawValue: bytes) }
}

/// Little-endian loads and stores on byte arrays, bounds-checked by the caller's indices.
public enum LittleEndian {
    /// Reads `count` bytes (1...8) at `offset`. Precondition: the bytes are in range.
    @inlinable
    public static func load(_ bytes: [UInt8], at offset: Int, count: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<count { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        return v
    }

    @inlinable
    public static func store(_ value: UInt64, into bytes: inout [UInt8], at offset: Int, count: Int) {
        for i in 0..<count { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
}
