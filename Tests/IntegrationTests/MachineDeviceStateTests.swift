import Control
import Foundation
import Machine
import TestRequirements
import Testing
import VMMBase

/// A whole machine's device state through snapshot, JSON and restore: a machine built again
/// from the same command line and restored shows real lspci every function, VFs included,
/// exactly as the original does, and its BARs and windows decode again.
@Suite(.serialized) struct MachineDeviceStateTests {
    static let lspci = "/usr/bin/lspci"
    static let available = FileManager.default.isExecutableFile(atPath: lspci)

    /// A root port carrying a switch with the SR-IOV PF below its downstream port, a root
    /// port with virtio-rng-pci, and a pci-bridge with a conventional pci-testdev behind it.
    static let commandLine = [
        "pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2",
        "x3130-upstream,id=up,bus=rp1",
        "xio3130-downstream,id=dn,bus=up,chassis=2,slot=0",
        "pci-testdev,id=pf,bus=dn,sriov_max_vfs=6",
        "pcie-root-port,id=rp2,chassis=1,slot=2,addr=0x3",
        "virtio-rng-pci,id=rng,bus=rp2",
        "pci-bridge,id=br,chassis_nr=3,addr=0x5",
        "pci-testdev,id=td,bus=br,addr=0x3",
    ]

    static func machine(_ commandLine: [String] = commandLine) throws -> Machine {
        try Machine(MachineConfiguration(memorySize: 64 << 20, devices: commandLine.map { try DeviceSpec(parsing: $0) }))
    }

    /// The capability with `id` in a function's standard list, walked through ECAM.
    static func capability(_ ecam: ECAMConfigCycles, bus: UInt8, devfn: UInt8, id: UInt32) throws -> Int {
        var at = Int(ecam.read(bus: bus, devfn: devfn, offset: 0x34, width: .byte))
        while at != 0, ecam.read(bus: bus, devfn: devfn, offset: at, width: .byte) != id {
            at = Int(ecam.read(bus: bus, devfn: devfn, offset: at + 1, width: .byte))
        }
        try #require(at != 0)
        return at
    }

    /// Firmware's enumeration, then what Linux does: ARI forwarding on the downstream port,
    /// three VFs enabled with their BAR placed, virtio-rng acknowledged (status DRIVER), a
    /// byte in COM1's scratch register. Returns the virtio BAR 4 base.
    static func program(_ machine: Machine) throws -> UInt64 {
        let report = try machine.runFirmware()
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        let pf = try #require(report.functions.first { $0.vendorID == 0x1B36 && $0.deviceID == 0x0005 && $0.address.bus > 1 })
        let port = try #require(report.functions.first { $0.busNumbers?.secondary == pf.address.bus })
        let express = try capability(ecam, bus: port.address.bus, devfn: port.address.devfn, id: 0x10)
        ecam.write(bus: port.address.bus, devfn: port.address.devfn, offset: express + 0x28, width: .word, value: 1 << 5)
        let window = try #require(port.windows[.memory])
        var at = 0x100  // the SR-IOV extended capability (ID 0x0010), found by walking the list
        while ecam.read(bus: pf.address.bus, devfn: pf.address.devfn, offset: at, width: .dword) & 0xFFFF != 0x0010 {
            at = Int(ecam.read(bus: pf.address.bus, devfn: pf.address.devfn, offset: at, width: .dword) >> 20)
            try #require(at >= 0x100)
        }
        ecam.write(bus: pf.address.bus, devfn: pf.address.devfn, offset: at + 0x24, width: .dword,
                   value: UInt32(window.base + window.size! / 2))
        ecam.write(bus: pf.address.bus, devfn: pf.address.devfn, offset: at + 0x10, width: .word, value: 3)
        ecam.write(bus: pf.address.bus, devfn: pf.address.devfn, offset: at + 0x08, width: .word, value: 1 << 0 | 1 << 3 | 1 << 4)
        let rng = try #require(report.functions.first { $0.vendorID == 0x1AF4 && $0.deviceID == 0x1044 })
        let bar4 = try #require(rng.bars.first { $0.index == 4 }).range.base
        machine.mmioWrite(bar4 + 0x14, width: .byte, value: 1)
        machine.mmioWrite(bar4 + 0x14, width: .byte, value: 3)
        machine.portWrite(0x3FF, width: .byte, value: 0x5A)
        return bar4
    }

    /// `lspci -xxxx` of every function the guest can reach, and real lspci's reading of it.
    static func lspciView(_ machine: Machine, arguments: [String]) throws -> (dump: String, decoded: String) {
        let dump = GuestLspci.render(machine, options: LspciOptions(hexDump: 4))
        let file = try temporaryFile("state-dump.txt", contents: dump)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let real = try run(lspci, ["-F", file] + arguments)
        #expect(real.status == 0, "\(real.err)")
        return (dump, real.out)
    }

    @Test(.requires(available, "needs pciutils' lspci (make test installs it)"))
    func aRestoredMachineShowsLspciWhatTheOriginalShows() throws {
        let original = try Self.machine()
        let bar4 = try Self.program(original)
        let state = try JSONDecoder().decode(MachineDeviceState.self,
                                             from: try JSONEncoder().encode(try original.snapshotDevices()))
        let restored = try Self.machine()
        let before = try Self.lspciView(restored, arguments: ["-n"])
        try restored.restoreDevices(state)

        let expected = try Self.lspciView(original, arguments: ["-vvv", "-nn"])
        let got = try Self.lspciView(restored, arguments: ["-vvv", "-nn"])
        #expect(got.dump == expected.dump)
        #expect(got.decoded == expected.decoded)
        // Not trivially equal: the fresh machine had no buses behind its bridges, the
        // restored one has them.
        let listing = try Self.lspciView(restored, arguments: ["-n"]).decoded
        #expect(before.decoded.split(separator: "\n").count + 8 == listing.split(separator: "\n").count)
        // The PF's three VFs answer at its functions 1-3 (a VF's ID registers read ffff).
        let pfLine = try #require(listing.split(separator: "\n").first { $0.hasSuffix("1b36:0005") && !$0.hasPrefix("05:") })
        let link = pfLine.prefix(6)  // "BB:DD."
        #expect((1...3).allSatisfy { listing.contains("\(link)\($0) 00ff: ffff:ffff") } && !listing.contains("\(link)4 "), "\(listing)")
        // BARs decode again: virtio's common config answers at the same address, COM1 too.
        #expect(restored.mmioRead(bar4 + 0x14, width: .byte) == 3)
        #expect(restored.mmioRead(bar4 + 0x14, width: .byte) == original.mmioRead(bar4 + 0x14, width: .byte))
        #expect(restored.portRead(0x3FF, width: .byte) == 0x5A)
    }

    /// A snapshot of another machine (a device missing, one more, another driver under an id)
    /// is refused naming the path, and the machine is left as it was.
    @Test(.requires(available, "needs pciutils' lspci"), arguments: [
        (Array(commandLine.dropLast()), "/machine/peripheral/td"),
        (commandLine + ["pci-testdev,id=extra,bus=br,addr=0x4"], "/machine/peripheral/extra"),
        (commandLine.map { $0.hasPrefix("virtio-rng-pci") ? "pci-testdev,id=rng,bus=rp2" : $0 }, "/machine/peripheral/rng"),
    ] as [([String], String)])
    func aSnapshotOfOtherDevicesIsRefused(commandLine: [String], path: String) throws {
        let original = try Self.machine()
        _ = try Self.program(original)
        let state = try original.snapshotDevices()
        let other = try Self.machine(commandLine)
        _ = try other.runFirmware()
        let before = try Self.lspciView(other, arguments: ["-vvv"])
        #expect {
            try other.restoreDevices(state)
        } throws: { error in
            guard case .deviceSetMismatch(let at, _)? = error as? MachineDeviceStateError else { return false }
            return at == path && "\(error)".contains("same command line")
        }
        #expect(try Self.lspciView(other, arguments: ["-vvv"]) == before)
    }

    /// A device of the same driver that refuses its part (pci-testdev built as PCI Express
    /// where the snapshot's was conventional): the devices restored before it are put back,
    /// so the machine is left as it was.
    @Test(.requires(available, "needs pciutils' lspci"))
    func aDeviceRefusingItsPartLeavesTheMachineAsItWas() throws {
        let original = try Self.machine()
        _ = try Self.program(original)
        let state = try original.snapshotDevices()
        let other = try Self.machine(Self.commandLine.map { $0.hasPrefix("pci-testdev,id=td") ? $0 + ",express=on" : $0 })
        _ = try other.runFirmware()
        other.portWrite(0x3FF, width: .byte, value: 0x11)
        try Self.expectRefusedAtTestDevice(state, by: other)
        #expect(other.portRead(0x3FF, width: .byte) == 0x11)
    }

    /// Restoring `state` into `machine` is refused as another layout at the pci-testdev's path,
    /// and real lspci shows the machine as it was.
    static func expectRefusedAtTestDevice(_ state: MachineDeviceState, by machine: Machine) throws {
        let before = try lspciView(machine, arguments: ["-vvv"])
        #expect {
            try machine.restoreDevices(state)
        } throws: { error in
            guard case .device(let at, .layoutMismatch)? = error as? MachineDeviceStateError else { return false }
            return at == "/machine/peripheral/td"
        }
        #expect(try lspciView(machine, arguments: ["-vvv"]) == before)
    }

    /// A function's state tagged as another model's (pci-testdev's as a pci-bridge's, edited
    /// in the JSON) is refused naming the path, and the machine is left as it was.
    @Test(.requires(available, "needs pciutils' lspci"))
    func anotherModelsStateIsRefused() throws {
        let original = try Self.machine()
        _ = try Self.program(original)
        var json = try #require(try JSONSerialization.jsonObject(with: try JSONEncoder().encode(try original.snapshotDevices())) as? [String: Any])
        var functions = try #require(json["functions"] as? [String: Any])
        var placed = try #require(functions["/machine/peripheral/td"] as? [String: Any])
        var model = try #require(placed["model"] as? [String: Any])
        #expect(model["model"] as? String == "pci-testdev")
        model["model"] = "pci-bridge"
        placed["model"] = model
        functions["/machine/peripheral/td"] = placed
        json["functions"] = functions
        let state = try JSONDecoder().decode(MachineDeviceState.self, from: try JSONSerialization.data(withJSONObject: json))
        let other = try Self.machine()
        _ = try other.runFirmware()
        try Self.expectRefusedAtTestDevice(state, by: other)
    }
}
