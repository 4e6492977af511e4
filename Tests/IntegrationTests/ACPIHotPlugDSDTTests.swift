import Firmware
import Foundation
import Machine
import Testing

/// The DSDT of a machine with ACPI PCI hot-plug against QEMU 10's for the same devices (read
/// from its fw_cfg by Tests/Oracle/qemu_dsdt.py), both disassembled by iasl: the same bus
/// selectors (BSEL) on the same bridge devices, and `_EJ0` on the same slots.
@Suite("ACPI hot-plug DSDT against QEMU")
struct ACPIHotPlugDSDTTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let iasl = ["/usr/bin/iasl", "/usr/local/bin/iasl"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static var ready: Bool { iasl != nil && QTestDifferentialTests.qemu != nil }

    /// The rig's topology (Tests/Rig/l1/lib.sh).
    static let devices = [
        "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1", "pcie-root-port,id=rp2,bus=pcie.0,chassis=2,slot=2",
        "pcie-root-port,id=rp3,bus=pcie.0,chassis=3,slot=3", "pcie-root-port,id=rp4,bus=pcie.0,chassis=4,slot=4",
        "pci-testdev,id=t1,bus=rp1", "x3130-upstream,id=up1,bus=rp2",
        "xio3130-downstream,id=dn1,bus=up1,chassis=5,slot=0", "xio3130-downstream,id=dn2,bus=up1,chassis=6,slot=1",
        "pci-testdev,id=t2,bus=dn1", "pci-bridge,id=br1,bus=pcie.0,chassis_nr=7",
        "pci-testdev,id=t3,bus=br1,addr=1", "pci-testdev,id=t0,bus=pcie.0",
    ]

    /// What the hot-plug part of a disassembled DSDT says: BSEL per device path, and the
    /// paths of devices with an `_EJ0`.
    struct HotPlugShape: Equatable {
        var selectors: [String: String] = [:]
        var ejectable: Set<String> = []

        init(dsl: String) {
            var stack: [String] = []
            var pending = ""
            for raw in dsl.split(separator: "\n", omittingEmptySubsequences: false) {
                let line = raw.trimmingCharacters(in: .whitespaces)
                // The device holding the method (the method's own level opens after this line).
                if line.hasPrefix("Method (_EJ0") { ejectable.insert(stack.filter { !$0.isEmpty }.joined(separator: ".")) }
                if let name = Self.blockName(line) { pending = name; continue }
                if line.hasPrefix("Name (BSEL, ") {
                    selectors[stack.filter { !$0.isEmpty }.joined(separator: ".")] = String(line.dropFirst(12).prefix { $0 != ")" })
                }
                // A "{" alone opens the block named on the line before; any other brace (a
                // resource template, a package) opens or closes an unnamed level.
                for c in line where c == "{" || c == "}" {
                    if c == "{" { stack.append(line == "{" ? pending : "") } else { _ = stack.popLast() }
                }
                pending = ""
            }
        }

        /// "Device (S10)" -> "S10", "Scope (_SB)" -> "_SB"; nil for any other line.
        static func blockName(_ line: String) -> String? {
            for keyword in ["Device (", "Scope ("] where line.hasPrefix(keyword) {
                return String(line.dropFirst(keyword.count).prefix { $0 != ")" })
            }
            return nil
        }
    }

    static func disassemble(_ aml: [UInt8], in directory: URL) throws -> String {
        let file = directory.appendingPathComponent("dsdt.aml")
        try Data(aml).write(to: file)
        let result = try run(iasl!, ["-d", file.path])
        #expect(result.status == 0, "iasl: \(result.err)")
        return try String(contentsOf: directory.appendingPathComponent("dsdt.dsl"), encoding: .utf8)
    }

    @Test(.enabled(if: ready, "needs iasl and qemu-system-x86_64"), .timeLimit(.minutes(2)))
    func selectorsAndEjectableSlotsMatchQEMU() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("acpihp-dsdt-\(getpid())")
        let theirsDir = work.appendingPathComponent("qemu"), oursDir = work.appendingPathComponent("switchyard")
        for d in [theirsDir, oursDir] { try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(at: work) }

        let script = Self.root.appendingPathComponent("Tests/Oracle/qemu_dsdt.py").path
        let qemuAML = theirsDir.appendingPathComponent("qemu.aml").path
        let fetched = try run("/usr/bin/python3", [script, qemuAML, "-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on"]
                              + Self.devices.flatMap { ["-device", $0] })
        try #require(fetched.status == 0, "qemu_dsdt.py: \(fetched.err)")
        let theirs = HotPlugShape(dsl: try Self.disassemble(Array(try Data(contentsOf: URL(fileURLWithPath: qemuAML))), in: theirsDir))

        let machine = try Machine(MachineConfiguration(devices: try Self.devices.map { try DeviceSpec(parsing: $0) },
                                                       acpiPCIHotplug: true))
        try machine.runFirmware()
        let ours = HotPlugShape(dsl: try Self.disassemble(try machine.firmwareTables().dsdt.bytes, in: oursDir))

        #expect(!theirs.selectors.isEmpty && !theirs.ejectable.isEmpty, "QEMU's DSDT has ACPI hot-plug")
        #expect(ours.selectors == theirs.selectors)
        let onlyOurs = ours.ejectable.subtracting(theirs.ejectable).sorted()
        let onlyTheirs = theirs.ejectable.subtracting(ours.ejectable).sorted()
        #expect(onlyOurs.isEmpty && onlyTheirs.isEmpty, "_EJ0 only in ours: \(onlyOurs); only in QEMU's: \(onlyTheirs)")
    }
}
