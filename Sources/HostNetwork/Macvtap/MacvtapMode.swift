import CNetlink

/// How a macvtap link shares its lower device (the MACVLAN_MODE_* values of <linux/if_link.h>).
/// The names are iproute2's and libvirt's (`<source dev='eth0' mode='vepa'/>`).
public enum MacvtapMode: String, CaseIterable, Hashable, Sendable, CustomStringConvertible {
    /// Links on the same lower device reach each other directly.
    case bridge
    /// Every frame goes out to the adjacent switch, which must reflect it (802.1Qbg).
    case vepa
    /// Links on the same lower device never reach each other.
    case `private`
    /// The only link on the lower device, taking all its traffic (a VF handed to one guest).
    case passthru

    public var kernelValue: UInt32 {
        switch self {
        case .private: UInt32(MACVLAN_MODE_PRIVATE.rawValue)
        case .vepa: UInt32(MACVLAN_MODE_VEPA.rawValue)
        case .bridge: UInt32(MACVLAN_MODE_BRIDGE.rawValue)
        case .passthru: UInt32(MACVLAN_MODE_PASSTHRU.rawValue)
        }
    }

    public init?(kernelValue: UInt32) {
        guard let mode = Self.allCases.first(where: { $0.kernelValue == kernelValue }) else { return nil }
        self = mode
    }

    public var description: String { rawValue }
}
