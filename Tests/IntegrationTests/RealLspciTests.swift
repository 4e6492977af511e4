import Control
import Foundation
import Machine
import TestRequirements
import Testing
import VMMBase

/// `switchyard lspci -xxxx` must be a dump real lspci accepts, and real lspci must decode from
/// it the same devices, BARs and bridge windows that enumeration assigned.
@Suite(.serialized) struct RealLspciTests {
    static let lspci = "/usr/bin/lspci"
    static let available = FileManager.default.isExecutableFile(atPath: lspci)

    @Test(.requires(available, "needs pciutils' lspci (make test installs it)"))
    func realLspciDecodesOurDump() throws {
        let devices = ["-device", "pci-bridge,id=br2,addr=5", "-device", "pci-testdev,id=t9,bus=br2,addr=7.0,multifunction=on",
                       "-device", "pci-testdev,id=t9f1,bus=br2,addr=7.1"]
        let dump = try run(switchyardBinary, ["lspci", "-xxxx"] + devices)
        #expect(dump.status == 0, "\(dump.err)")
        let file = try temporaryFile("dump.txt", contents: dump.out)
        defer { try? FileManager.default.removeItem(atPath: file) }

        let machine = try Machine(MachineConfiguration().adding(devices))  // -device adds to a bare q35
        let report = try machine.runFirmware()

        let verbose = try run(Self.lspci, ["-F", file, "-vvv"])
        // -vvv looks up kernel modules; on a host without libkmod data it says so, harmlessly.
        let complaints = verbose.err.split(separator: "\n").filter { !$0.contains("libkmod") }
        #expect(verbose.status == 0 && complaints.isEmpty, "lspci complained: \(verbose.err)")
        let text = verbose.out
        #expect(text.contains("00:00.0 Host bridge: Intel Corporation 82G33/G31/P35/P31 Express DRAM Controller"))
        #expect(text.contains("00:1f.0 ISA bridge: Intel Corporation 82801IB (ICH9) LPC Interface Controller"))
        #expect(text.contains("PCI bridge: Red Hat, Inc. QEMU PCI-PCI bridge"))
        // Every function enumeration found is in lspci's listing, and every BAR at its address.
        for function in report.functions {
            #expect(text.contains(function.address.shortDescription + " "), "missing \(function.address)")
            for bar in function.bars {
                let hexBase = String(bar.range.base, radix: 16)
                let line = bar.kind == .io ? "I/O ports at \(hexBase)" : "Memory at \(hexBase)"
                #expect(text.contains(line), "lspci does not show \(line) for \(function.address)")
            }
            if let numbers = function.busNumbers {
                #expect(text.contains(String(format: "Bus: primary=%02x, secondary=%02x, subordinate=%02x",
                                             numbers.primary, numbers.secondary, numbers.subordinate)))
            }
            for (kind, window) in function.windows {
                let label = kind == .io ? "I/O behind bridge" : kind == .memory ? "Memory behind bridge" : "Prefetchable memory behind bridge"
                let width = kind == .io ? 4 : kind == .memory ? 8 : 16  // QEMU's pci-bridge decodes 16-bit I/O
                let expected = "\(label): " + hex(window.base, width) + "-" + hex(window.last, width)
                #expect(text.contains(expected), "lspci does not show \(expected)")
            }
        }
        // Multi-function device behind the second bridge.
        #expect(text.contains(":07.1 Unclassified device"))
    }

    @Test(.requires(available, "needs pciutils' lspci"),
          arguments: [["-n"], ["-nn"], [], ["-t"], ["-tv"], ["-tvnn"], ["-x"], ["-xxx"], ["-xxxx"]])
    func ourListingMatchesRealLspciOnOurDump(_ flags: [String]) throws {
        let dump = try run(switchyardBinary, ["lspci", "-xxxx"])
        let file = try temporaryFile("dump.txt", contents: dump.out)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let real = try run(Self.lspci, ["-F", file] + flags)
        let ours = try run(switchyardBinary, ["lspci"] + flags)
        #expect(ours.status == 0)
        #expect(ours.out == real.out)
    }

    @Test func cliErrorsNameTheProblem() throws {
        let bad = try run(switchyardBinary, ["lspci", "-device", "pci-testdev,addr=0x40"])
        #expect(bad.status != 0)
        #expect(bad.err.contains("addr=0x40") && bad.err.contains("slot 0-31"))
        let unknown = try run(switchyardBinary, ["lspci", "-q"])
        #expect(unknown.status != 0 && unknown.err.contains("-q"))
        let help = try run(switchyardBinary, ["--help"])
        #expect(help.status == 0 && help.out.contains("usage: switchyard"))
        let half = try run(switchyardBinary, ["run", "--kernel", "/boot/vmlinuz"])
        #expect(half.status != 0 && half.err.contains("--initrd"))
        let noPort = try run(switchyardBinary, ["run", "-nodefaults", "--kernel", "k", "--initrd", "i"])
        #expect(noPort.status != 0 && noPort.err.contains("rp1") && noPort.err.contains("pcie-root-port"))
        let missing = try run(switchyardBinary, ["run", "--kernel", "/nonexistent/bzImage", "--initrd", "/nonexistent/initrd"])
        #expect(missing.status != 0 && missing.err.contains("--kernel /nonexistent/bzImage"))
    }

    @Test func runPrintsTheTreeAndASummary() throws {
        let result = try run(switchyardBinary, ["run"])
        #expect(result.status == 0)
        #expect(result.out.contains("-[0000:00]-+-00.0  Intel Corporation 82G33/G31/P35/P31 Express DRAM Controller [8086:29c0]"))
        #expect(result.out.contains("9 functions on 3 buses"))
    }
}


extension MachineConfiguration {
    func adding(_ arguments: [String]) throws -> MachineConfiguration {
        var copy = self
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            if flag == "-device", let spec = rest.popFirst() { copy.devices.append(try DeviceSpec(parsing: spec)) }
        }
        return copy
    }
}
