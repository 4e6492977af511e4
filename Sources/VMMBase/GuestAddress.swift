/// An address in the guest's physical address space (memory or port I/O).
public struct GuestAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }

    public static func < (lhs: GuestAddress, rhs: GuestAddress) -> Bool { lhs.raw < rhs.raw }

    /// Adds an offset, or returns nil if the result would pass the end of the address space.
    public func adding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = raw.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    public var description: String { "0x" + String(raw, radix: 16) }
}
