import VMMBase
/// The device-specific config space (virtio 1.x, 5.1.4): mac, status, max_virtqueue_pairs.
/// Read-only for the driver (MAC changes go through the control queue).
public struct VirtioNetConfig: Sendable, Hashable {
    public var mac: MACAddress
    public var linkUp: Bool
    public var announcing: Bool
    public var maximumPairs: UInt16

    public static let statusLinkUp: UInt16 = 1
    public static let statusAnnounce: UInt16 = 2

    /// mac (6) + status (2) + max_virtqueue_pairs (2), QEMU's size for these features.
    public static let size = 10

    public init(mac: MACAddress, linkUp: Bool = true, announcing: Bool = false, maximumPairs: UInt16 = 1) {
        self.mac = mac
        self.linkUp = linkUp
        self.announcing = announcing
        self.maximumPairs = maximumPairs
    }

    public var status: UInt16 { (linkUp ? Self.statusLinkUp : 0) | (announcing ? Self.statusAnnounce : 0) }

    public var bytes: [UInt8] {
        mac.bytes + [UInt8(truncatingIfNeeded: status), UInt8(status >> 8),
                     UInt8(truncatingIfNeeded: maximumPairs), UInt8(maximumPairs >> 8)]
    }

    /// `count` bytes from `offset`; bytes past the end read as 0 (a bad offset is the
    /// driver's mistake and must not fault).
    public func read(offset: Int, count: Int) -> [UInt8] {
        let all = bytes
        return (0..<max(count, 0)).map { i in
            let (at, overflow) = offset.addingReportingOverflow(i)
            return !overflow && at >= 0 && at < all.count ? all[at] : 0
        }
    }
}
