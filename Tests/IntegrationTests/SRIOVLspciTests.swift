import Control
import Foundation
import HostDevices
import Machine
import TestRequirements
import Testing
import VMMBase

/// Real pciutils decodes an SR-IOV PF and its enabled VFs from our config spaces: the VFs at
/// PF + First VF Offset + n * Stride, the SR-IOV capability's fields as the device documents
/// them (TotalVFs, offset 1, stride 1, VF Device ID 1005, VF BAR 0 where software put it).
@Suite(.serialized) struct SRIOVLspciTests {
    static let lspci = "/usr/bin/lspci"
    static let available = FileManager.default.isExecutableFile(atPath: lspci)

    /// A PF behind a root port with `count` of its 12 VFs enabled, as Linux's sriov_enable does it.
    static func machineWithVFs(_ count: Int) throws -> (Machine, bus: UInt8, aperture: UInt64) {
        let machine = try Machine(MachineConfiguration(devices: [
            try DeviceSpec(parsing: "pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2"),
            try DeviceSpec(parsing: "pci-testdev,id=pf,bus=rp1,sriov_max_vfs=12"),
        ]))
        let report = try machine.runFirmware()
        let port = try #require(report.functions.first { $0.address.shortDescription == "00:02.0" })
        let bus = try #require(port.busNumbers).secondary
        let window = try #require(port.windows[.memory])
        let aperture = window.base + window.size! / 2
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        // Device Control 2 ARI Forwarding Enable on the port (PCIe capability at QEMU's 0x54... found by walking).
        var cap = Int(ecam.read(bus: 0, devfn: port.address.devfn, offset: 0x34, width: .byte))
        while cap != 0, ecam.read(bus: 0, devfn: port.address.devfn, offset: cap, width: .byte) != 0x10 {
            cap = Int(ecam.read(bus: 0, devfn: port.address.devfn, offset: cap + 1, width: .byte))
        }
        ecam.write(bus: 0, devfn: port.address.devfn, offset: cap + 0x28, width: .word, value: 1 << 5)
        var sriov = 0x100
        while ecam.read(bus: bus, devfn: 0, offset: sriov, width: .dword) & 0xFFFF != 0x0010 {
            sriov = Int(ecam.read(bus: bus, devfn: 0, offset: sriov, width: .dword) >> 20)
            try #require(sriov >= 0x100)
        }
        ecam.write(bus: bus, devfn: 0, offset: sriov + 0x24, width: .dword, value: UInt32(aperture))
        ecam.write(bus: bus, devfn: 0, offset: sriov + 0x10, width: .word, value: UInt32(count))
        ecam.write(bus: bus, devfn: 0, offset: sriov + 0x08, width: .word, value: 1 << 0 | 1 << 3 | 1 << 4)
        return (machine, bus, aperture)
    }

    @Test(.requires(available, "needs pciutils' lspci (make test installs it)"))
    func realLspciDecodesThePFAndFindsItsVFs() throws {
        let (machine, bus, aperture) = try Self.machineWithVFs(10)
        let dump = GuestLspci.render(machine, options: LspciOptions(hexDump: 4))
        let file = try temporaryFile("sriov-dump.txt", contents: dump)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let real = try run(Self.lspci, ["-F", file, "-vvv"])
        #expect(real.status == 0, "\(real.err)")
        let text = real.out
        let b = hex(bus, 2)
        for n in 1...10 {  // VF n at function n of the link's ARI device: device n >> 3, function n & 7
            #expect(text.contains("\(b):\(hex(n >> 3, 2)).\(n & 7) "), "VF \(n) missing")
        }
        #expect(!text.contains("\(b):01.3 "), "only 10 VFs are enabled")
        #expect(text.contains("Single Root I/O Virtualization (SR-IOV)"))
        #expect(text.contains("IOVCtl:\tEnable+ Migration- Interrupt- MSE+ ARIHierarchy+"))
        #expect(text.contains("Initial VFs: 12, Total VFs: 12, Number of VFs: 10"))
        #expect(text.contains("VF offset: 1, stride: 1, Device ID: 1005"))
        #expect(text.contains("Supported Page Size: 00000553, System Page Size: 00000001"))
        #expect(text.contains("Region 0: Memory at \(hex(aperture, 8)) (32-bit, non-prefetchable)"))
        #expect(text.contains("Alternative Routing-ID Interpretation (ARI)"))
    }

    /// Our dump view of the VFs matches real lspci's reading of the same dump, and the guest
    /// view names them as Linux does (the PF's vendor, the VF Device ID).
    @Test(.requires(available, "needs pciutils' lspci"), arguments: [["-nn"], ["-t"], ["-tvnn"], ["-xxx"]])
    func ourDumpViewMatchesRealLspci(_ flags: [String]) throws {
        let (machine, bus, _) = try Self.machineWithVFs(10)
        let functions = GuestLspci.functions(of: machine)
        let names = PCINameDatabase()
        let dump = LspciRenderer(functions: functions, view: .configDump, names: names).render(LspciOptions(hexDump: 4))
        let file = try temporaryFile("sriov-dump.txt", contents: dump)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let real = try run(Self.lspci, ["-F", file] + flags)
        let ours = LspciRenderer(functions: functions, view: .configDump, names: names).render(try LspciOptions(arguments: flags))
        #expect(ours == real.out)
        let guest = GuestLspci.render(machine, options: LspciOptions(numbering: .namesAndNumbers))
        #expect(guest.contains("\(hex(bus, 2)):01.2 Unclassified device [00ff]: Red Hat, Inc. Device [1b36:1005]"))
    }
}
