import VMMBase

/// What a Base Address Register decodes: its kind and its size (a power of two).
public struct BARDescriptor: Sendable, Hashable, Codable {
    public enum Kind: Sendable, Hashable, Codable {
        case io
        case memory32(prefetchable: Bool)
        case memory64(prefetchable: Bool)
    }

    public var kind: Kind
    public var size: UInt64

    public init(_ kind: Kind, size: UInt64) {
        self.kind = kind
        self.size = size
    }

    public var isIO: Bool { kind == .io }
    public var is64Bit: Bool { if case .memory64 = kind { true } else { false } }
    public var isPrefetchable: Bool {
        switch kind {
        case .io: false
        case .memory32(let p), .memory64(let p): p
        }
    }

    /// The read-only low bits: bit 0 for I/O; type (bits 2:1) and prefetchable (bit 3) for memory.
    var flagBits: UInt64 {
        switch kind {
        case .io: 0x1
        case .memory32(let p): p ? 0x8 : 0x0
        case .memory64(let p): 0x4 | (p ? 0x8 : 0x0)
        }
    }
}

/// Errors a device's set-up can make; they are programming errors in a device model, reported
/// with enough context to fix them.
public enum ConfigSpaceError: Error, Equatable, CustomStringConvertible {
    case invalidBAR(index: Int, reason: String)
    case capabilityOverlap(offset: Int, length: Int, existing: String)
    case capabilityOutOfRange(offset: Int, length: Int)
    case noRoomForCapability(length: Int, extended: Bool)
    /// A capability builder was given arguments the specification does not allow.
    case invalidCapability(name: String, reason: String)

    public var description: String {
        switch self {
        case .invalidBAR(let index, let reason): "BAR \(index): \(reason)"
        case .capabilityOverlap(let offset, let length, let existing):
            "capability at 0x\(String(offset, radix: 16)) (\(length) bytes) overlaps \(existing)"
        case .capabilityOutOfRange(let offset, let length):
            "capability at 0x\(String(offset, radix: 16)) (\(length) bytes) lies outside its config space area"
        case .noRoomForCapability(let length, let extended):
            "no room for a \(length)-byte \(extended ? "extended " : "")capability"
        case .invalidCapability(let name, let reason): "\(name) capability: \(reason)"
        }
    }
}

extension ConfigSpace {
    /// Offset of BAR `index` in the header.
    public static func barOffset(_ index: Int) -> Int { Reg.bar0 + 4 * index }

    /// Declares BAR `index`. A 64-bit BAR also takes `index + 1`. The address bits below the
    /// size are read-only zero, which is what makes the all-ones sizing protocol work.
    public mutating func defineBAR(_ index: Int, _ bar: BARDescriptor) throws(ConfigSpaceError) {
        guard index >= 0, index < layout.barCount else {
            throw .invalidBAR(index: index, reason: "a \(layout) header has \(layout.barCount) BARs")
        }
        guard bar.size.nonzeroBitCount == 1 else { throw .invalidBAR(index: index, reason: "size \(bar.size) is not a power of two") }
        if bar.is64Bit && index + 1 >= layout.barCount {
            throw .invalidBAR(index: index, reason: "a 64-bit BAR needs the next BAR slot")
        }
        let minimum: UInt64 = bar.isIO ? 4 : 16
        guard bar.size >= minimum else { throw .invalidBAR(index: index, reason: "size below \(minimum) bytes") }
        if bar.isIO && bar.size > 256 { throw .invalidBAR(index: index, reason: "I/O BARs are at most 256 bytes") }
        if !bar.is64Bit && bar.size > 1 << 31 { throw .invalidBAR(index: index, reason: "a 32-bit BAR is at most 2 GiB") }
        for i in index..<(index + (bar.is64Bit ? 2 : 1)) where bars[i] != nil || isUpperHalfOf64BitBAR(i) {
            throw .invalidBAR(index: index, reason: "BAR \(i) is already defined")
        }
        let offset = Self.barOffset(index)
        let mask = ~(bar.size - 1)
        set(offset, width: 4, value: bar.flagBits)
        setWritable(offset, width: 4, mask: mask & 0xFFFF_FFFF & ~(bar.isIO ? 0x3 : 0xF))
        if bar.is64Bit {
            set(offset + 4, width: 4, value: 0)
            setWritable(offset + 4, width: 4, mask: mask >> 32)
        }
        setBAR(index, bar)
    }

    /// Declares the expansion ROM BAR: address bits above the size and the enable bit.
    public mutating func defineROM(size: UInt64) throws(ConfigSpaceError) {
        guard size.nonzeroBitCount == 1, size >= 2048, size <= 1 << 24 else {
            throw .invalidBAR(index: 6, reason: "ROM size \(size) must be a power of two from 2 KiB to 16 MiB")
        }
        setWritable(layout.romOffset, width: 4, mask: (~(size - 1) & 0xFFFF_F800) | 1)
        setROMSize(size)
    }

    func isUpperHalfOf64BitBAR(_ index: Int) -> Bool {
        index > 0 && (bars[index - 1]?.is64Bit ?? false)
    }

    /// The address BAR `index` is programmed to, whether or not decoding is enabled.
    public func barAddress(_ index: Int) -> UInt64? {
        guard index < bars.count, let bar = bars[index] else { return nil }
        let offset = Self.barOffset(index)
        var address = get(offset, width: 4) & (bar.isIO ? ~UInt64(0x3) : ~UInt64(0xF))
        if bar.is64Bit { address |= get(offset + 4, width: 4) << 32 }
        return address
    }

    /// The range BAR `index` decodes right now: nil when its decode enable is off, when the
    /// address is unprogrammed (0) or mid-sizing (all ones), or when it would wrap.
    public func decodedBARRange(_ index: Int) -> AddressRange? {
        guard let bar = bars[index], let address = barAddress(index) else { return nil }
        let enabled = bar.isIO ? command.contains(.io) : command.contains(.memory)
        guard enabled, address != 0 else { return nil }
        let addressMask: UInt64 = bar.isIO ? 0xFFFF_FFFC : (bar.is64Bit ? ~UInt64(0xF) : 0xFFFF_FFF0)
        guard address != (addressMask & ~(bar.size - 1)) else { return nil }  // still sizing
        guard let range = AddressRange(base: address, size: bar.size) else { return nil }
        if bar.isIO && range.last > 0xFFFF { return nil }  // x86 port space is 64 KiB
        return range
    }

    /// The expansion ROM's range when both its enable bit and memory decoding are on.
    public func decodedROMRange() -> AddressRange? {
        guard let size = rom else { return nil }
        let value = get(layout.romOffset, width: 4)
        guard value & 1 == 1, command.contains(.memory) else { return nil }
        let address = value & 0xFFFF_F800
        guard address != 0 else { return nil }
        return AddressRange(base: address, size: size)
    }
}
