/// A non-empty range of addresses `[base, last]`. Stored by its last address, not its end,
/// so a range can reach the top of the 64-bit space without overflowing.
public struct AddressRange: Hashable, Sendable, CustomStringConvertible {
    public let base: UInt64
    public let last: UInt64

    /// Returns nil for an empty range or one that would wrap past 2^64.
    public init?(base: UInt64, size: UInt64) {
        guard size > 0 else { return nil }
        let (last, overflow) = base.addingReportingOverflow(size - 1)
        guard !overflow else { return nil }
        self.base = base
        self.last = last
    }

    public init?(base: UInt64, last: UInt64) {
        guard last >= base else { return nil }
        self.base = base
        self.last = last
    }

    /// The size; nil only for the whole 64-bit space, whose size does not fit in 64 bits.
    public var size: UInt64? {
        let (s, overflow) = (last - base).addingReportingOverflow(1)
        return overflow ? nil : s
    }

    public func contains(_ address: UInt64) -> Bool { address >= base && address <= last }

    /// True when `[address, address + length)` lies wholly inside this range.
    public func contains(_ address: UInt64, length: UInt64) -> Bool {
        guard length > 0, contains(address) else { return false }
        return length - 1 <= last - address
    }

    public func contains(_ other: AddressRange) -> Bool { other.base >= base && other.last <= last }

    public func overlaps(_ other: AddressRange) -> Bool { base <= other.last && other.base <= last }

    public func intersection(_ other: AddressRange) -> AddressRange? {
        AddressRange(base: max(base, other.base), last: min(last, other.last))
    }

    /// The range moved by `offset`, or nil if it would wrap.
    public func shifted(by offset: UInt64) -> AddressRange? {
        let (b, o1) = base.addingReportingOverflow(offset)
        let (l, o2) = last.addingReportingOverflow(offset)
        return (o1 || o2) ? nil : AddressRange(base: b, last: l)
    }

    public var description: String {
        "[0x" + String(base, radix: 16) + "-0x" + String(last, radix: 16) + "]"
    }
}
