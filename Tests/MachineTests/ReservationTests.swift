import Chipset
import Machine
import PCI
import Testing
import VMMBase

@Suite struct ReservationTests {
    @Test func emptyHotPlugPortsGetMemoryButNoIOUnlessAsked() throws {
        let machine = try Machine(MachineConfiguration(devices: [
            try DeviceSpec(parsing: "pcie-root-port,id=rp1,chassis=1,slot=1,addr=2"),
            try DeviceSpec(parsing: "pcie-root-port,id=rp2,chassis=1,slot=2,addr=3,io-reserve=8192,mem-reserve=16777216,pref64-reserve=268435456,bus-reserve=4"),
        ]))
        let report = try machine.runFirmware()
        let rp1 = try #require(report.functions.first { $0.address.shortDescription == "00:02.0" })
        let rp2 = try #require(report.functions.first { $0.address.shortDescription == "00:03.0" })
        // Defaults for a hot-pluggable port: 2 MiB memory, 32 MiB prefetchable, no I/O window.
        #expect(rp1.windows[.io] == nil)
        #expect(rp1.windows[.memory]?.size == 2 << 20)
        #expect(rp1.windows[.prefetchable]?.size == 32 << 20)
        // What QEMU's reserve properties ask for, through the resource-reserve capability.
        #expect(rp2.windows[.io]?.size == 8192)
        #expect(rp2.windows[.memory]?.size == 16 << 20)
        #expect(rp2.windows[.prefetchable]?.size == 256 << 20)
        let numbers = try #require(rp2.busNumbers)
        #expect(Int(numbers.subordinate) - Int(numbers.secondary) == 4)
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
