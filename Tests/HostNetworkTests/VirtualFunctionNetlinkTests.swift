import VMMBase
import Foundation
import HostNetwork
import HostOS
import Testing
import TestRequirements

/// The VF requests reach the kernel's rtnetlink VF handler. This host has no SR-IOV NIC (the rig's
/// igb is where values are set and read back), but a veth gives the same answer to libnl's
/// request as to iproute2's `ip link set LINK vf 0 ...`: the request parsed, the device lacking
/// the VF operation (EOPNOTSUPP), where a malformed IFLA_VFINFO_LIST would be EINVAL.
@Suite(.serialized, .requires(NamespaceFixture.available, NamespaceFixture.unavailable))
struct VirtualFunctionNetlinkTests {
    @Test func vfSettingsOnALinkWithoutVFsAreRefusedAsIproute2sAre() throws {
        let namespace = try NamespaceFixture()
        defer { namespace.remove() }
        try namespace.run(["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"])
        let iproute2 = #expect(throws: NamespaceFixture.CommandFailed.self) {
            try namespace.run(["ip", "link", "set", "va", "vf", "0", "mac", "52:54:00:12:34:56"])
        }
        #expect(iproute2?.description.contains("Operation not supported") == true)

        let socket = try RouteSocket(adopting: namespace.routeSocketDescriptor())
        let pf = try socket.link(named: "va")
        let requests: [VirtualFunctionSettings] = [
            VirtualFunctionSettings(mac: MACAddress("52:54:00:12:34:56")),
            VirtualFunctionSettings(vlan: 100),
            VirtualFunctionSettings(spoofCheck: false),
            VirtualFunctionSettings(trust: true),
        ]
        for request in requests {
            let error = #expect(throws: NetlinkError.self) { try socket.setVirtualFunction(pfIndex: pf.index, vf: 0, request) }
            #expect(error?.text == "Operation not supported", "\(request)")
            #expect(error?.operation == "rtnl_link_change")
        }
        #expect(try socket.virtualFunctionSettings(pfIndex: pf.index, vf: 0) == nil)
        // Nothing to set sends nothing.
        try socket.setVirtualFunction(pfIndex: pf.index, vf: 0, VirtualFunctionSettings())
    }

    /// A VF's interface starts down, and a passthru macvtap on a lower that is down carries
    /// nothing (the rig's virtio-net-vf: "lowerlayerdown"): the lease sets it up and, at
    /// release, down again. Read back with iproute2.
    @Test func aLinkIsSetUpAndDownAsIproute2ShowsIt() throws {
        let namespace = try NamespaceFixture()
        defer { namespace.remove() }
        try namespace.run(["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"])
        let socket = try RouteSocket(adopting: namespace.routeSocketDescriptor())
        let link = try socket.link(named: "va")
        func shownUp() throws -> Bool { try namespace.run(["ip", "-o", "link", "show", "va"]).contains(",UP") }
        #expect(!link.isUp)
        #expect(try shownUp() == false)
        try socket.setLink(index: link.index, up: true)
        #expect(try shownUp())
        #expect(try socket.link(named: "va").isUp)
        try socket.setLink(index: link.index, up: false)
        #expect(try shownUp() == false)
        let missing = #expect(throws: NetlinkError.self) { try socket.setLink(index: 99_999, up: true) }
        #expect(missing?.isNotFound == true)
    }
}
