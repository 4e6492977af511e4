import Control
import Foundation
import Machine
import TestRequirements
import Testing
import VMMBase

/// Bus 0 of a bare q35 at reset, compared with QEMU 10's: the committed fixture always, and
/// QEMU itself, live, when it is installed.
@Suite struct Q35ConformanceTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let qemuAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")

    @Test func resetConfigSpacesEqualQEMUsFixtureByteForByte() throws {
        let fixture = try String(contentsOf: Self.root.appendingPathComponent("DeviceTables/fixtures/qemu-10.0-q35-reset.lspci"),
                                 encoding: .utf8)
        let qemu = try LspciDump.parse(fixture)
        let ours = try Machine(MachineConfiguration()).guestVisibleConfigSpaces()
        #expect(ours.map(\.address) == qemu.map(\.address))
        for (theirs, mine) in zip(qemu, ours) {
            let count = theirs.config.count
            let diff = (0..<count).filter { theirs.config[$0] != mine.config[$0] }
            #expect(diff.isEmpty, "\(mine.address): differs at \(diff.map { "0x" + String($0, radix: 16) })")
        }
    }

    /// Writes 0xFF then 0x00 to each byte of each function and reads back, on both machines.
    @Test(.requires(qemuAvailable, "needs qemu-system-x86_64 (make test installs QEMU 10 from bookworm-backports)"),
          .timeLimit(.minutes(3)))
    func writeMasksOfTheICH9FunctionsMatchQEMU() throws {
        let functions = ["00:1f.2", "00:1f.3"]
        let script = Self.root.appendingPathComponent("Tests/Oracle/qemu_q35.py").path
        let result = try run("/usr/bin/python3", [script] + functions.flatMap { ["--probe", $0] })
        #expect(result.status == 0, "\(result.err)")
        let machine = try Machine(MachineConfiguration())
        let ports = PortConfigCycles(machine)
        var compared = 0
        for line in result.out.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count == 5, let address = PCIAddress(parsing: f[0]), let offset = Int(f[1], radix: 16) else { continue }
            let expected = f[2...].compactMap { UInt32($0, radix: 16) }
            let original = ports.read(bus: address.bus, devfn: address.devfn, offset: offset, width: .byte)
            ports.write(bus: address.bus, devfn: address.devfn, offset: offset, width: .byte, value: 0xFF)
            let afterOnes = ports.read(bus: address.bus, devfn: address.devfn, offset: offset, width: .byte)
            ports.write(bus: address.bus, devfn: address.devfn, offset: offset, width: .byte, value: 0)
            let afterZeros = ports.read(bus: address.bus, devfn: address.devfn, offset: offset, width: .byte)
            ports.write(bus: address.bus, devfn: address.devfn, offset: offset, width: .byte, value: original)
            #expect([original, afterOnes, afterZeros] == expected, "\(address) offset 0x\(String(offset, radix: 16))")
            compared += 1
        }
        #expect(compared == 256 * functions.count)
    }
}
