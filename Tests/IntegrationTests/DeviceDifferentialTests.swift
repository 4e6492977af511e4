import Foundation
import Machine
import PCI
import Testing

/// The same devices on both machines, driven by one qtest script: pcie-root-port, ioh3420,
/// pci-bridge, pcie-pci-bridge, x3130-upstream, xio3130-downstream and the test endpoint.
/// The script numbers the buses behind the ports itself (no firmware runs under qtest),
/// opens ECAM, reads every function's 4 KiB config space, and probes every byte of the
/// first 256 with 0xff / 0x00 writes. Differences must be in DeviceTables/qtest-allowlist.txt.
@Suite("qtest differential with devices")
struct DeviceDifferentialTests {
    static let devices = [
        "-device", "pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2,multifunction=on",
        "-device", "ioh3420,id=rp2,chassis=1,slot=2,addr=0x2.0x1",
        "-device", "pci-bridge,id=br1,chassis_nr=2,addr=0x3",
        "-device", "pcie-pci-bridge,id=pb1,bus=rp2",
        "-device", "x3130-upstream,id=up,bus=rp1",
        "-device", "xio3130-downstream,id=dp,bus=up,chassis=3,slot=1",
        "-device", "pci-testdev,id=td,addr=0x4",
    ]

    /// QEMU's q35 hands bridge and port slots to ACPI hot-plug by default, which leaves a
    /// cold-plugged port's native slot registers untouched (Presence Detect State 0); Switchyard's
    /// ports are native PCIe hot-plug slots (pciehp), as QEMU's are with this switch.
    static let nativeHotPlug = ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]

    /// (bus, device, function, name) of every function the script inspects.
    static let functions: [(Int, Int, Int, String)] = [
        (0, 2, 0, "pcie-root-port"), (0, 2, 1, "ioh3420"), (0, 3, 0, "pci-bridge"), (0, 4, 0, "pci-testdev"),
        (1, 0, 0, "x3130-upstream"), (2, 0, 0, "xio3130-downstream"), (3, 0, 0, "pcie-pci-bridge"),
    ]
    static let ids = ["pcie-root-port": "rp1", "ioh3420": "rp2", "pci-bridge": "br1", "pci-testdev": "td",
                      "x3130-upstream": "up", "xio3130-downstream": "dp", "pcie-pci-bridge": "pb1"]

    /// Offsets past the header that no capability of our model claims, per function name:
    /// QEMU keeps such bytes as read/write scratch, ours keep them reserved (allowlisted).
    static let unclaimed: [String: Set<Int>] = {
        var specs: [DeviceSpec] = []
        var rest = devices[...]
        while rest.popFirst() != nil, let spec = rest.popFirst() { if let d = try? DeviceSpec(parsing: spec) { specs.append(d) } }
        guard let machine = try? Machine(MachineConfiguration(devices: specs)) else { return [:] }
        var out: [String: Set<Int>] = [:]
        for (name, id) in ids {
            guard let config = machine.device(id: id)?.function.configSnapshot() else { continue }
            var owned = Set<Int>()
            for cap in config.capabilities { owned.formUnion(cap.offset..<(cap.offset + cap.length)) }
            out[name] = Set((0x40..<256).filter { !owned.contains($0) })
        }
        return out
    }()

    struct Probe { let name: String; let commands: [String] }

    static func ecam(_ bus: Int, _ device: Int, _ function: Int, _ offset: Int) -> String {
        "0x" + String(0xB000_0000 + (bus << 20 | device << 15 | function << 12 | offset), radix: 16)
    }

    static var probes: [Probe] {
        var probes: [Probe] = []
        // Open ECAM at 0xB0000000 (256 MiB) and number the buses: rp1 -> 1 (switch inside,
        // downstream port -> 2), rp2 -> 3 (the PCIe-to-PCI bridge).
        var setup = ["outl 0xcf8 0x80000064", "outl 0xcfc 0x0", "outl 0xcf8 0x80000060", "outl 0xcfc 0xb0000001"]
        setup += ["writel \(ecam(0, 2, 0, 0x18)) 0x20100", "writel \(ecam(1, 0, 0, 0x18)) 0x20201",
                  "writel \(ecam(2, 0, 0, 0x18)) 0x00000", "writel \(ecam(0, 2, 1, 0x18)) 0x30300"]
        probes.append(Probe(name: "setup", commands: setup + ["readl \(ecam(0, 0, 0, 0))"]))
        for (bus, device, function, name) in functions {
            for offset in stride(from: 0, to: 4096, by: 4) {
                // The bus-number registers were just written by the script itself.
                probes.append(Probe(name: "cfg \(name) 0x\(String(offset, radix: 16))",
                                    commands: ["readl \(ecam(bus, device, function, offset))"]))
            }
        }
        for (bus, device, function, name) in functions {
            for offset in 0..<256 where !(0x18...0x1A).contains(offset) {
                let a = ecam(bus, device, function, offset)
                let label = (unclaimed[name]?.contains(offset) ?? false ? "unclaimed " : "") + "0x" + String(offset, radix: 16)
                probes.append(Probe(name: "wmask \(name) \(label) ff", commands: ["writeb \(a) 0xff", "readb \(a)"]))
                probes.append(Probe(name: "wmask \(name) \(label) 00", commands: ["writeb \(a) 0x0", "readb \(a)"]))
            }
        }
        return probes
    }

    static func replies(_ executable: String, grace: Double, _ arguments: (String) -> [String]) throws -> [String] {
        try QTestDifferentialTests.replies(to: probes.map(\.commands), executable, grace: grace, arguments)
    }

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(5)))
    func devicesAnswerAsQEMUsDo() throws {
        let allow = try QTestDifferentialTests.allowlist()
        let ours = try Self.replies(switchyardBinary, grace: 5) {
            ["-machine", "q35", "-accel", "qtest", "-nodefaults", "-display", "none", "-m", "128M",
             "-qtest", $0, "-qtest-log", "none"] + Self.devices
        }
        let theirs = try Self.replies(QTestDifferentialTests.qemu!, grace: 0) {
            ["-machine", "q35", "-accel", "tcg", "-S", "-nodefaults", "-display", "none", "-monitor", "none",
             "-serial", "none", "-m", "128M", "-qtest", $0, "-qtest-log", "none"] + Self.nativeHotPlug + Self.devices
        }
        var allowlist = QTestDifferentialTests.Allowlist(allow)
        var differences: [String] = []
        for (probe, (a, b)) in zip(Self.probes, zip(ours, theirs)) where a != b {
            if allowlist.allows(probe.name, ours: a, theirs: b) { continue }
            differences.append("\(probe.name): switchyard '\(a)', QEMU '\(b)'")
        }
        #expect(ours.count == Self.probes.count && theirs.count == Self.probes.count)
        let summary = "\(differences.count) unexplained differences:\n" + differences.prefix(60).joined(separator: "\n")
        #expect(differences.isEmpty, "\(summary)")
        for stale in allowlist.stale(probeNames: Self.probes.map(\.name)) {
            Issue.record("qtest-allowlist: \(stale); remove it (or narrow it) now that the behaviour agrees")
        }
    }
}
