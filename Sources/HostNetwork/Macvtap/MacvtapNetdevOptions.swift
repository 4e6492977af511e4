import VMMBase

/// The options of `-netdev macvtap,...`, parsed from the netdev's property dictionary.
///
/// Three ways to name the link, one per netdev:
///   `-netdev macvtap,id=n0,ifname=macvtap0[,queues=N]`           an existing macvtap link (left in place)
///   `-netdev macvtap,id=n0,link=eth0[,mode=bridge|vepa|private|passthru][,mac=][,queues=N]`
///                                                                 a new macvtap on eth0 (default mode bridge)
///   `-netdev macvtap,id=n0,pf=enp1s0,vf=auto|N[,mac=][,vlan=][,spoofchk=on|off][,trust=on|off][,queues=N]`
///                                                                 a passthru macvtap on a free VF of the PF
/// Each takes `vhost=on|off` (QEMU's tap spelling): vhost-net moves the frames, as libvirt's
/// `<interface type='direct'>` has it by default.
/// `ifname` is QEMU's tap spelling, `link` is iproute2's (`ip link add link eth0 ...`), the modes are
/// libvirt's `<source dev= mode=>`. Links Switchyard creates (and VF settings) are undone at exit.
public struct MacvtapNetdevOptions: Hashable, Sendable {
    public enum Source: Hashable, Sendable {
        case existing(ifname: String)
        case lower(link: String)
        case virtualFunction(pf: String, vf: VirtualFunctionChoice)
    }

    public var id: String
    public var source: Source
    public var mode: MacvtapMode
    public var queues: Int
    public var mac: MACAddress?
    /// VF settings applied through the PF (pf= only).
    public var vlan: UInt16?
    public var spoofCheck: Bool?
    public var trust: Bool?
    /// vhost=on: the in-kernel datapath (vhost-net reads and writes the macvtap's queues).
    public var vhost = false

    /// The kernel's limit on queues of one macvtap link (MAX_TAP_QUEUES).
    public static let maximumQueues = 256

    static let knownKeys: Set<String> = ["type", "id", "ifname", "link", "mode", "queues", "mac",
                                         "pf", "vf", "vlan", "spoofchk", "trust", "vhost"]

    public init(properties: [String: String]) throws(HostNetworkError) {
        if let unknown = properties.keys.sorted().first(where: { !Self.knownKeys.contains($0) }) {
            throw .invalidOption("Invalid parameter '\(unknown)' (macvtap takes id, ifname, link, mode, queues, mac, pf, vf, vlan, spoofchk, trust, vhost)")
        }
        if let type = properties["type"], type != "macvtap" {
            throw .invalidOption("Parameter 'type' expects macvtap")
        }
        guard let id = properties["id"], !id.isEmpty else { throw .invalidOption("Parameter 'id' is missing") }
        self.id = id

        let named = ["ifname", "link", "pf"].filter { properties[$0] != nil }
        guard named.count == 1 else {
            throw .invalidOption(named.isEmpty
                ? "macvtap netdev '\(id)' needs one of ifname=EXISTING-MACVTAP, link=LOWER-DEVICE or pf=PF,vf=auto|N"
                : "Parameters \(named.map { "'\($0)'" }.joined(separator: " and ")) are mutually exclusive: give one of ifname=, link=, pf=")
        }
        let onlyWithPF = ["vf", "vlan", "spoofchk", "trust"].filter { properties[$0] != nil }
        if let pf = properties["pf"] {
            guard let vfText = properties["vf"] else { throw .invalidOption("Parameter 'vf' is missing (pf= needs vf=auto or vf=N)") }
            source = .virtualFunction(pf: try Self.interfaceName(pf, key: "pf"), vf: try VirtualFunctionChoice(parsing: vfText))
        } else if let stray = onlyWithPF.first {
            throw .invalidOption("Parameter '\(stray)' applies to VFs only: add pf=PF,vf=auto|N or drop \(stray)=")
        } else if let ifname = properties["ifname"] {
            source = .existing(ifname: try Self.interfaceName(ifname, key: "ifname"))
            for key in ["mode", "mac"] where properties[key] != nil {
                throw .invalidOption("Parameter '\(key)' cannot change an existing macvtap (ifname=): set it with `ip link` or use link=LOWER")
            }
        } else {
            source = .lower(link: try Self.interfaceName(properties["link"]!, key: "link"))
        }

        if let modeText = properties["mode"] {
            guard let mode = MacvtapMode(rawValue: modeText) else {
                throw .invalidOption("Parameter 'mode' expects bridge, vepa, private or passthru")
            }
            if case .virtualFunction = source, mode != .passthru {
                throw .invalidOption("Parameter 'mode' must be passthru with pf= (a VF's macvtap owns the VF), or omitted")
            }
            self.mode = mode
        } else if case .virtualFunction = source {
            mode = .passthru
        } else {
            mode = .bridge
        }

        if let queuesText = properties["queues"] {
            guard let queues = Int(queuesText), (1...Self.maximumQueues).contains(queues) else {
                throw .invalidOption("Parameter 'queues' expects a number from 1 to \(Self.maximumQueues)")
            }
            self.queues = queues
        } else {
            queues = 1
        }
        if let macText = properties["mac"] {
            guard let mac = MACAddress(macText), !mac.isMulticast, mac != .zero else {
                throw .invalidOption("Parameter 'mac' expects a unicast MAC address such as 52:54:00:12:34:56")
            }
            self.mac = mac
        }
        if let vlanText = properties["vlan"] {
            guard let vlan = UInt16(vlanText), (0...4094).contains(vlan) else {
                throw .invalidOption("Parameter 'vlan' expects a VLAN id from 0 (none) to 4094")
            }
            self.vlan = vlan
        }
        spoofCheck = try properties["spoofchk"].map { (text) throws(HostNetworkError) in try Self.onOff(text, key: "spoofchk") }
        trust = try properties["trust"].map { (text) throws(HostNetworkError) in try Self.onOff(text, key: "trust") }
        vhost = try properties["vhost"].map { (text) throws(HostNetworkError) in try Self.onOff(text, key: "vhost") } ?? false
    }

    static func interfaceName(_ name: String, key: String) throws(HostNetworkError) -> String {
        guard !name.isEmpty, name.utf8.count <= 15, !name.contains("/"), !name.contains(where: \.isWhitespace) else {
            throw .invalidOption("Parameter '\(key)' expects a network interface name (1-15 characters, no '/' or spaces)")
        }
        return name
    }

    static func onOff(_ text: String, key: String) throws(HostNetworkError) -> Bool {
        switch text {
        case "on", "yes", "true": return true
        case "off", "no", "false": return false
        default: throw .invalidOption("Parameter '\(key)' expects 'on' or 'off'")
        }
    }
}

/// `vf=auto` or `vf=N`.
public enum VirtualFunctionChoice: Hashable, Sendable {
    case auto
    case index(Int)

    public init(parsing text: String) throws(HostNetworkError) {
        if text == "auto" {
            self = .auto
        } else if let index = Int(text), index >= 0, index < 65536 {
            self = .index(index)
        } else {
            throw .invalidOption("Parameter 'vf' expects auto or a VF index (0, 1, ...)")
        }
    }
}
