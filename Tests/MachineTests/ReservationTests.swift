import Chipset
import Machine
import PCI
import Testing
import VMMBase

@Suite struct ReservationTests {
    @Test func emptyHotPlugPortsGetMemoryAndIOWhenThereIsRoom() throws {
        let machine = try Machine(MachineConfiguration(devices: [
            try DeviceSpec(parsing: "pcie-root-port,id=rp1,chassis=1,slot=1,addr=2"),
            try DeviceSpec(parsing: "pcie-root-port,id=rp2,chassis=1,slot=2,addr=3,io-reserve=8192,mem-reserve=16777216,pref64-reserve=268435456,bus-reserve=4"),
            try DeviceSpec(parsing: "pcie-root-port,id=rp3,chassis=1,slot=3,addr=4,io-reserve=0"),
        ]))
        let report = try machine.runFirmware()
        let rp1 = try #require(report.functions.first { $0.address.shortDescription == "00:02.0" })
        let rp2 = try #require(report.functions.first { $0.address.shortDescription == "00:03.0" })
        let rp3 = try #require(report.functions.first { $0.address.shortDescription == "00:04.0" })
        // Defaults for a hot-pluggable port: 2 MiB memory, 32 MiB prefetchable, 4 KiB I/O
        // (there is room); an explicit io-reserve=0 means none.
        #expect(rp1.windows[.io]?.size == 0x1000)
        #expect(rp3.windows[.io] == nil)
        #expect(rp1.windows[.memory]?.size == 2 << 20)
        #expect(rp1.windows[.prefetchable]?.size == 32 << 20)
        // What QEMU's reserve properties ask for, through the resource-reserve capability.
        #expect(rp2.windows[.io]?.size == 8192)
        #expect(rp2.windows[.memory]?.size == 16 << 20)
        #expect(rp2.windows[.prefetchable]?.size == 256 << 20)
        let numbers = try #require(rp2.busNumbers)
        #expect(Int(numbers.subordinate) - Int(numbers.secondary) == 4)
    }

    /// Twenty empty ports would need 80 KiB of the 60 KiB port space: none gets the optional
    /// window (all or nothing, so the outcome does not depend on device order), the endpoints'
    /// I/O BARs are still placed, and nothing is reported as lost.
    @Test func optionalIOWindowsGiveWayWhenThePortSpaceIsShort() throws {
        var devices = (0..<20).map { i in
            DeviceSpec(driver: "pcie-root-port", id: "rp\(i)", bus: "pcie.0", devfn: UInt8(i + 2) << 3,
                       properties: ["chassis": "1", "slot": "\(i + 1)"])
        }
        devices.append(DeviceSpec(driver: "pci-testdev", id: "t0", bus: "rp0"))
        let report = try Machine(MachineConfiguration(devices: devices)).runFirmware()
        let ports = report.functions.filter(\.isBridge)
        #expect(ports.count == 20)
        #expect(ports.filter { $0.windows[.io] != nil }.map(\.address.shortDescription) == ["00:02.0"])
        let endpoint = try #require(report.functions.first { $0.deviceID == 0x0005 })
        #expect(endpoint.bars.contains { $0.kind == .io })
        #expect(report.warnings.isEmpty)
    }

    @Test func aSegmentOffersMoreThan256HotPluggableSlots() throws {
        // Nine SHPC bridges of 31 slots each behind root ports: 279 slots, 19 buses.
        var devices: [DeviceSpec] = []
        for i in 0..<9 {
            devices.append(try DeviceSpec(parsing: "pcie-root-port,id=rp\(i),chassis=1,slot=\(i + 1),addr=\(i + 2)"))
            devices.append(try DeviceSpec(parsing: "pcie-pci-bridge,id=pb\(i),bus=rp\(i)"))
        }
        let machine = try Machine(MachineConfiguration(devices: devices))
        try machine.runFirmware()
        var plugged = 0
        for i in 0..<9 {
            for slot in 1...31 {
                try machine.hotPlug(DeviceSpec(driver: "pci-testdev", id: "t\(i)-\(slot)", bus: "pb\(i)", devfn: UInt8(slot) << 3))
                plugged += 1
            }
        }
        #expect(plugged == 279)
        let report = try machine.runFirmware()
        #expect(report.functions.filter { $0.vendorID == 0x1B36 && $0.deviceID == 0x0005 }.count == 279)
        #expect(report.buses == 19)
    }
}
