/// A 48-bit Ethernet address, written as QEMU's mac= and iproute2 spell it: six hex octets
/// separated by ':' (or '-'), printed in the colon form `52:54:00:12:34:56`.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// Nil unless exactly six bytes are given.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

    /// Six octets of one or two hex digits (case-insensitive), all separated by ':' or all by '-'.
    public init?(_ text: String) {
        let parts = text.split(separator: text.contains("-") ? "-" : ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard (1...2).contains(part.count), let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.bytes = bytes
    }

    public static let zero = MACAddress(bytes: [0, 0, 0, 0, 0, 0])!

    /// QEMU's default for the n-th NIC without mac=: 52:54:00:12:34:56 + n.
    public static func qemuDefault(index: Int) -> MACAddress {
        MACAddress(bytes: [0x52, 0x54, 0x00, 0x12, 0x34, UInt8(truncatingIfNeeded: 0x56 &+ index)])!
    }

    /// A multicast address (I/G bit set) can never be a station's address.
    public var isMulticast: Bool { bytes[0] & 1 != 0 }
    public var isBroadcast: Bool { bytes.allSatisfy { $0 == 0xFF } }

    public var description: String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
}

/// In a snapshot as its text; text that is not an address does not decode.
extension MACAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let address = MACAddress(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "'\(text)' is not a MAC address")
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
