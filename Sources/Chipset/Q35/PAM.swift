/// What a Programmable Attribute Map field says about one segment of 0xC0000-0xFFFFF
/// (Intel 3 Series MCH datasheet, PAM0-PAM6): whether CPU reads and writes go to DRAM or
/// are forwarded to PCI (where the firmware ROM lives).
public enum PAMAttribute: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Reads and writes go to PCI.
    case dramDisabled = 0
    /// Reads from DRAM, writes to PCI.
    case readOnly = 1
    /// Writes to DRAM, reads from PCI.
    case writeOnly = 2
    /// Reads and writes go to DRAM.
    case readWrite = 3

    public var readsDRAM: Bool { rawValue & 1 != 0 }
    public var writesDRAM: Bool { rawValue & 2 != 0 }

    public var description: String {
        switch self {
        case .dramDisabled: "disabled"
        case .readOnly: "RO"
        case .writeOnly: "WO"
        case .readWrite: "RW"
        }
    }
}

/// One of the 13 PAM segments: index 0 is the 64 KiB system BIOS area at 0xF0000; indices
/// 1-12 are the 16 KiB segments 0xC0000, 0xC4000, ... 0xEC000.
public struct PAMSegment: Sendable, Hashable {
    public let index: Int
    public let base: UInt64
    public let size: UInt64
    /// The config register (0x90-0x96) holding this segment's two attribute bits.
    public let register: Int
    /// The bit position of those two bits in the register (0 or 4).
    public let shift: Int

    /// All 13 segments in index order. Segment 0 uses PAM0's high nibble (PAM0's low
    /// nibble is reserved); segment i >= 1 uses PAM((i + 1) / 2), low nibble when i is odd.
    public static let all: [PAMSegment] = (0..<13).map { i in
        let register = 0x90 + (i + 1) / 2
        if i == 0 { return PAMSegment(index: 0, base: 0xF_0000, size: 0x1_0000, register: register, shift: 4) }
        return PAMSegment(index: i, base: 0xC_0000 + UInt64(i - 1) * 0x4000, size: 0x4000,
                          register: register, shift: i % 2 == 1 ? 0 : 4)
    }

    public var range: ClosedRange<UInt64> { base...(base + size - 1) }
}
