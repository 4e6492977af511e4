import VMMBase

/// Why a JSON text did not parse; `description` is the part after "JSON parse error, ".
public struct JSONParseError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
}

/// A strict JSON parser with QEMU's extension of single-quoted strings, over bytes (the text
/// may be anything a client sends). Nesting is limited as QEMU limits it.
public struct JSONParser {
    public static let maximumNesting = 1024

    private let bytes: [UInt8]
    private var index = 0

    public static func parse(_ text: some Collection<UInt8>) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes: Array(text))
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        if parser.index < parser.bytes.count {
            throw JSONParseError(description: "expecting end of input near \(parser.describeHere())")
        }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private mutating func skipWhitespace() {
        while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
    }

    private func describeHere() -> String {
        guard index < bytes.count else { return "end of input" }
        let b = bytes[index]
        if b >= 0x21 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
        return "byte 0x\(String(b, radix: 16))"
    }

    private mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth < Self.maximumNesting else { throw JSONParseError(description: "nesting limit exceeded") }
        guard index < bytes.count else { throw JSONParseError(description: "expecting value") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""), UInt8(ascii: "'"): return .string(try string())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        case UInt8(ascii: "a")...UInt8(ascii: "z"):
            let start = index
            while index < bytes.count, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(bytes[index]) { index += 1 }
            let word = String(decoding: bytes[start..<index], as: UTF8.self)
            switch word {
            case "true": return .bool(true)
            case "false": return .bool(false)
            case "null": return .null
            default: throw JSONParseError(description: "invalid keyword '\(word)'")
            }
        case UInt8(ascii: "]"), UInt8(ascii: "}"):
            throw JSONParseError(description: "expecting value")
        default:
            throw JSONParseError(description: "stray \(describeHere())")
        }
    }

    private mutating func expect(_ c: Character) throws(JSONParseError) {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == c.asciiValue! else {
            throw JSONParseError(description: "expecting '\(c)' near \(describeHere())")
        }
        index += 1
    }

    private mutating func object(depth: Int) throws(JSONParseError) -> JSONValue {
        index += 1
        var members: [(String, JSONValue)] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                throw JSONParseError(description: "expecting value")  // a trailing comma, as QEMU words it
            }
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") || bytes[index] == UInt8(ascii: "'") else {
                throw JSONParseError(description: "key is not a string in object near \(describeHere())")
            }
            let key = try string()
            try expect(":")
            skipWhitespace()
            let v = try value(depth: depth + 1)
            if let i = members.firstIndex(where: { $0.0 == key }) { members[i].1 = v } else { members.append((key, v)) }
            skipWhitespace()
            guard index < bytes.count else { throw JSONParseError(description: "premature end of input in object") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
            throw JSONParseError(description: "expected separator in dict near \(describeHere())")
        }
    }

    private mutating func array(depth: Int) throws(JSONParseError) -> JSONValue {
        index += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            items.append(try value(depth: depth + 1))
            skipWhitespace()
            guard index < bytes.count else { throw JSONParseError(description: "premature end of input in list") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
            throw JSONParseError(description: "expected separator in list near \(describeHere())")
        }
    }

    private mutating func hex4() throws(JSONParseError) -> UInt16 {
        guard index + 4 <= bytes.count,
              let v = UInt16(String(decoding: bytes[index..<index + 4], as: UTF8.self), radix: 16) else {
            throw JSONParseError(description: "invalid hex escape sequence in string")
        }
        index += 4
        return v
    }

    private mutating func string() throws(JSONParseError) -> String {
        let quote = bytes[index]
        index += 1
        var units: [UInt16] = []
        var raw: [UInt8] = []
        func flushRaw() throws(JSONParseError) {
            guard !raw.isEmpty else { return }
            guard let s = String(validating: raw, as: UTF8.self) else {
                throw JSONParseError(description: "invalid UTF-8 sequence in string")
            }
            units += s.utf16
            raw.removeAll()
        }
        while true {
            guard index < bytes.count else { throw JSONParseError(description: "missing '\(Character(Unicode.Scalar(quote)))' at end of string") }
            let b = bytes[index]
            index += 1
            if b == quote { break }
            if b < 0x20 { throw JSONParseError(description: "control character in string") }
            if b != UInt8(ascii: "\\") { raw.append(b); continue }
            try flushRaw()
            guard index < bytes.count else { throw JSONParseError(description: "unterminated escape in string") }
            let e = bytes[index]
            index += 1
            switch e {
            case UInt8(ascii: "\""): units.append(0x22)
            case UInt8(ascii: "'"): units.append(0x27)
            case UInt8(ascii: "\\"): units.append(0x5C)
            case UInt8(ascii: "/"): units.append(0x2F)
            case UInt8(ascii: "b"): units.append(0x08)
            case UInt8(ascii: "f"): units.append(0x0C)
            case UInt8(ascii: "n"): units.append(0x0A)
            case UInt8(ascii: "r"): units.append(0x0D)
            case UInt8(ascii: "t"): units.append(0x09)
            case UInt8(ascii: "u"): units.append(try hex4())
            default: throw JSONParseError(description: "invalid escape sequence in string")
            }
        }
        try flushRaw()
        guard let s = String(validating: units, as: UTF16.self) else {
            throw JSONParseError(description: "invalid \\u escape (unpaired surrogate) in string")
        }
        return s
    }

    private mutating func number() throws(JSONParseError) -> JSONValue {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        var isInteger = true
        while index < bytes.count {
            let b = bytes[index]
            if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) { index += 1; continue }
            if [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"), UInt8(ascii: "+"), UInt8(ascii: "-")].contains(b) {
                isInteger = false
                index += 1
                continue
            }
            break
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if isInteger, let i = Int64(text) { return .int(i) }
        // Past Int64 but within UInt64 stays exact, as in QEMU's parser; beyond, a double.
        if isInteger, let u = UInt64(text) { return .unsigned(u) }
        if let d = Double(text), text.last?.isNumber == true { return .double(d) }
        throw JSONParseError(description: "invalid number '\(text)'")
    }
}

/// Splits a QMP byte stream into JSON texts as QEMU's streamer does: a text ends where its
/// outermost brace or bracket closes; a scalar ends at whitespace. Strings are tracked so
/// braces inside them do not count. A byte that can never start or continue JSON outside a
/// string is an error, and the rest of its line is skipped: one error per line of garbage,
/// not one per byte. `skipLine()` does the same for a text the caller could not parse.
public struct JSONStreamSplitter: Sendable {
    public enum Item: Sendable, Equatable {
        case text([UInt8])
        case error(String)
    }

    public let limit: Int
    private var input: [UInt8] = []
    private var position = 0
    private var buffer: [UInt8] = []
    private var depth = 0
    private var quote: UInt8?
    private var escaped = false
    private var discarding = false
    /// Bytes skipped since the last text that framed cleanly.
    public private(set) var discardedBytes = 0
    /// The last item ended with its line (a scalar ended by a newline): nothing is left to skip.
    private var endedLine = false

    public init(limit: Int = 1 << 20) { self.limit = limit }

    /// Takes more of the stream; `next()` frames it.
    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if position == input.count {
            input.removeAll(keepingCapacity: true)
            position = 0
        }
        input.append(contentsOf: bytes)
    }

    /// Everything `bytes` completes, framed at once.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [Item] {
        append(bytes)
        var out: [Item] = []
        while let item = next() { out.append(item) }
        return out
    }

    /// Skips what is left of the current line (after a text that did not parse).
    public mutating func skipLine() {
        reset()
        discarding = !endedLine
    }

    /// The next complete item, or nil when the stream so far holds none.
    public mutating func next() -> Item? {
        while position < input.count {
            let b = input[position]
            position += 1
            if discarding {
                if b == 0x0A { discarding = false } else { discardedBytes += 1 }
                continue
            }
            if let q = quote {
                buffer.append(b)
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == q { quote = nil }
            } else {
                switch b {
                case 0x20, 0x09, 0x0A, 0x0D:
                    if depth == 0 && !buffer.isEmpty { return take(endingLine: b == 0x0A) } else if depth > 0 { buffer.append(b) }
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    if depth == 0 && !buffer.isEmpty {
                        position -= 1  // the bracket starts the next text
                        return take()
                    }
                    depth += 1
                    buffer.append(b)
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    buffer.append(b)
                    depth -= 1
                    if depth <= 0 { return take() }
                case UInt8(ascii: "\""), UInt8(ascii: "'"):
                    quote = b
                    buffer.append(b)
                case 0x21...0x7E:
                    buffer.append(b)
                default:
                    // QEMU shows a byte that is not valid UTF-8 as U+FFFD.
                    let stray = b < 0x80 ? String(Character(Unicode.Scalar(b))) : "\u{FFFD}"
                    endedLine = false
                    skipLine()
                    discardedBytes += 1
                    return .error("stray '\(stray)'")
                }
            }
            if buffer.count > limit {
                discardedBytes += buffer.count
                endedLine = b == 0x0A
                skipLine()
                return .error("token size limit exceeded (\(limit) bytes)")
            }
        }
        return nil
    }

    private mutating func take(endingLine: Bool = false) -> Item {
        let text = buffer
        endedLine = endingLine
        reset()
        discardedBytes = 0
        return .text(text)
    }

    private mutating func reset() {
        buffer.removeAll()
        depth = 0
        quote = nil
        escaped = false
    }
}
