import HostDevices

/// The lspci display options `switchyard lspci` supports, counted as lspci counts repeated
/// letters (`-nn`, `-vv`, `-xxxx`) and combinable in one argument (`-tvnn`).
public struct LspciOptions: Sendable, Hashable {
    /// Number of `-n`: names, numbers, or both.
    public var numbering: PCINameDatabase.Numbering = .names
    /// Number of `-v`.
    public var verbosity: Int = 0
    /// Number of `-x`: 1 dumps 64 bytes, 3 the 256-byte space, 4 the 4096-byte space.
    public var hexDump: Int = 0
    /// `-t`: the bus tree instead of the listing.
    public var tree: Bool = false

    public init(numbering: PCINameDatabase.Numbering = .names, verbosity: Int = 0, hexDump: Int = 0,
                tree: Bool = false) {
        self.numbering = numbering
        self.verbosity = verbosity
        self.hexDump = hexDump
        self.tree = tree
    }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case unsupportedOption(Character)
        case notAnOption(String)

        public var description: String {
            switch self {
            case .unsupportedOption(let c): "lspci option -\(c) is not supported"
            case .notAnOption(let s): "'\(s)' is not an lspci option"
            }
        }
    }

    /// Parses lspci-style arguments, e.g. `["-tvnn"]` or `["-v", "-xxx"]`.
    public init(arguments: [String]) throws(ParseError) {
        var numbers = 0
        for argument in arguments {
            guard argument.hasPrefix("-"), argument.count > 1 else { throw .notAnOption(argument) }
            for letter in argument.dropFirst() {
                switch letter {
                case "n": numbers += 1
                case "v": verbosity += 1
                case "x": hexDump += 1
                case "t": tree = true
                default: throw .unsupportedOption(letter)
                }
            }
        }
        // libpci treats any count above two as two.
        numbering = numbers >= 2 ? .namesAndNumbers : numbers == 1 ? .numbers : .names
    }
}
