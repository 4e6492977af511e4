import VMMBase

/// Why an IOMMU (or other translator) refused a bus address.
public struct TranslationFault: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// No mapping for the address.
        case notPresent
        /// Mapped, but not for this direction (read or write).
        case permissionDenied
        /// The address is beyond what the translator can express.
        case addressOutOfRange
        /// Anything else; `code` says what (e.g. a VT-d fault reason).
        case other
    }

    public var kind: Kind
    /// The bus address that faulted.
    public var address: UInt64
    public var isWrite: Bool
    /// A translator-specific code (a VT-d fault reason), 0 when unused.
    public var code: UInt32

    public init(_ kind: Kind, address: UInt64, isWrite: Bool, code: UInt32 = 0) {
        self.kind = kind
        self.address = address
        self.isWrite = isWrite
        self.code = code
    }

    public var description: String {
        "translation fault (\(kind)) on \(isWrite ? "write" : "read") at 0x\(String(address, radix: 16))"
            + (code != 0 ? ", code \(code)" : "")
    }
}

/// Why a guest memory access was refused. No memory outside guest RAM is touched when one
/// of these is thrown; a write that throws has written nothing.
public enum GuestMemoryError: Error, Hashable, Sendable, CustomStringConvertible {
    /// `[address, address + length)` is not wholly inside one RAM region (a gap, an edge, MMIO).
    case unmapped(address: UInt64, length: UInt64)
    /// `address + length` passes 2^64.
    case addressOverflow(address: UInt64, length: UInt64)
    /// The translator (IOMMU) refused the bus address.
    case translationFault(TranslationFault)
    /// A region description was invalid (empty, wrapping past 2^64, overlapping another).
    case invalidRegion(String)

    public var description: String {
        switch self {
        case .unmapped(let a, let l):
            "guest memory access [0x\(String(a, radix: 16)), +0x\(String(l, radix: 16))) is not inside one RAM region"
        case .addressOverflow(let a, let l):
            "guest memory access at 0x\(String(a, radix: 16)) of 0x\(String(l, radix: 16)) bytes wraps past 2^64"
        case .translationFault(let f): f.description
        case .invalidRegion(let why): "invalid guest memory region: \(why)"
        }
    }
}
