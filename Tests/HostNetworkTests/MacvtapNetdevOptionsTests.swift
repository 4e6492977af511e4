import VMMBase
import HostNetwork
import Testing

/// `-netdev macvtap,...` as issue 14 spells it, with QEMU's wording for bad parameters
/// ("Parameter 'x' is missing", "Parameter 'x' expects ...", "Invalid parameter 'x'").
struct MacvtapNetdevOptionsTests {
    @Test func plainMacvtapDefaultsToBridgeModeAndOneQueue() throws {
        let options = try MacvtapNetdevOptions(properties: ["id": "n0", "link": "eth0"])
        #expect(options.source == .lower(link: "eth0"))
        #expect(options.mode == .bridge)
        #expect(options.queues == 1)
        #expect(options.mac == nil)
        #expect(!options.vhost)
        #expect(try MacvtapNetdevOptions(properties: ["id": "n0", "link": "eth0", "vhost": "on"]).vhost)
        #expect(try MacvtapNetdevOptions(properties: ["id": "n0", "pf": "enp1s0", "vf": "auto", "vhost": "on"]).vhost)
    }

    @Test func everyModeAndTheQueueLimitAreAccepted() throws {
        for mode in ["bridge", "vepa", "private", "passthru"] {
            #expect(try MacvtapNetdevOptions(properties: ["id": "n0", "link": "eth0", "mode": mode]).mode.rawValue == mode)
        }
        // MAX_TAP_QUEUES in <linux/if_tap.h> is 256.
        #expect(try MacvtapNetdevOptions(properties: ["id": "n0", "link": "eth0", "queues": "256"]).queues == 256)
    }

    @Test func virtualFunctionOptions() throws {
        let options = try MacvtapNetdevOptions(properties: ["id": "n1", "pf": "enp1s0", "vf": "auto", "mac": "52:54:00:12:34:56",
                                                            "vlan": "100", "spoofchk": "off", "trust": "on", "queues": "4"])
        #expect(options.source == .virtualFunction(pf: "enp1s0", vf: .auto))
        #expect(options.mode == .passthru)
        #expect(options.mac == MACAddress("52:54:00:12:34:56"))
        #expect(options.vlan == 100)
        #expect(options.spoofCheck == false)
        #expect(options.trust == true)
        #expect(try MacvtapNetdevOptions(properties: ["id": "n1", "pf": "enp1s0", "vf": "3"]).source
            == .virtualFunction(pf: "enp1s0", vf: .index(3)))
    }

    @Test(arguments: [
        (["link": "eth0"], "Parameter 'id' is missing"),
        (["id": "n0"], "macvtap netdev 'n0' needs one of ifname=EXISTING-MACVTAP, link=LOWER-DEVICE or pf=PF,vf=auto|N"),
        (["id": "n0", "link": "eth0", "ifname": "mvt0"], "Parameters 'ifname' and 'link' are mutually exclusive: give one of ifname=, link=, pf="),
        (["id": "n0", "link": "eth0", "mode": "vpea"], "Parameter 'mode' expects bridge, vepa, private or passthru"),
        (["id": "n0", "link": "eth0", "queues": "0"], "Parameter 'queues' expects a number from 1 to 256"),
        (["id": "n0", "link": "eth0", "queues": "257"], "Parameter 'queues' expects a number from 1 to 256"),
        (["id": "n0", "link": "eth0", "mac": "01:00:5e:00:00:01"], "Parameter 'mac' expects a unicast MAC address such as 52:54:00:12:34:56"),
        (["id": "n0", "link": "eth0", "mac": "52:54:00:12:34"], "Parameter 'mac' expects a unicast MAC address such as 52:54:00:12:34:56"),
        (["id": "n0", "link": "eth0", "vlan": "5"], "Parameter 'vlan' applies to VFs only: add pf=PF,vf=auto|N or drop vlan="),
        (["id": "n0", "link": "eth0", "colour": "red"], "Invalid parameter 'colour' (macvtap takes id, ifname, link, mode, queues, mac, pf, vf, vlan, spoofchk, trust, vhost)"),
        (["id": "n0", "link": "eth0", "vhost": "yes please"], "Parameter 'vhost' expects 'on' or 'off'"),
        (["id": "n0", "link": "an-interface-name-too-long"], "Parameter 'link' expects a network interface name (1-15 characters, no '/' or spaces)"),
        (["id": "n0", "ifname": "mvt0", "mode": "vepa"], "Parameter 'mode' cannot change an existing macvtap (ifname=): set it with `ip link` or use link=LOWER"),
        (["id": "n0", "pf": "enp1s0"], "Parameter 'vf' is missing (pf= needs vf=auto or vf=N)"),
        (["id": "n0", "pf": "enp1s0", "vf": "first"], "Parameter 'vf' expects auto or a VF index (0, 1, ...)"),
        (["id": "n0", "pf": "enp1s0", "vf": "0", "mode": "bridge"], "Parameter 'mode' must be passthru with pf= (a VF's macvtap owns the VF), or omitted"),
        (["id": "n0", "pf": "enp1s0", "vf": "0", "vlan": "4095"], "Parameter 'vlan' expects a VLAN id from 0 (none) to 4094"),
        (["id": "n0", "pf": "enp1s0", "vf": "0", "spoofchk": "maybe"], "Parameter 'spoofchk' expects 'on' or 'off'"),
    ])
    func badOptionsAreRefusedWithTheFix(_ properties: [String: String], _ message: String) {
        let error = #expect(throws: HostNetworkError.self) { _ = try MacvtapNetdevOptions(properties: properties) }
        #expect(error?.description == message)
    }

    @Test func macAddressesParseAndPrintInColonForm() {
        #expect(MACAddress("52:54:00:AB:cd:0f")?.description == "52:54:00:ab:cd:0f")
        #expect(MACAddress("52:54:00:ab:cd") == nil)
        #expect(MACAddress("52:54:00:ab:cd:0g") == nil)
        // QEMU (net_parse_macaddr) takes one-digit octets and "-" separators too.
        #expect(MACAddress("52:54:00:ab:cd:f")?.description == "52:54:00:ab:cd:0f")
        #expect(MACAddress("52-54-00-ab-cd-0f")?.description == "52:54:00:ab:cd:0f")
    }
}
