import VMMBase
/// A control-queue command (virtio 1.x, 5.1.6.5): a class, a command and its data, to
/// which the device answers one ack byte.
public struct ControlCommand: Sendable, Hashable {
    public let commandClass: UInt8
    public let command: UInt8
    public let data: [UInt8]

    public init(commandClass: UInt8, command: UInt8, data: [UInt8] = []) {
        self.commandClass = commandClass
        self.command = command
        self.data = data
    }

    /// Splits the bytes the driver wrote (class, command, data); nil when shorter than 2.
    public init?(readable bytes: [UInt8]) {
        guard bytes.count >= 2 else { return nil }
        self.init(commandClass: bytes[0], command: bytes[1], data: Array(bytes.dropFirst(2)))
    }

    public static let ok: UInt8 = 0
    public static let error: UInt8 = 1

    public enum Class {
        public static let receiveMode: UInt8 = 0
        public static let mac: UInt8 = 1
        public static let vlan: UInt8 = 2
        public static let announce: UInt8 = 3
        public static let multiQueue: UInt8 = 4
    }
}

/// What the device's state holds that the control queue changes.
public struct ControlState: Sendable, Hashable {
    public var filter: ReceiveFilter
    /// Queue pairs in use (MQ's VQ_PAIRS_SET); 1 until the driver says otherwise.
    public var activePairs: Int = 1
    /// The pairs VQ_PAIRS_SET may ask for: the offered pairs under MQ, else 1 (`fit`).
    public var maximumPairs: Int
    /// The config status's ANNOUNCE bit: set by the device after migration or on request,
    /// cleared by the driver's ANNOUNCE_ACK.
    public var announcing = false

    public init(filter: ReceiveFilter, maximumPairs: Int) {
        self.filter = filter
        self.maximumPairs = maximumPairs
    }

    /// The state at reset (QEMU's virtio_net_reset): promiscuous, empty MAC tables and VLAN
    /// filter, the configured MAC again, one queue pair, no announcement.
    public static func powerOn(mac: MACAddress) -> ControlState {
        ControlState(filter: ReceiveFilter(mac: mac, filtersVLANs: true), maximumPairs: 1)
    }

    /// Fits the state to an activation's features: VLAN tags filtered only under CTRL_VLAN
    /// (else every VLAN passes, as QEMU's all-ones table), at most `maximumPairs` pairs. A
    /// state restored under the same features comes through unchanged.
    public mutating func fit(negotiated: VirtioNetFeatures, maximumPairs: Int) {
        self.maximumPairs = maximumPairs
        if !negotiated.contains(.controlVLAN) {
            filter.vlans = nil
        } else if filter.vlans == nil {
            filter.vlans = []
        }
        if activePairs > maximumPairs { activePairs = 1 }
    }

    /// Carries out `command` under `negotiated` features and returns the ack byte. A command
    /// the features do not allow, or malformed data, is refused (VIRTIO_NET_ERR) and leaves
    /// the state as it was; `problem` says why, for the guest-error log.
    public mutating func apply(_ command: ControlCommand, negotiated: VirtioNetFeatures) -> (ack: UInt8, problem: String?) {
        let outcome = outcome(of: command, negotiated: negotiated)
        switch outcome {
        case .success(let next):
            self = next
            return (ControlCommand.ok, nil)
        case .failure(let refusal):
            return (ControlCommand.error, refusal.reason)
        }
    }

    struct Refusal: Error {
        let reason: String
    }

    private func outcome(of command: ControlCommand, negotiated: VirtioNetFeatures) -> Result<ControlState, Refusal> {
        var next = self
        let data = command.data
        func refuse(_ reason: String) -> Result<ControlState, Refusal> {
            .failure(Refusal(reason: "control class \(command.commandClass) command \(command.command): \(reason)"))
        }
        switch command.commandClass {
        case ControlCommand.Class.receiveMode:
            guard negotiated.contains(.controlReceiveMode) else { return refuse("CTRL_RX was not negotiated") }
            guard data.count == 1 else { return refuse("needs one byte of data, got \(data.count)") }
            let on = data[0] != 0
            switch command.command {
            case 0: next.filter.promiscuous = on
            case 1: next.filter.allMulticast = on
            case 2...5:
                guard negotiated.contains(.controlReceiveModeExtra) else { return refuse("CTRL_RX_EXTRA was not negotiated") }
                switch command.command {
                case 2: next.filter.allUnicast = on
                case 3: next.filter.noMulticast = on
                case 4: next.filter.noUnicast = on
                default: next.filter.noBroadcast = on
                }
            default: return refuse("unknown receive-mode command")
            }
        case ControlCommand.Class.mac:
            switch command.command {
            case 0:
                guard negotiated.contains(.controlReceiveMode) else { return refuse("MAC_TABLE_SET needs CTRL_RX") }
                guard let (unicast, rest) = Self.macTable(data[...]), let (multicast, end) = Self.macTable(rest), end.isEmpty else {
                    return refuse("malformed MAC tables (two tables of a 32-bit count and 6-byte entries)")
                }
                next.filter.unicastOverflow = unicast.count > ReceiveFilter.tableLimit
                next.filter.multicastOverflow = multicast.count > ReceiveFilter.tableLimit
                next.filter.unicastTable = next.filter.unicastOverflow ? [] : unicast
                next.filter.multicastTable = next.filter.multicastOverflow ? [] : multicast
            case 1:
                guard negotiated.contains(.controlMACAddress) else { return refuse("CTRL_MAC_ADDR was not negotiated") }
                guard data.count == 6, let mac = MACAddress(bytes: data) else { return refuse("MAC_ADDR_SET needs 6 bytes") }
                next.filter.mac = mac
            default: return refuse("unknown MAC command")
            }
        case ControlCommand.Class.vlan:
            guard negotiated.contains(.controlVLAN), next.filter.vlans != nil else { return refuse("CTRL_VLAN was not negotiated") }
            guard data.count == 2 else { return refuse("needs a 16-bit VLAN id") }
            let vid = UInt16(data[0]) | UInt16(data[1]) << 8
            guard vid < 4096 else { return refuse("VLAN id \(vid) is above 4095") }
            switch command.command {
            case 0: next.filter.vlans?.insert(vid)
            case 1: next.filter.vlans?.remove(vid)
            default: return refuse("unknown VLAN command")
            }
        case ControlCommand.Class.announce:
            guard negotiated.contains(.guestAnnounce) else { return refuse("GUEST_ANNOUNCE was not negotiated") }
            guard command.command == 0 else { return refuse("unknown announce command") }
            next.announcing = false
        case ControlCommand.Class.multiQueue:
            guard negotiated.contains(.multiQueue) else { return refuse("MQ was not negotiated") }
            guard command.command == 0 else { return refuse("only VQ_PAIRS_SET is supported (no RSS, no hash reports)") }
            guard data.count == 2 else { return refuse("VQ_PAIRS_SET needs a 16-bit count") }
            let pairs = Int(UInt16(data[0]) | UInt16(data[1]) << 8)
            guard (1...maximumPairs).contains(pairs) else {
                return refuse("\(pairs) queue pairs is outside 1...\(maximumPairs)")
            }
            next.activePairs = pairs
        default:
            return refuse("unknown class")
        }
        return .success(next)
    }

    /// One MAC table: a little-endian 32-bit count, then that many 6-byte addresses.
    private static func macTable(_ bytes: ArraySlice<UInt8>) -> ([MACAddress], ArraySlice<UInt8>)? {
        guard bytes.count >= 4 else { return nil }
        let start = bytes.startIndex
        let count = (0..<4).reduce(UInt64(0)) { $0 | UInt64(bytes[start + $1]) << (8 * UInt64($1)) }
        let body = bytes.dropFirst(4)
        guard count <= UInt64(body.count) / 6 else { return nil }
        var entries: [MACAddress] = []
        var cursor = body.startIndex
        for _ in 0..<Int(count) {
            entries.append(MACAddress(bytes: Array(body[cursor..<cursor + 6]))!)
            cursor += 6
        }
        return (entries, body[cursor...])
    }
}
