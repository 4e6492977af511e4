import CFDT

/// A libfdt error, keeping libfdt's code (the positive FDT_ERR_* value).
public struct FDTError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: Int32
    public let operation: String

    public init(code: Int32, operation: String) {
        self.code = code
        self.operation = operation
    }

    /// FDT_ERR_NOSPACE: the sequential-write buffer is full.
    public static let noSpace: Int32 = 3

    public var description: String {
        "\(operation): " + String(cString: fdt_strerror(-code)) + " (FDT_ERR \(code))"
    }
}

/// Sequential-write construction of a flattened device tree through libfdt
/// (fdt_create, fdt_begin_node, fdt_property, fdt_end_node, fdt_finish).
public struct FDTWriter: ~Copyable {
    private var buffer: [UInt8]

    public init(capacity: Int = 64 * 1024) throws(FDTError) {
        buffer = [UInt8](repeating: 0, count: capacity)
        try call("fdt_create") { fdt_create($0, Int32(capacity)) }
        try call("fdt_finish_reservemap") { fdt_finish_reservemap($0) }
    }

    private mutating func call(_ op: String, _ body: (UnsafeMutableRawPointer) -> Int32) throws(FDTError) {
        let rc = buffer.withUnsafeMutableBytes { body($0.baseAddress!) }
        if rc < 0 { throw FDTError(code: -rc, operation: op) }
    }

    public mutating func beginNode(_ name: String) throws(FDTError) {
        try call("fdt_begin_node(\(name))") { fdt in name.withCString { fdt_begin_node(fdt, $0) } }
    }

    public mutating func endNode() throws(FDTError) {
        try call("fdt_end_node") { fdt_end_node($0) }
    }

    public mutating func property(_ name: String, bytes: [UInt8]) throws(FDTError) {
        try call("fdt_property(\(name))") { fdt in
            name.withCString { n in bytes.withUnsafeBytes { fdt_property(fdt, n, $0.baseAddress, Int32($0.count)) } }
        }
    }

    /// An empty (boolean) property.
    public mutating func property(_ name: String) throws(FDTError) { try property(name, bytes: []) }

    /// Big-endian 32-bit cells.
    public mutating func property(_ name: String, cells: [UInt32]) throws(FDTError) {
        try property(name, bytes: cells.flatMap { c in (0..<4).map { UInt8(truncatingIfNeeded: c >> (24 - 8 * $0)) } })
    }

    /// A NUL-terminated string, or a string list.
    public mutating func property(_ name: String, strings: [String]) throws(FDTError) {
        try property(name, bytes: strings.flatMap { Array($0.utf8) + [0] })
    }

    public mutating func property(_ name: String, string: String) throws(FDTError) {
        try property(name, strings: [string])
    }

    /// Finishes the tree and returns the blob trimmed to its total size.
    public consuming func finish() throws(FDTError) -> [UInt8] {
        try call("fdt_finish") { fdt_finish($0) }
        let size = buffer.withUnsafeBytes { Int(UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self))) }
        return Array(buffer.prefix(size))
    }

    /// Checks a finished blob with fdt_check_header.
    public static func check(_ blob: [UInt8]) throws(FDTError) {
        let rc = blob.withUnsafeBytes { fdt_check_header($0.baseAddress) }
        if rc < 0 { throw FDTError(code: -rc, operation: "fdt_check_header") }
    }
}
