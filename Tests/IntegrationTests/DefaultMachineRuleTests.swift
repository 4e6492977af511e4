import Foundation
import Testing

/// What a QEMU user expects of `-device`: it adds to a bare q35. The built-in default machine
/// appears only when the command line names no device, so no -device collides with it.
@Suite struct DefaultMachineRuleTests {
    @Test func deviceAddsToABareQ35() throws {
        let result = try run(switchyardBinary, ["lspci", "-n", "-device", "pcie-root-port,id=rp1,chassis=1,slot=1",
                                                "-device", "pci-testdev,bus=rp1"])
        #expect(result.status == 0, "\(result.err)")
        let lines = result.out.split(separator: "\n")
        // MCH, the root port at the first free slot, its endpoint, LPC, AHCI and SMBus: no defaults.
        #expect(lines.count == 6, "\(result.out)")
        #expect(lines.contains { $0.hasPrefix("00:01.0 0604: 1b36:000c") }, "\(result.out)")
        #expect(lines.contains { $0.hasPrefix("01:00.0 00ff: 1b36:0005") }, "\(result.out)")
        // Without any -device, the default machine is there (its endpoint t0 at 00:02).
        let defaults = try run(switchyardBinary, ["lspci", "-n"])
        #expect(defaults.status == 0 && defaults.out.contains("00:02.0 00ff: 1b36:0005"), "\(defaults.out)")
    }

    /// 32 root ports, a PCI-PCI bridge behind each of the first eight, 31 endpoints behind
    /// each bridge: 248 endpoints from the command line alone, no -nodefaults.
    @Test func aLargeCommandLineOfTheSameShapeWorks() throws {
        var arguments = ["lspci", "-n"]
        for i in 0..<32 {
            let slot = 2 + i / 8, fn = i % 8
            arguments += ["-device", "pcie-root-port,id=rp\(i),chassis=1,slot=\(i + 1),addr=\(slot).\(fn)" + (fn == 0 ? ",multifunction=on" : "")]
        }
        for b in 0..<8 {
            arguments += ["-device", "pci-bridge,id=br\(b),bus=rp\(b),chassis_nr=\(b + 2)"]
            for d in 1...31 { arguments += ["-device", "pci-testdev,id=t\(b)-\(d),bus=br\(b),addr=\(d)"] }
        }
        let result = try run(switchyardBinary, arguments)
        #expect(result.status == 0, "\(result.err)")
        let lines = result.out.split(separator: "\n")
        #expect(lines.filter { $0.contains("1b36:0005") }.count == 248)
        #expect(lines.filter { $0.contains("1b36:000c") }.count == 32)  // root ports
        #expect(lines.filter { $0.contains("1b36:0001") }.count == 8)   // PCI-PCI bridges
        #expect(lines.count == 4 + 32 + 8 + 248, "\(lines.count) functions")
    }
}
