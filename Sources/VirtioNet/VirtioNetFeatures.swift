import VMMBase
import HostNetwork

/// virtio-net's device feature bits (virtio 1.x, 5.1.3). The transport adds its own
/// (VERSION_1, ACCESS_PLATFORM ...).
public struct VirtioNetFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The device completes partial checksums of frames the driver sends.
    public static let checksum = VirtioNetFeatures(rawValue: 1 << 0)
    /// The driver accepts frames with partial checksums.
    public static let guestChecksum = VirtioNetFeatures(rawValue: 1 << 1)
    public static let controlGuestOffloads = VirtioNetFeatures(rawValue: 1 << 2)
    public static let mtu = VirtioNetFeatures(rawValue: 1 << 3)
    /// The config space holds the device's MAC.
    public static let mac = VirtioNetFeatures(rawValue: 1 << 5)
    public static let guestTSO4 = VirtioNetFeatures(rawValue: 1 << 7)
    public static let guestTSO6 = VirtioNetFeatures(rawValue: 1 << 8)
    public static let guestECN = VirtioNetFeatures(rawValue: 1 << 9)
    public static let guestUFO = VirtioNetFeatures(rawValue: 1 << 10)
    public static let hostTSO4 = VirtioNetFeatures(rawValue: 1 << 11)
    public static let hostTSO6 = VirtioNetFeatures(rawValue: 1 << 12)
    public static let hostECN = VirtioNetFeatures(rawValue: 1 << 13)
    public static let hostUFO = VirtioNetFeatures(rawValue: 1 << 14)
    /// A received frame may span several buffers; the header's num_buffers says how many.
    public static let mergeableReceiveBuffers = VirtioNetFeatures(rawValue: 1 << 15)
    /// The config space's status field (link up, announce) is valid.
    public static let status = VirtioNetFeatures(rawValue: 1 << 16)
    public static let controlQueue = VirtioNetFeatures(rawValue: 1 << 17)
    public static let controlReceiveMode = VirtioNetFeatures(rawValue: 1 << 18)
    public static let controlVLAN = VirtioNetFeatures(rawValue: 1 << 19)
    public static let controlReceiveModeExtra = VirtioNetFeatures(rawValue: 1 << 20)
    public static let guestAnnounce = VirtioNetFeatures(rawValue: 1 << 21)
    public static let multiQueue = VirtioNetFeatures(rawValue: 1 << 22)
    public static let controlMACAddress = VirtioNetFeatures(rawValue: 1 << 23)

    /// What Switchyard's virtio-net offers over a tap: `multiQueue` only with more than one
    /// queue pair, as QEMU does (mq=on with queues=N).
    public static func offered(multiQueue: Bool) -> VirtioNetFeatures {
        var features: VirtioNetFeatures = [
            .checksum, .guestChecksum, .mac, .guestTSO4, .guestTSO6, .guestECN, .hostTSO4, .hostTSO6, .hostECN,
            .mergeableReceiveBuffers, .status, .controlQueue, .controlReceiveMode, .controlVLAN,
            .controlReceiveModeExtra, .guestAnnounce, .controlMACAddress,
        ]
        if multiQueue { features.insert(.multiQueue) }
        return features
    }

    /// The offloads the tap may use for frames it hands us: exactly what the driver accepted
    /// (a TSO frame for a driver without GUEST_TSO4 would be lost). The kernel allows TSO
    /// only with checksum offload, as the spec ties GUEST_TSO* to GUEST_CSUM.
    public var tapOffloads: TapOffloads {
        guard contains(.guestChecksum) else { return [] }
        var offloads: TapOffloads = [.checksum]
        if contains(.guestTSO4) { offloads.insert(.tso4) }
        if contains(.guestTSO6) { offloads.insert(.tso6) }
        if contains(.guestECN) && !offloads.isDisjoint(with: [.tso4, .tso6]) { offloads.insert(.tsoECN) }
        return offloads
    }

    /// The largest frame (with its 12-byte header) the device may have to place in the
    /// driver's receive buffers: a 64 KiB GSO frame when the driver takes TSO, else one MTU.
    public var largestReceivedFrame: Int {
        VirtioNetHeader.size + (isDisjoint(with: [.guestTSO4, .guestTSO6, .guestUFO]) ? 1514 + 4 : 65_535 + 14 + 4)
    }
}
