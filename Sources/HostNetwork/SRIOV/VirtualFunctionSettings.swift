import VMMBase
import CNetlink
import Glibc

/// What a PF sets on one of its VFs through rtnetlink (IFLA_VF_MAC, IFLA_VF_VLAN,
/// IFLA_VF_SPOOFCHK, IFLA_VF_TRUST); nil fields are left as they are.
public struct VirtualFunctionSettings: Hashable, Sendable {
    public var mac: MACAddress?
    /// 0 removes the VF's VLAN.
    public var vlan: UInt16?
    public var spoofCheck: Bool?
    public var trust: Bool?

    public init(mac: MACAddress? = nil, vlan: UInt16? = nil, spoofCheck: Bool? = nil, trust: Bool? = nil) {
        (self.mac, self.vlan, self.spoofCheck, self.trust) = (mac, vlan, spoofCheck, trust)
    }

    public var isEmpty: Bool { mac == nil && vlan == nil && spoofCheck == nil && trust == nil }

    /// The values `previous` had for the fields these settings change (to restore at exit).
    func restoring(from previous: VirtualFunctionSettings) -> VirtualFunctionSettings {
        VirtualFunctionSettings(mac: mac == nil ? nil : previous.mac, vlan: vlan == nil ? nil : previous.vlan ?? 0,
                                spoofCheck: spoofCheck == nil ? nil : previous.spoofCheck,
                                trust: trust == nil ? nil : previous.trust)
    }
}

extension RouteSocket {
    /// The PF's current settings of VF `vf`, from a link dump (libnl asks for VF info there),
    /// nil when the kernel reports none for it.
    public func virtualFunctionSettings(pfIndex: Int32, vf: Int) throws(NetlinkError) -> VirtualFunctionSettings? {
        var cache: OpaquePointer?
        try checkNetlink(rtnl_link_alloc_cache(handle, AF_UNSPEC, &cache), "rtnl_link_alloc_cache")
        defer { nl_cache_free(cache) }
        guard let link = rtnl_link_get(cache, pfIndex) else {
            throw NetlinkError(code: NLE_OBJ_NOTFOUND, operation: "rtnl_link_get", context: "index \(pfIndex)")
        }
        defer { rtnl_link_put(link) }
        guard rtnl_link_has_vf_list(link) != 0, let info = rtnl_link_vf_get(link, UInt32(vf)) else { return nil }
        defer { rtnl_link_vf_put(info) }
        var settings = VirtualFunctionSettings()
        var address: OpaquePointer?
        if rtnl_link_vf_get_addr(info, &address) == 0 { settings.mac = NetlinkAddress.macAddress(of: address) }
        var vlans: UnsafeMutablePointer<nl_vf_vlans_t>?
        if rtnl_link_vf_get_vlans(info, &vlans) == 0, let vlans {
            settings.vlan = vlans.pointee.size > 0 ? UInt16(truncatingIfNeeded: vlans.pointee.vlans[0].vf_vlan) : 0
        } else {
            settings.vlan = 0
        }
        var value: UInt32 = 0
        if rtnl_link_vf_get_spoofchk(info, &value) == 0 { settings.spoofCheck = value != 0 }
        if rtnl_link_vf_get_trust(info, &value) == 0 { settings.trust = value != 0 }
        return settings
    }

    /// Sets `settings` on VF `vf` of the PF `pfIndex` (RTM_SETLINK with IFLA_VFINFO_LIST).
    public func setVirtualFunction(pfIndex: Int32, vf: Int, _ settings: VirtualFunctionSettings) throws(NetlinkError) {
        guard !settings.isEmpty else { return }
        try changeLink(index: pfIndex, context: "VF \(vf) of link \(pfIndex)") { (changes) throws(NetlinkError) in
            guard let info = rtnl_link_vf_alloc() else { throw NetlinkError(code: NLE_NOMEM, operation: "rtnl_link_vf_alloc") }
            defer { rtnl_link_vf_put(info) }
            rtnl_link_vf_set_index(info, UInt32(vf))
            if let mac = settings.mac {
                let address = try NetlinkAddress(mac)
                rtnl_link_vf_set_addr(info, address.handle)
            }
            if let vlan = settings.vlan {
                var vlans: UnsafeMutablePointer<nl_vf_vlans_t>?
                try checkNetlink(rtnl_link_vf_vlan_alloc(&vlans, 1), "rtnl_link_vf_vlan_alloc")
                guard let vlans else { throw NetlinkError(code: NLE_NOMEM, operation: "rtnl_link_vf_vlan_alloc") }
                vlans.pointee.vlans[0] = nl_vf_vlan_info_t(vf_vlan: UInt32(vlan), vf_vlan_qos: 0,
                                                          vf_vlan_proto: UInt16(0x8100).bigEndian)
                rtnl_link_vf_set_vlans(info, vlans)
                rtnl_link_vf_vlan_put(vlans)
            }
            if let spoofCheck = settings.spoofCheck { rtnl_link_vf_set_spoofchk(info, spoofCheck ? 1 : 0) }
            if let trust = settings.trust { rtnl_link_vf_set_trust(info, trust ? 1 : 0) }
            try checkNetlink(rtnl_link_vf_add(changes, info), "rtnl_link_vf_add", "VF \(vf)")
        }
    }
}
