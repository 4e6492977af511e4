import Foundation
import Machine
import TestRequirements
import Testing

/// `switchyard firmware --out DIR` on live machines: every table disassembles with real iasl,
/// and the tables describe the machine (ECAM, windows, every bus the enumerator numbered).
@Suite struct FirmwareCommandTests {
    static let iasl = "/usr/bin/iasl"
    static let available = FileManager.default.isExecutableFile(atPath: iasl)

    static func largeMachine() -> [String] {
        var arguments: [String] = []
        for i in 0..<32 {
            let slot = String(2 + i / 8, radix: 16)
            let multifunction = i % 8 == 0 ? ",multifunction=on" : ""
            arguments += ["-device", "pcie-root-port,id=rp\(i),chassis=1,slot=\(i + 1),addr=0x\(slot).0x\(i % 8)\(multifunction)"]
        }
        arguments += ["-device", "x3130-upstream,id=up,bus=rp0"]
        for d in 0..<4 { arguments += ["-device", "xio3130-downstream,id=dp\(d),bus=up,chassis=2,slot=\(d),addr=\(d)"] }
        arguments += ["-device", "pci-bridge,id=br,bus=rp1", "-device", "pci-testdev,bus=br,addr=3"]
        return arguments
    }

    static let machines: [[String]] = [[], largeMachine()]

    @Test(.requires(available, "needs iasl (acpica-tools; make test installs it)"), arguments: 0..<machines.count)
    func tablesOfALiveMachineDisassembleCleanly(_ index: Int) throws {
        let directory = NSTemporaryDirectory() + "switchyard-fw-\(getpid())-\(index)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try run(switchyardBinary, ["firmware", "--out", directory, "-nodefaults"] + Self.machines[index])
        #expect(result.status == 0, "\(result.err)")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        for table in ["DSDT", "FACP", "APIC", "MCFG", "XSDT"] {
            #expect(files.contains("\(table).bin"))
            let disassembly = try run(Self.iasl, ["-d", "\(directory)/\(table).bin"])
            #expect(disassembly.status == 0, "\(table): \(disassembly.err)")
            #expect(!disassembly.out.contains("Error") && !disassembly.err.contains("Warning"), "\(table): \(disassembly.out)")
        }
        let mcfg = try String(contentsOfFile: "\(directory)/MCFG.dsl", encoding: .utf8)
        #expect(mcfg.contains("Base Address : 00000000B0000000"))
        let dsdt = try String(contentsOfFile: "\(directory)/DSDT.dsl", encoding: .utf8)
        #expect(dsdt.contains("0xC0000000") && dsdt.contains("0xFEBFFFFF"))  // the 32-bit window
        // One ACPI device per function the enumerator found (bus 0 at least).
        let machine = try Machine(MachineConfiguration(devices: try Self.machines[index].enumerated()
            .filter { $0.offset % 2 == 1 }.map { try DeviceSpec(parsing: $0.element) }))
        let report = try machine.runFirmware()
        let busesInTables = machine.platformDescription().pci.buses.count
        #expect(busesInTables == report.buses)
    }
}
