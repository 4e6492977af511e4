import Control
import Foundation
import Machine
import TestRequirements
import Testing

/// The scale test: q35 with 32 root ports (multi-function, 8 per slot), a switch with
/// downstream ports and PCI-PCI bridges behind root ports; hundreds of endpoints hot-plugged
/// across them, then enumerated, and the result read back by real lspci.
@Suite struct LargeTopologyTests {
    static func topology() throws -> (Machine, [String]) {
        var devices: [DeviceSpec] = []
        var slots: [String] = []
        for i in 0..<32 {
            let slot = 2 + i / 8, fn = i % 8
            devices.append(try DeviceSpec(parsing: "pcie-root-port,id=rp\(i),bus=pcie.0,chassis=1,slot=\(i + 1),addr=0x\(String(slot, radix: 16)).0x\(fn)" + (fn == 0 ? ",multifunction=on" : "")))
        }
        // rp0 carries a switch with 24 downstream ports; rp1 and rp2 carry PCI-PCI bridges.
        devices.append(try DeviceSpec(parsing: "x3130-upstream,id=up0,bus=rp0"))
        for d in 0..<24 {
            devices.append(try DeviceSpec(parsing: "xio3130-downstream,id=dp\(d),bus=up0,chassis=2,slot=\(d),addr=\(d)"))
            slots.append("dp\(d)")
        }
        devices.append(try DeviceSpec(parsing: "pci-bridge,id=br1,bus=rp1,chassis_nr=3"))
        devices.append(try DeviceSpec(parsing: "pci-bridge,id=br2,bus=rp2,chassis_nr=4"))
        for i in 3..<32 { slots.append("rp\(i)") }
        let machine = try Machine(MachineConfiguration(memorySize: 64 << 20, devices: devices))
        return (machine, slots)
    }

    @Test func hundredsOfHotPluggedEndpointsEnumerateAndRealLspciShowsThem() throws {
        let (machine, slots) = try Self.topology()
        try machine.runFirmware()
        // 8 functions per slot: functions 1-7 first, then function 0 signals the slot.
        var plugged = 0
        for slot in slots {
            for f in (0..<8).reversed() {
                try machine.hotPlug(DeviceSpec(driver: "pci-testdev", id: "\(slot)-\(f)", bus: slot, devfn: UInt8(f),
                                               multifunction: f == 0))
                plugged += 1
            }
        }
        #expect(plugged >= 300)
        // The bridges' SHPC slots (devices 1-31) take hot-plugged endpoints too.
        for bridge in ["br1", "br2"] {
            for d in 1...8 { try machine.hotPlug(DeviceSpec(driver: "pci-testdev", id: "\(bridge)-\(d)", bus: bridge, devfn: UInt8(d) << 3)) }
        }
        // A reboot: occupied slots come out of reset powered, so firmware finds every device
        // (until then a slot's power is the guest's to switch on, and nothing behind an
        // unpowered slot answers, as on QEMU).
        machine.reset()
        let report = try machine.runFirmware()
        let endpoints = report.functions.filter { $0.vendorID == 0x1B36 && $0.deviceID == 0x0005 }
        #expect(endpoints.count == plugged + 16)
        #expect(endpoints.allSatisfy { $0.bars.count == 3 || $0.bars.count == 2 })  // I/O may run out
        #expect(report.buses == 60)  // bus 0, 32 root ports, the switch's internal bus, 24 downstream ports, 2 bridges

        // Real lspci reads our dump and draws the same tree.
        let dump = GuestLspci.render(machine, options: LspciOptions(hexDump: 4))
        let file = try temporaryFile("large.txt", contents: dump)
        defer { try? FileManager.default.removeItem(atPath: file) }
        try require(FileManager.default.isExecutableFile(atPath: "/usr/bin/lspci"),
                    "pciutils' lspci is not installed (scripts/setup.sh installs it)")
        let real = try run("/usr/bin/lspci", ["-F", file, "-tv"])
        #expect(real.status == 0)
        let testDevices = real.out.components(separatedBy: "QEMU PCI Test Device").count - 1
        #expect(testDevices == plugged + 16)
        let ours = GuestLspci.render(machine, options: LspciOptions(verbosity: 1, tree: true))
        #expect(ours == real.out)
        let listing = try run("/usr/bin/lspci", ["-F", file, "-n"])
        #expect(listing.out.split(separator: "\n").count == report.functions.count)
    }
}
