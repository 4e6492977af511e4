import VMMBase

/// What rtnetlink says about one network interface, copied out of libnl's object.
public struct LinkInfo: Hashable, Sendable {
    public var name: String
    public var index: Int32
    /// The IFLA_INFO_KIND ("macvtap", "veth", ...), nil for a plain device.
    public var kind: String?
    /// The lower device's index (IFLA_LINK), for stacked links such as macvtap.
    public var lowerIndex: Int32?
    public var address: MACAddress?
    /// The macvtap mode, for macvtap links.
    public var macvtapMode: MacvtapMode?
    public var isUp: Bool
}
