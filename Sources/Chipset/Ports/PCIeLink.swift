import PCI

/// The maximum link of one end of a PCI Express link (Max Link Speed and Maximum Link Width
/// in Link Capabilities), and the link two ends train to. One rule for every port type:
/// the register values are derived from the speed and width as QEMU 10 derives them for its
/// ports (measured through qtest with every `x-speed`/`x-width` of pcie-root-port).
public struct PCIeLinkCapabilities: Sendable, Hashable, Codable {
    /// Max Link Speed as a Supported Link Speeds Vector position (1 = 2.5 GT/s ... 6 = 64
    /// GT/s), or 0 when the port leaves the field unfilled (QEMU's xio3130-downstream).
    public var maxSpeed: UInt8
    /// Maximum Link Width (1 ... 32), or 0 when unfilled.
    public var maxWidth: UInt8

    public init(maxSpeed: UInt8, maxWidth: UInt8) {
        self.maxSpeed = maxSpeed
        self.maxWidth = maxWidth
    }

    /// 2.5 GT/s x1, the link every PCI Express component supports.
    public static let minimum = PCIeLinkCapabilities(maxSpeed: 1, maxWidth: 1)

    /// The speeds `x-speed` names, by vector position, and the widths `x-width` accepts.
    public static let speedNames = ["2_5": UInt8(1), "5": 2, "8": 3, "16": 4, "32": 5, "64": 6]
    public static let widths: [UInt8] = [1, 2, 4, 8, 12, 16, 32]

    /// Faster than 2.5 GT/s: the port reports Data Link Layer Link Active (PCIe Base 7.5.3.6
    /// requires it above 5 GT/s; QEMU sets it above 2.5 GT/s).
    public var reportsLinkActive: Bool { maxSpeed > 1 }

    /// Link Capabilities without the port number: speed, width, L0s support, Link Bandwidth
    /// Notification (wider than x1 or faster than 2.5 GT/s) and DLL Link Active Reporting.
    public var register: UInt32 {
        var value = UInt32(maxSpeed & 0xF) | UInt32(maxWidth & 0x3F) << 4 | 1 << 10
        if maxWidth > 1 || maxSpeed > 1 { value |= 1 << 21 }
        if reportsLinkActive { value |= 1 << 20 }
        return value
    }

    /// Link Capabilities 2: the Supported Link Speeds Vector, which QEMU fills only above
    /// 5 GT/s (the older speeds are described by Link Capabilities alone).
    public var capabilities2: UInt32 {
        guard maxSpeed > 2 else { return 0 }
        return UInt32((1 << (Int(maxSpeed) + 1)) - 2)
    }

    /// Link Control 2 Target Link Speed: the maximum; 2.5 GT/s ports may hardwire it to 0.
    public var targetSpeed: UInt16 { maxSpeed > 1 ? UInt16(maxSpeed) : 0 }

    /// Reads the Link Capabilities of a function that has a PCI Express link; nil for a
    /// conventional PCI function (or one without a link).
    public init?(config: ConfigSpace) {
        guard let base = config.pciExpressOffset, config.pciExpressPortType?.hasLink == true else { return nil }
        let value = config.get(base + PCIExpressRegister.linkCapabilities, width: 4)
        self.init(maxSpeed: UInt8(value & 0xF), maxWidth: UInt8((value >> 4) & 0x3F))
    }

    /// The speed and width the link trains to: the lower of the two ends' maxima. An
    /// unfilled field counts as 2.5 GT/s x1, which every component supports. Without a
    /// PCI Express partner (an empty slot, or a conventional PCI device) the port reports
    /// its own maximum, as QEMU does.
    public func trained(with partner: PCIeLinkCapabilities?) -> (speed: UInt8, width: UInt8) {
        let own = floored
        guard let partner = partner?.floored else { return (own.maxSpeed, own.maxWidth) }
        return (min(own.maxSpeed, partner.maxSpeed), min(own.maxWidth, partner.maxWidth))
    }

    /// Link Status: Current Link Speed, Negotiated Link Width and Data Link Layer Link Active.
    public func linkStatus(partner: PCIeLinkCapabilities?, active: Bool) -> UInt16 {
        let link = trained(with: partner)
        return UInt16(link.speed) | UInt16(link.width) << 4 | (active ? 1 << 13 : 0)
    }

    /// The Link Status bits `linkStatus` computes (the rest are events and fixed bits).
    public static let linkStatusComputedBits: UInt16 = 0x000F | 0x03F0 | 1 << 13

    private var floored: PCIeLinkCapabilities {
        PCIeLinkCapabilities(maxSpeed: max(maxSpeed, 1), maxWidth: max(maxWidth, 1))
    }
}
