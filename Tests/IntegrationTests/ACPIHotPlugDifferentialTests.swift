import Foundation
import Testing

/// ACPI PCI hot-plug (`-global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on`) on QEMU 10
/// and on Switchyard: one qtest script plays the guest's AML (`_E01` reads PCIU/PCID per BSEL,
/// `_EJ0` writes BNUM and B0EJ) around QMP device_add and device_del into a root port and a
/// pci-bridge slot, and both must read the same: the register block at 0x0CC0, GPE0_STS bit 1,
/// the root port's Slot Control, and DEVICE_DELETED only after the eject.
@Suite("ACPI hot-plug differential against QEMU")
struct ACPIHotPlugDifferentialTests {
    struct Observation: Equatable {
        var name: String
        var reply: String
    }

    /// rp1 and rp2 are root ports, br1 a PCI-PCI bridge; QEMU numbers their buses (BSEL) in
    /// reverse order of creation: rp2 0, br1 1, rp1 2.
    static let topology = ["-device", "pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2",
                           "-device", "pci-bridge,id=br1,chassis_nr=2,addr=0x3",
                           "-device", "pcie-root-port,id=rp2,chassis=3,slot=3,addr=0x4",
                           "-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on"]

    static func observe(_ executable: String, grace: Double, extra: [String]) throws -> [Observation] {
        let vm = try QTestSession(executable, extra + topology + ["-m", "128M", "-display", "none", "-nodefaults"],
                                  monitor: .qmp(negotiated: true), name: "acpidiff", grace: grace)
        defer { vm.stop() }
        let (qt, qmp) = (vm.qtest, vm.qmp!)
        // PMBASE 0x600 with ACPI decoding on: GPE0_STS at 0x620.
        try qt.configWrite(device: 0x1F, offset: 0x40, width: "l", value: 0x601)
        try qt.configWrite(device: 0x1F, offset: 0x44, width: "b", value: 0x80)
        var seen: [Observation] = []
        func record(_ name: String, _ reply: String) { seen.append(Observation(name: name, reply: reply)) }
        func look(_ stage: String) throws {
            for bsel in 0...3 {
                try qt.command("outl 0xcd0 \(bsel)")
                record("\(stage) BSEL \(bsel) PCIU", try qt.command("inl 0xcc0"))
                record("\(stage) BSEL \(bsel) PCID", try qt.command("inl 0xcc4"))
                record("\(stage) BSEL \(bsel) PCIRMV", try qt.command("inl 0xccc"))
                record("\(stage) BSEL \(bsel) BNUM", try qt.command("inl 0xcd0"))
            }
            record("\(stage) GPE0_STS", try qt.command("inb 0x620"))
            try qt.command("outl 0xcf8 0x8000106c")
            record("\(stage) rp1 slot control", try qt.command("inw 0xcfc"))
            try qt.command("outl 0xcf8 0x8000106c")
            record("\(stage) rp1 slot status", try qt.command("inw 0xcfe"))
            // _E01 clears the GPE once it has looked.
            try qt.command("outb 0x620 0x2")
        }
        func waitForDeleted(_ id: String) throws {
            let deadline = Date().addingTimeInterval(5)
            var deleted = false
            while !deleted && Date() < deadline {
                _ = try qmp.execute("query-status")
                deleted = qmp.events.contains { $0.contains("DEVICE_DELETED") && $0.contains("\"\(id)\"") }
            }
            record("DEVICE_DELETED \(id)", deleted ? "yes" : "no")
        }
        try look("empty")
        record("device_add rp1", try qmp.execute("device_add", #"{"driver": "pci-testdev", "id": "hp1", "bus": "rp1"}"#))
        try look("plugged rp1")
        record("device_add br1", try qmp.execute("device_add", #"{"driver": "pci-testdev", "id": "hp2", "bus": "br1", "addr": "2"}"#))
        try look("plugged br1")
        record("device_del hp1", try qmp.execute("device_del", #"{"id": "hp1"}"#))
        try look("unplug requested rp1")
        record("before eject hp1 deleted", qmp.events.contains { $0.contains("DEVICE_DELETED") } ? "yes" : "no")
        // rp1's _EJ0: BNUM = 2, B0EJ = 1 << 0.
        try qt.command("outl 0xcd0 2")
        try qt.command("outl 0xcc8 0x1")
        try waitForDeleted("hp1")
        try look("ejected rp1")
        record("device_del hp2", try qmp.execute("device_del", #"{"id": "hp2"}"#))
        try look("unplug requested br1")
        try qt.command("outl 0xcd0 1")
        try qt.command("outl 0xcc8 0x4")
        try waitForDeleted("hp2")
        try look("ejected br1")
        return seen
    }

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(2)))
    func registerBlockFollowsDeviceAddAndEjectAsOnQEMU() throws {
        let ours = try Self.observe(switchyardBinary, grace: 5, extra: ["-machine", "q35", "-accel", "qtest"])
        let theirs = try Self.observe(QTestDifferentialTests.qemu!, grace: 0, extra: [
            "-machine", "q35", "-accel", "tcg", "-S", "-monitor", "none", "-serial", "none"])
        #expect(ours.map(\.name) == theirs.map(\.name))
        for (a, b) in zip(ours, theirs) where a.reply != b.reply {
            Issue.record("\(a.name): switchyard '\(a.reply)', QEMU '\(b.reply)'")
        }
        // Facts the comparison rests on, so that both failing alike cannot pass.
        #expect(ours.first { $0.name == "plugged rp1 BSEL 2 PCIU" }?.reply == "OK 0x0001")
        #expect(ours.first { $0.name == "plugged br1 BSEL 1 PCIU" }?.reply == "OK 0x0004")
        #expect(ours.first { $0.name == "plugged rp1 GPE0_STS" }?.reply == "OK 0x0002")
        #expect(ours.first { $0.name == "DEVICE_DELETED hp1" }?.reply == "yes")
        #expect(ours.first { $0.name == "DEVICE_DELETED hp2" }?.reply == "yes")
    }

    @Test func unknownGlobalIsRejectedNamingTheSupportedOne() throws {
        let on = try run(switchyardBinary, ["-machine", "q35", "-accel", "qtest", "-global", "ICH9-LPC.foo=on"])
        #expect(on.status != 0)
        #expect(on.err.contains("ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on|off"))
    }
}
