import Foundation
import Testing

/// device_add and device_del through QMP on QEMU and on Switchyard, with one qtest script
/// reading what a guest would see in the root port's slot registers and behind it.
/// QEMU needs ACPI hot-plug for bridges and ports off to show native PCIe hot-plug.
@Suite("hot-plug differential against QEMU")
struct HotPlugDifferentialTests {
    struct Observation: Equatable {
        var name: String
        var reply: String
    }

    static let port = ["-device", "pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2"]

    static func observe(_ executable: String, grace: Double, extra: [String]) throws -> [Observation] {
        let vm = try QTestSession(executable, extra + port + ["-m", "128M", "-display", "none", "-nodefaults"],
                                  monitor: .qmp(negotiated: true), name: "hpdiff", grace: grace)
        defer { vm.stop() }
        let (qt, qmp) = (vm.qtest, vm.qmp!)
        let ecam = { (bus: Int, offset: Int) in "0x" + String(0xB000_0000 + (bus << 20 | 0x2 << 15 * (bus == 0 ? 1 : 0) | offset), radix: 16) }
        for command in ["outl 0xcf8 0x80000064", "outl 0xcfc 0x0", "outl 0xcf8 0x80000060", "outl 0xcfc 0xb0000001",
                        "writel \(ecam(0, 0x18)) 0x10100"] { _ = try qt.command(command) }
        var seen: [Observation] = []
        func look(_ stage: String) throws {
            seen.append(Observation(name: "\(stage) slot status", reply: try qt.command("readw \(ecam(0, 0x6e))")))
            seen.append(Observation(name: "\(stage) slot control", reply: try qt.command("readw \(ecam(0, 0x6c))")))
            seen.append(Observation(name: "\(stage) device behind", reply: try qt.command("readl \(ecam(1, 0))")))
        }
        try look("empty")
        seen.append(Observation(name: "device_add", reply: try qmp.execute("device_add", #"{"driver": "pci-testdev", "id": "hp", "bus": "rp1"}"#)))
        try look("plugged")
        seen.append(Observation(name: "device_del", reply: try qmp.execute("device_del", #"{"id": "hp"}"#)))
        // Both remove a device whose slot the guest never powered at once; the event follows.
        var deleted = qmp.events.contains { $0.contains("DEVICE_DELETED") }
        let deadline = Date().addingTimeInterval(5)
        while !deleted && Date() < deadline {
            _ = try qmp.execute("query-status")
            deleted = qmp.events.contains { $0.contains("DEVICE_DELETED") }
        }
        seen.append(Observation(name: "DEVICE_DELETED", reply: deleted ? "yes" : "no"))
        try look("unplugged")
        return seen
    }

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(2)))
    func slotRegistersFollowDeviceAddAndDelAsOnQEMU() throws {
        let ours = try Self.observe(switchyardBinary, grace: 5, extra: ["-machine", "q35", "-accel", "qtest"])
        let theirs = try Self.observe(QTestDifferentialTests.qemu!, grace: 0, extra: [
            "-machine", "q35", "-accel", "tcg", "-S", "-monitor", "none", "-serial", "none",
            "-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"])
        var allowlist = QTestDifferentialTests.Allowlist(try QTestDifferentialTests.allowlist())
        #expect(ours.map(\.name) == theirs.map(\.name))
        for (a, b) in zip(ours, theirs) where a.reply != b.reply {
            if allowlist.allows("hotplug " + a.name, ours: a.reply, theirs: b.reply) { continue }
            Issue.record("\(a.name): switchyard '\(a.reply)', QEMU '\(b.reply)'")
        }
        for stale in allowlist.stale(probeNames: ours.map { "hotplug " + $0.name }) {
            Issue.record("qtest-allowlist: \(stale); remove it (or narrow it) now that the behaviour agrees")
        }
        #expect(ours.first { $0.name == "DEVICE_DELETED" }?.reply == "yes")
        // The slot's power is off until the guest turns it on: the device is not reachable yet.
        #expect(ours.first { $0.name == "plugged device behind" }?.reply == "OK 0x00000000ffffffff")
    }
}
