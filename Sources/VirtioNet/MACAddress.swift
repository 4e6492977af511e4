/// An Ethernet address as QEMU's mac= spells it: six hex pairs separated by ':' (or '-').
public struct MACAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

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

    /// QEMU's default for the n-th NIC without mac=: 52:54:00:12:34:56 + n.
    public static func qemuDefault(index: Int) -> MACAddress {
        MACAddress(bytes: [0x52, 0x54, 0x00, 0x12, 0x34, UInt8(truncatingIfNeeded: 0x56 &+ index)])!
    }

    public var isMulticast: Bool { bytes[0] & 1 != 0 }
    public var isBroadcast: Bool { bytes.allSatisfy { $0 == 0xFF } }

    public var description: String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":") }
}
