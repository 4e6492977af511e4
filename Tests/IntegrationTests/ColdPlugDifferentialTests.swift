import Foundation
import Testing

/// Devices given with -device behind PCIe ports at start-up, on QEMU and on Switchyard, read
/// by one qtest script: each port's Link Capabilities (2), Link Status, Link Control 2, Slot
/// Control and Slot Status, and the ID of what answers behind it. Then device_del of a
/// cold-plugged switch (with a downstream port and a device behind it) and of a cold-plugged
/// PCIe-to-PCI bridge, the guest's part played through qtest (power off, indicator off):
/// the slots again, and the DEVICE_DELETED ids. Differences must be in
/// DeviceTables/qtest-allowlist.txt under "coldplug ...".
@Suite("cold-plug differential against QEMU")
struct ColdPlugDifferentialTests {
    /// (id, device number on bus 0, express capability offset, secondary bus, subordinate bus).
    struct Port { let id: String; let bus: Int; let device: Int; let express: Int; let secondary: Int; let subordinate: Int }

    static let devices = [
        "pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2",
        "x3130-upstream,id=up,bus=rp1",
        "xio3130-downstream,id=dp,bus=up,chassis=2,slot=1",
        "pci-testdev,id=td,bus=dp",
        "ioh3420,id=rp2,chassis=1,slot=2,addr=0x3",
        "pcie-pci-bridge,id=pb,bus=rp2",
        "pcie-root-port,id=rp3,chassis=1,slot=3,addr=0x4,x-speed=8,x-width=4",
        "pci-testdev,id=td2,bus=rp3",
        "pcie-root-port,id=rp4,chassis=1,slot=4,addr=0x5,x-speed=2_5,x-width=1",
        "x3130-upstream,id=up2,bus=rp4",
        "pcie-root-port,id=rp5,chassis=1,slot=5,addr=0x6",
        "pcie-root-port,id=rp6,chassis=1,slot=6,addr=0x7,x-speed=32,x-width=16,hotplug=off",
        "pcie-pci-bridge,id=pb2,bus=rp6",
        "pci-bridge,id=br1,chassis_nr=7,addr=0x8",
        "pci-testdev,id=t3,bus=br1,addr=1",
    ]

    /// Every port, parents before children, with the bus numbers the script gives it.
    static let ports = [
        Port(id: "rp1", bus: 0, device: 2, express: 0x54, secondary: 1, subordinate: 3),
        Port(id: "up", bus: 1, device: 0, express: 0x90, secondary: 2, subordinate: 3),
        Port(id: "dp", bus: 2, device: 0, express: 0x90, secondary: 3, subordinate: 3),
        Port(id: "rp2", bus: 0, device: 3, express: 0x90, secondary: 4, subordinate: 4),
        Port(id: "rp3", bus: 0, device: 4, express: 0x54, secondary: 5, subordinate: 5),
        Port(id: "rp4", bus: 0, device: 5, express: 0x54, secondary: 6, subordinate: 6),
        Port(id: "rp5", bus: 0, device: 6, express: 0x54, secondary: 7, subordinate: 7),
        Port(id: "rp6", bus: 0, device: 7, express: 0x54, secondary: 8, subordinate: 8),
    ]

    struct Observation: Equatable { let name: String; let reply: String }

    static func ecam(_ bus: Int, _ device: Int, _ offset: Int) -> String {
        "0x" + String(0xB000_0000 + (bus << 20 | device << 15 | offset), radix: 16)
    }

    static func observe(_ executable: String, grace: Double, arguments: [String]) throws -> [Observation] {
        let vm = try QTestSession(executable, arguments + devices.flatMap { ["-device", $0] } + [
            "-m", "128M", "-display", "none", "-nodefaults"], monitor: .qmp(negotiated: true), name: "cpdiff", grace: grace)
        defer { vm.stop() }
        let (qt, qmp) = (vm.qtest, vm.qmp!)
        // ECAM at 0xB0000000, then bus numbers (no firmware runs under qtest).
        for command in ["outl 0xcf8 0x80000064", "outl 0xcfc 0x0", "outl 0xcf8 0x80000060", "outl 0xcfc 0xb0000001"] {
            _ = try qt.command(command)
        }
        for port in ports {
            _ = try qt.command("writel \(ecam(port.bus, port.device, 0x18)) 0x\(String(port.bus | port.secondary << 8 | port.subordinate << 16, radix: 16))")
        }
        var seen: [Observation] = []
        func look(_ stage: String, _ port: Port) throws {
            let registers: [(String, String, Int)] = [
                ("link capabilities", "readl", 0x0C), ("link status", "readw", 0x12), ("slot control", "readw", 0x18),
                ("slot status", "readw", 0x1A), ("link capabilities 2", "readl", 0x2C), ("link control 2", "readw", 0x30),
            ]
            for (name, command, offset) in registers {
                let reply = try qt.command("\(command) \(ecam(port.bus, port.device, port.express + offset))")
                seen.append(Observation(name: "coldplug \(stage) \(port.id) \(name)", reply: reply))
            }
            seen.append(Observation(name: "coldplug \(stage) \(port.id) behind",
                                    reply: try qt.command("readl \(ecam(port.secondary, 0, 0))")))
        }
        for port in ports { try look("start", port) }

        // device_del of the switch behind rp1 and the bridge behind rp2: both slots are powered,
        // so both VMMs press the attention button and wait for the guest, who powers them off.
        let rp1 = ports[0], rp2 = ports[3]
        for (id, port) in [("up", rp1), ("pb", rp2)] {
            seen.append(Observation(name: "coldplug device_del \(id)", reply: try qmp.execute("device_del", #"{"id": "\#(id)"}"#)))
            try look("unplug requested", port)
            _ = try qt.command("writew \(ecam(port.bus, port.device, port.express + 0x18)) 0x7c0")
            try look("powered off", port)
        }
        // A device cold-plugged into a bridge's SHPC slot is known to its controller too: the
        // request is taken (the attention button; the guest would finish it).
        seen.append(Observation(name: "coldplug device_del t3", reply: try qmp.execute("device_del", #"{"id": "t3"}"#)))
        let expected: Set<String> = ["up", "dp", "td", "pb"]
        var deleted = Set<String>()
        let deadline = Date().addingTimeInterval(5)
        repeat {
            _ = try qmp.execute("query-status")
            deleted = Set(qmp.events.compactMap(Self.deletedID))
        } while deleted != expected && Date() < deadline
        seen.append(Observation(name: "coldplug DEVICE_DELETED", reply: deleted.sorted().joined(separator: ",")))
        return seen
    }

    /// The device id of a DEVICE_DELETED event line, if it is one.
    static func deletedID(_ event: String) -> String? {
        guard event.contains("\"DEVICE_DELETED\""), let range = event.range(of: #""device": ""#) ?? event.range(of: #""device":""#) else { return nil }
        return String(event[range.upperBound...].prefix { $0 != "\"" })
    }

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(2)))
    func coldPluggedSlotsLinksAndRemovalMatchQEMU() throws {
        let ours = try Self.observe(switchyardBinary, grace: 5, arguments: ["-machine", "q35", "-accel", "qtest"])
        let theirs = try Self.observe(QTestDifferentialTests.qemu!, grace: 0, arguments: [
            "-machine", "q35", "-accel", "tcg", "-S", "-monitor", "none", "-serial", "none"] + DeviceDifferentialTests.nativeHotPlug)
        #expect(ours.map(\.name) == theirs.map(\.name))
        var allowlist = QTestDifferentialTests.Allowlist(try QTestDifferentialTests.allowlist())
        for (a, b) in zip(ours, theirs) where a.reply != b.reply {
            if allowlist.allows(a.name, ours: a.reply, theirs: b.reply) { continue }
            Issue.record("\(a.name): switchyard '\(a.reply)', QEMU '\(b.reply)'")
        }
        for stale in allowlist.stale(probeNames: ours.map(\.name)) {
            Issue.record("qtest-allowlist: \(stale); remove it (or narrow it) now that the behaviour agrees")
        }
        // Facts QEMU shows, checked on our side too so that a QEMU change cannot hide a regression.
        let reply = { (name: String) in ours.first { $0.name == "coldplug " + name }?.reply }
        #expect(reply("start rp1 link status") == "OK 0x0000000000002011")
        #expect(reply("start rp1 slot status") == "OK 0x0000000000000040")
        #expect(reply("start rp1 slot control") == "OK 0x00000000000003c0")
        #expect(reply("DEVICE_DELETED") == "dp,pb,td,up")
    }
}
