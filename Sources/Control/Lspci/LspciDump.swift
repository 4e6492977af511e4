import VMMBase

/// Reads lspci hex dumps (`lspci -x`, `-xxx`, `-xxxx`, with or without `-v`) the way libpci's
/// dump method (lib/dump.c) reads them for `lspci -F`: a line starting "BB:DD.F " or
/// "DDDD:BB:DD.F " opens a function, "OFF: xx xx ..." lines fill its bytes, an empty line
/// closes it, anything else is ignored.
public enum LspciDump {
    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case malformedLine(number: Int, text: String)
        case offsetBeyondConfigSpace(number: Int)

        public var description: String {
            switch self {
            case .malformedLine(let n, let text): "line \(n): malformed hex dump line '\(text)'"
            case .offsetBeyondConfigSpace(let n): "line \(n): at most 4096 bytes of config space are supported"
            }
        }
    }

    /// Functions in file order. Each `config` holds as many bytes as the dump gave (64, 256
    /// or 4096 usually); bytes the dump skipped inside that range read as 0xFF.
    public static func parse(_ text: String) throws(ParseError) -> [(address: PCIAddress, config: [UInt8])] {
        var result: [(address: PCIAddress, config: [UInt8])] = []
        var current: (address: PCIAddress, bytes: [UInt8], length: Int)?

        func close() {
            if let c = current { result.append((c.address, Array(c.bytes.prefix(c.length)))) }
            current = nil
        }

        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine[...]
            if let address = functionAddress(line) {
                close()
                current = (address, [UInt8](repeating: 0xFF, count: 4096), 0)
            } else if line.isEmpty {
                close()
            } else if current != nil, let (offset, rest) = hexLineOffset(line) {
                var position = offset
                var fields = rest.split(separator: " ", omittingEmptySubsequences: false)[...]
                // "00: 86 80": one space after the colon, then two-digit fields separated by
                // single spaces; libpci rejects anything else on such a line.
                if fields.first == "" { fields = fields.dropFirst() }
                for field in fields {
                    guard field.count == 2, let value = UInt8(field, radix: 16) else {
                        throw .malformedLine(number: lineNumber, text: String(line))
                    }
                    guard position < 4096 else { throw .offsetBeyondConfigSpace(number: lineNumber) }
                    current!.bytes[position] = value
                    position += 1
                    current!.length = max(current!.length, position)
                }
            }
        }
        close()
        return result
    }

    /// "00:1f.0 ..." or "0000:00:1f.0 ...": the address, when the line opens a function.
    static func functionAddress(_ line: Substring) -> PCIAddress? {
        guard let space = line.firstIndex(of: " ") else { return nil }
        let token = line[..<space]
        let shapes = ["##:##.#", "####:##:##.#", "#####:##:##.#"]
        guard shapes.contains(where: { matches(token, $0) }) else { return nil }
        return PCIAddress(parsing: token)
    }

    /// "1f0: ..." (one to eight hex digits, a colon, a space): the offset and the rest.
    static func hexLineOffset(_ line: Substring) -> (Int, Substring)? {
        guard let colon = line.firstIndex(of: ":") else { return nil }
        let digits = line[..<colon]
        let afterColon = line.index(after: colon)
        guard (2...8).contains(digits.count), digits.allSatisfy(\.isHexDigit),
              afterColon < line.endIndex, line[afterColon] == " ",
              let offset = Int(digits, radix: 16) else { return nil }
        return (offset, line[afterColon...])
    }

    private static func matches(_ token: Substring, _ shape: String) -> Bool {
        token.count == shape.count && zip(token, shape).allSatisfy { c, s in s == "#" ? c.isHexDigit : c == s }
    }
}
