/// A piece of AML byte code (ACPI 6.5 §20). Values compose: every constructor takes finished
/// children and returns a finished encoding, so a tree of `AML` values is its own byte stream.
public struct AML: Hashable, Sendable {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// Concatenation of a term list.
    public init(_ terms: [AML]) { bytes = terms.flatMap(\.bytes) }
}

/// Builds term lists for scopes, devices, methods and control flow.
@resultBuilder
public enum AMLBuilder {
    public static func buildExpression(_ term: AML) -> [AML] { [term] }
    public static func buildExpression(_ terms: [AML]) -> [AML] { terms }
    public static func buildBlock(_ parts: [AML]...) -> [AML] { parts.flatMap { $0 } }
    public static func buildOptional(_ part: [AML]?) -> [AML] { part ?? [] }
    public static func buildEither(first: [AML]) -> [AML] { first }
    public static func buildEither(second: [AML]) -> [AML] { second }
    public static func buildArray(_ parts: [[AML]]) -> [AML] { parts.flatMap { $0 } }
}

// MARK: - Encoding primitives

public enum AMLEncoding {
    /// PkgLength (§20.2.4) for a body of `bodyLength` bytes; the encoded length counts itself.
    /// One byte holds up to 63; two, three and four bytes hold 12, 20 and 28 bits.
    public static func packageLength(bodyLength: Int) throws -> [UInt8] {
        for count in 1...4 {
            let total = bodyLength + count
            let limit = count == 1 ? 0x3F : (1 << (4 + 8 * (count - 1))) - 1
            if total <= limit { return encodeLength(total, byteCount: count) }
        }
        throw AMLError.tooLarge(what: "PkgLength", size: bodyLength, limit: 0x0FFF_FFFF - 4)
    }

    /// The PkgLength form used inside field lists, where the value is a bit width and does not
    /// count its own bytes.
    public static func fieldLength(_ value: Int) throws -> [UInt8] {
        for count in 1...4 {
            let limit = count == 1 ? 0x3F : (1 << (4 + 8 * (count - 1))) - 1
            if value <= limit { return encodeLength(value, byteCount: count) }
        }
        throw AMLError.tooLarge(what: "field length", size: value, limit: 0x0FFF_FFFF)
    }

    private static func encodeLength(_ value: Int, byteCount: Int) -> [UInt8] {
        if byteCount == 1 { return [UInt8(value)] }
        var out = [UInt8((byteCount - 1) << 6) | UInt8(value & 0x0F)]
        var rest = value >> 4
        for _ in 1..<byteCount { out.append(UInt8(rest & 0xFF)); rest >>= 8 }
        return out
    }

    /// `opcode PkgLength body`.
    static func package(_ opcode: [UInt8], _ body: [UInt8]) throws -> AML {
        AML(bytes: opcode + (try packageLength(bodyLength: body.count)) + body)
    }

    static func le(_ value: UInt64, _ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
    }
}

// MARK: - Data objects

extension AML {
    /// An integer with the shortest encoding: ZeroOp, OneOp, OnesOp (all 64 bits set),
    /// then byte, word, dword or qword prefix.
    public static func int(_ value: UInt64) -> AML {
        switch value {
        case 0: return AML(bytes: [0x00])
        case 1: return AML(bytes: [0x01])
        case UInt64.max: return AML(bytes: [0xFF])
        case ...0xFF: return AML(bytes: [0x0A, UInt8(value)])
        case ...0xFFFF: return AML(bytes: [0x0B] + AMLEncoding.le(value, 2))
        case ...0xFFFF_FFFF: return AML(bytes: [0x0C] + AMLEncoding.le(value, 4))
        default: return AML(bytes: [0x0E] + AMLEncoding.le(value, 8))
        }
    }

    public static func int<T: BinaryInteger>(_ value: T) -> AML { int(UInt64(truncatingIfNeeded: value)) }

    public static let zero = AML(bytes: [0x00])
    public static let one = AML(bytes: [0x01])
    public static let ones = AML(bytes: [0xFF])

    /// A null-terminated ASCII string (StringPrefix 0x0D).
    public static func string(_ text: String) throws -> AML {
        let b = Array(text.utf8)
        guard b.allSatisfy({ $0 >= 0x01 && $0 <= 0x7F }) else { throw AMLError.invalidIdentifier(text) }
        return AML(bytes: [0x0D] + b + [0x00])
    }

    /// Buffer(size) { bytes }.
    public static func buffer(_ contents: [UInt8]) throws -> AML {
        try AMLEncoding.package([0x11], int(contents.count).bytes + contents)
    }

    /// Package(n) { elements } (at most 255 elements).
    public static func package(_ elements: [AML]) throws -> AML {
        guard elements.count <= 255 else {
            throw AMLError.tooLarge(what: "Package", size: elements.count, limit: 255)
        }
        return try AMLEncoding.package([0x12], [UInt8(elements.count)] + elements.flatMap(\.bytes))
    }

    /// EISAID("PNP0A08"): three compressed letters and four hex digits, as a DWord.
    public static func eisaID(_ id: String) throws -> AML {
        let c = Array(id.utf8)
        guard c.count == 7,
              c[0..<3].allSatisfy({ $0 >= 0x41 && $0 <= 0x5A }),
              let digits = UInt16(String(decoding: c[3...], as: UTF8.self), radix: 16),
              c[3...].allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x46) })
        else { throw AMLError.invalidIdentifier(id) }
        let letters = UInt16(c[0] - 0x40) << 10 | UInt16(c[1] - 0x40) << 5 | UInt16(c[2] - 0x40)
        let be: [UInt8] = [UInt8(letters >> 8), UInt8(letters & 0xFF), UInt8(digits >> 8), UInt8(digits & 0xFF)]
        return AML(bytes: [0x0C] + be)
    }

    /// ToUUID("...") as a 16-byte buffer in the mixed-endian order of §19.6.142.
    public static func uuid(_ text: String) throws -> AML {
        let hexDigits = text.filter { $0 != "-" }
        guard text.count == 36, hexDigits.count == 32 else { throw AMLError.invalidIdentifier(text) }
        var raw: [UInt8] = []
        var idx = hexDigits.startIndex
        while idx < hexDigits.endIndex {
            let next = hexDigits.index(idx, offsetBy: 2)
            guard let b = UInt8(hexDigits[idx..<next], radix: 16) else { throw AMLError.invalidIdentifier(text) }
            raw.append(b)
            idx = next
        }
        let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15]
        return try buffer(order.map { raw[$0] })
    }

    /// A reference to a named object (a NameString used as a term).
    public static func name(_ path: AMLName) -> AML { AML(bytes: path.bytes) }

    public static func local(_ n: Int) -> AML {
        precondition((0...7).contains(n), "Local\(n) does not exist")
        return AML(bytes: [0x60 + UInt8(n)])
    }

    public static func arg(_ n: Int) -> AML {
        precondition((0...6).contains(n), "Arg\(n) does not exist")
        return AML(bytes: [0x68 + UInt8(n)])
    }

    /// Target operand for "no target" (NullName).
    public static let noTarget = AML(bytes: [0x00])
}

// MARK: - Namespace modifiers and named objects

extension AML {
    /// Name(path, value).
    public static func nameDecl(_ path: AMLName, _ value: AML) -> AML {
        AML(bytes: [0x08] + path.bytes + value.bytes)
    }

    public static func scope(_ path: AMLName, @AMLBuilder _ body: () throws -> [AML]) throws -> AML {
        try AMLEncoding.package([0x10], path.bytes + AML(try body()).bytes)
    }

    public static func device(_ path: AMLName, @AMLBuilder _ body: () throws -> [AML]) throws -> AML {
        try AMLEncoding.package([0x5B, 0x82], path.bytes + AML(try body()).bytes)
    }

    /// Method(name, argCount, Serialized/NotSerialized, syncLevel).
    public static func method(_ path: AMLName, arguments: Int = 0, serialized: Bool = false, syncLevel: Int = 0,
                              @AMLBuilder _ body: () throws -> [AML]) throws -> AML {
        guard (0...7).contains(arguments) else { throw AMLError.outOfRange(what: "method argument count", value: UInt64(arguments)) }
        guard (0...15).contains(syncLevel) else { throw AMLError.outOfRange(what: "sync level", value: UInt64(syncLevel)) }
        let flags = UInt8(arguments) | (serialized ? 0x08 : 0) | UInt8(syncLevel) << 4
        return try AMLEncoding.package([0x14], path.bytes + [flags] + AML(try body()).bytes)
    }

    /// Mutex(name, syncLevel).
    public static func mutex(_ path: AMLName, syncLevel: Int = 0) throws -> AML {
        guard (0...15).contains(syncLevel) else { throw AMLError.outOfRange(what: "sync level", value: UInt64(syncLevel)) }
        return AML(bytes: [0x5B, 0x01] + path.bytes + [UInt8(syncLevel)])
    }

    /// CreateDWordField(buffer, byteIndex, name) and its byte/word/qword siblings.
    public static func createField(bytes width: Int, _ source: AML, byteIndex: AML, _ path: AMLName) throws -> AML {
        let op: UInt8
        switch width {
        case 1: op = 0x8C
        case 2: op = 0x8B
        case 4: op = 0x8A
        case 8: op = 0x8F
        default: throw AMLError.outOfRange(what: "CreateField width", value: UInt64(width))
        }
        return AML(bytes: [op] + source.bytes + byteIndex.bytes + path.bytes)
    }

    /// Invocation of a method with its arguments.
    public static func call(_ path: AMLName, _ args: AML...) -> AML {
        AML(bytes: path.bytes + args.flatMap(\.bytes))
    }
}

// MARK: - Operation regions and fields

/// Address space of an OperationRegion (§19.6.100).
public enum AMLRegionSpace: UInt8, Sendable {
    case systemMemory = 0x00
    case systemIO = 0x01
    case pciConfig = 0x02
}

public enum AMLFieldAccess: UInt8, Sendable {
    case any = 0, byte = 1, word = 2, dword = 3, qword = 4, buffer = 5
}

public enum AMLFieldUpdate: UInt8, Sendable {
    case preserve = 0, writeAsOnes = 1, writeAsZeros = 2
}

/// One element of a Field list.
public enum AMLFieldElement: Hashable, Sendable {
    /// A named field unit of `bits` bits.
    case named(AMLNameSegment, bits: Int)
    /// Unnamed bits skipped.
    case reserved(bits: Int)
    /// Offset(byteOffset): skip to an absolute byte offset (encoded as a reserved field).
    case offset(bytes: Int)
    /// AccessAs(type) for the following units.
    case access(AMLFieldAccess)

    public static func named(_ name: String, bits: Int) -> AMLFieldElement {
        do { return .named(try AMLNameSegment(name), bits: bits) } catch {
            preconditionFailure("invalid field name literal '\(name)'")
        }
    }
}

extension AML {
    /// OperationRegion(name, space, offset, length).
    public static func operationRegion(_ path: AMLName, _ space: AMLRegionSpace, offset: AML, length: AML) -> AML {
        AML(bytes: [0x5B, 0x80] + path.bytes + [space.rawValue] + offset.bytes + length.bytes)
    }

    /// Field(region, access, Lock/NoLock, update) { elements }. Offsets must not move backwards.
    public static func field(_ region: AMLName, access: AMLFieldAccess, lock: Bool = false,
                             update: AMLFieldUpdate = .preserve, _ elements: [AMLFieldElement]) throws -> AML {
        var body = region.bytes
        body.append(access.rawValue | (lock ? 0x10 : 0) | update.rawValue << 5)
        var bit = 0
        for e in elements {
            switch e {
            case .named(let seg, let bits):
                guard bits > 0 else { throw AMLError.outOfRange(what: "field width", value: 0) }
                body += seg.bytes + (try AMLEncoding.fieldLength(bits))
                bit += bits
            case .reserved(let bits):
                guard bits > 0 else { throw AMLError.outOfRange(what: "reserved field width", value: 0) }
                body += [0x00] + (try AMLEncoding.fieldLength(bits))
                bit += bits
            case .offset(let bytes):
                let target = bytes * 8
                guard target >= bit else { throw AMLError.outOfRange(what: "field offset", value: UInt64(bytes)) }
                if target > bit { body += [0x00] + (try AMLEncoding.fieldLength(target - bit)) }
                bit = target
            case .access(let type):
                body += [0x01, type.rawValue, 0x00]
            }
        }
        return try AMLEncoding.package([0x5B, 0x81], body)
    }
}

// MARK: - Statements and expressions

extension AML {
    public static func store(_ source: AML, _ target: AML) -> AML { AML(bytes: [0x70] + source.bytes + target.bytes) }

    private static func binary(_ op: UInt8, _ a: AML, _ b: AML, _ target: AML) -> AML {
        AML(bytes: [op] + a.bytes + b.bytes + target.bytes)
    }

    public static func add(_ a: AML, _ b: AML, target: AML = .noTarget) -> AML { binary(0x72, a, b, target) }
    public static func subtract(_ a: AML, _ b: AML, target: AML = .noTarget) -> AML { binary(0x74, a, b, target) }
    public static func shiftLeft(_ a: AML, _ count: AML, target: AML = .noTarget) -> AML { binary(0x79, a, count, target) }
    public static func shiftRight(_ a: AML, _ count: AML, target: AML = .noTarget) -> AML { binary(0x7A, a, count, target) }
    public static func and(_ a: AML, _ b: AML, target: AML = .noTarget) -> AML { binary(0x7B, a, b, target) }
    public static func or(_ a: AML, _ b: AML, target: AML = .noTarget) -> AML { binary(0x7D, a, b, target) }
    public static func xor(_ a: AML, _ b: AML, target: AML = .noTarget) -> AML { binary(0x7F, a, b, target) }
    public static func not(_ a: AML, target: AML = .noTarget) -> AML { AML(bytes: [0x80] + a.bytes + target.bytes) }
    public static func increment(_ target: AML) -> AML { AML(bytes: [0x75] + target.bytes) }
    public static func decrement(_ target: AML) -> AML { AML(bytes: [0x76] + target.bytes) }
    public static func sizeOf(_ object: AML) -> AML { AML(bytes: [0x87] + object.bytes) }
    public static func index(_ source: AML, _ index: AML, target: AML = .noTarget) -> AML { binary(0x88, source, index, target) }
    public static func derefOf(_ ref: AML) -> AML { AML(bytes: [0x83] + ref.bytes) }

    public static func lAnd(_ a: AML, _ b: AML) -> AML { AML(bytes: [0x90] + a.bytes + b.bytes) }
    public static func lOr(_ a: AML, _ b: AML) -> AML { AML(bytes: [0x91] + a.bytes + b.bytes) }
    public static func lNot(_ a: AML) -> AML { AML(bytes: [0x92] + a.bytes) }
    public static func lEqual(_ a: AML, _ b: AML) -> AML { AML(bytes: [0x93] + a.bytes + b.bytes) }
    public static func lGreater(_ a: AML, _ b: AML) -> AML { AML(bytes: [0x94] + a.bytes + b.bytes) }
    public static func lLess(_ a: AML, _ b: AML) -> AML { AML(bytes: [0x95] + a.bytes + b.bytes) }

    public static func notify(_ object: AML, _ value: AML) -> AML { AML(bytes: [0x86] + object.bytes + value.bytes) }
    /// Acquire(mutex, timeout in ms; 0xFFFF waits forever).
    public static func acquire(_ mutex: AML, timeout: UInt16 = 0xFFFF) -> AML {
        AML(bytes: [0x5B, 0x23] + mutex.bytes + AMLEncoding.le(UInt64(timeout), 2))
    }
    public static func release(_ mutex: AML) -> AML { AML(bytes: [0x5B, 0x27] + mutex.bytes) }

    public static func `return`(_ value: AML) -> AML { AML(bytes: [0xA4] + value.bytes) }
    public static let `break` = AML(bytes: [0xA5])
    public static let noop = AML(bytes: [0xA3])

    public static func `if`(_ predicate: AML, @AMLBuilder _ body: () throws -> [AML]) throws -> AML {
        try AMLEncoding.package([0xA0], predicate.bytes + AML(try body()).bytes)
    }

    /// Else { body }; must directly follow an If in the same term list.
    public static func `else`(@AMLBuilder _ body: () throws -> [AML]) throws -> AML {
        try AMLEncoding.package([0xA1], AML(try body()).bytes)
    }

    public static func `while`(_ predicate: AML, @AMLBuilder _ body: () throws -> [AML]) throws -> AML {
        try AMLEncoding.package([0xA2], predicate.bytes + AML(try body()).bytes)
    }
}
