/// Errors raised while composing AML or resource templates.
public enum AMLError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A name segment is not 1-4 characters of [A-Z_][A-Z0-9_]*.
    case invalidNameSegment(String)
    /// A name path is malformed (empty segment, misplaced prefix).
    case invalidNamePath(String)
    /// A package, field or other object exceeds its encodable size.
    case tooLarge(what: String, size: Int, limit: Int)
    /// A value is outside the range its encoding allows.
    case outOfRange(what: String, value: UInt64)
    /// An EISA ID or UUID string is malformed.
    case invalidIdentifier(String)

    public var description: String {
        switch self {
        case .invalidNameSegment(let s): return "invalid AML name segment '\(s)'"
        case .invalidNamePath(let s): return "invalid AML name path '\(s)'"
        case .tooLarge(let what, let size, let limit): return "\(what) too large: \(size) (limit \(limit))"
        case .outOfRange(let what, let value): return "\(what) out of range: 0x\(String(value, radix: 16))"
        case .invalidIdentifier(let s): return "invalid identifier '\(s)'"
        }
    }
}

/// A four-character AML NameSeg (ACPI 6.5 §20.2.2). Shorter names are padded with '_'.
public struct AMLNameSegment: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(_ text: String) throws {
        let chars = Array(text.utf8)
        guard (1...4).contains(chars.count) else { throw AMLError.invalidNameSegment(text) }
        for (i, c) in chars.enumerated() {
            let upper = c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")
            let digit = c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")
            let under = c == UInt8(ascii: "_")
            guard upper || under || (digit && i > 0) else { throw AMLError.invalidNameSegment(text) }
        }
        bytes = chars + Array(repeating: UInt8(ascii: "_"), count: 4 - chars.count)
    }

    public var description: String { String(decoding: bytes, as: UTF8.self) }
}

/// An AML NameString: optional root ('\') or parent ('^'...) prefix, then zero or more segments.
/// Encodes as NameSeg, DualNamePrefix (0x2E), MultiNamePrefix (0x2F) or NullName (0x00).
public struct AMLName: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let isRooted: Bool
    public let parentPrefixes: Int
    public let segments: [AMLNameSegment]

    public init(rooted: Bool = false, parents: Int = 0, segments: [AMLNameSegment]) throws {
        guard !(rooted && parents > 0), parents >= 0, segments.count <= 255 else {
            throw AMLError.invalidNamePath(segments.map(\.description).joined(separator: "."))
        }
        isRooted = rooted
        parentPrefixes = parents
        self.segments = segments
    }

    /// Parses ASL notation: `\_SB.PCI0`, `^^PCEJ`, `BSEL`, `\`.
    public init(_ text: String) throws {
        var rest = Substring(text)
        var rooted = false
        var parents = 0
        if rest.first == "\\" {
            rooted = true
            rest = rest.dropFirst()
        } else {
            while rest.first == "^" { parents += 1; rest = rest.dropFirst() }
        }
        var segs: [AMLNameSegment] = []
        if !rest.isEmpty {
            for part in rest.split(separator: ".", omittingEmptySubsequences: false) {
                guard !part.isEmpty else { throw AMLError.invalidNamePath(text) }
                segs.append(try AMLNameSegment(String(part)))
            }
        }
        if segs.isEmpty && !rooted { throw AMLError.invalidNamePath(text) }
        try self.init(rooted: rooted, parents: parents, segments: segs)
    }

    /// Literal names in source are programmer-controlled; an invalid one is a bug and traps.
    public init(stringLiteral value: String) {
        do { try self.init(value) } catch { preconditionFailure("invalid AML name literal '\(value)'") }
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        if isRooted { out.append(0x5C) }
        out += Array(repeating: 0x5E, count: parentPrefixes)
        switch segments.count {
        case 0: out.append(0x00)
        case 1: out += segments[0].bytes
        case 2: out.append(0x2E); out += segments[0].bytes + segments[1].bytes
        default:
            out.append(0x2F)
            out.append(UInt8(segments.count))
            for s in segments { out += s.bytes }
        }
        return out
    }

    public var description: String {
        (isRooted ? "\\" : String(repeating: "^", count: parentPrefixes))
            + segments.map(\.description).joined(separator: ".")
    }
}
