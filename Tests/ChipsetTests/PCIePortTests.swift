import Chipset
import PCI
import Testing
import VMMBase

@Suite struct PCIePortTests {
    @Test func slotAndChassisPropertiesReachSlotCapabilities() throws {
        let port = try PCIePortFactory.make(driver: "pcie-root-port", id: "rp1",
                                            properties: ["chassis": "3", "slot": "42", "port": "0x10", "bus": "pcie.0"])
        let cs = port.configSnapshot()
        #expect(cs.pciExpressSlotState?.physicalSlotNumber == 42)
        #expect(cs.get(cs.pciExpressOffset! + 0x0C, width: 4) >> 24 == 0x10)
    }

    @Test func factoryErrorsNameThePropertyAndTheFix() {
        #expect(throws: PCIePortError.outOfRange(driver: "ioh3420", id: "r", property: "slot", value: "9000", range: 0...8191)) {
            try PCIePortFactory.make(driver: "ioh3420", id: "r", properties: ["slot": "9000"])
        }
        #expect(throws: PCIePortError.outOfRange(driver: "pcie-root-port", id: "r", property: "chassis", value: "256", range: 0...255)) {
            try PCIePortFactory.make(driver: "pcie-root-port", id: "r", properties: ["chassis": "256"])
        }
        do {
            _ = try PCIePortFactory.make(driver: "x3130-upstream", id: "up", properties: ["slot": "1"])
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("unknown property 'slot'"))
        }
        do {
            _ = try PCIePortFactory.make(driver: "pcie-root-port", id: "r", properties: ["hotplug": "maybe"])
            Issue.record("expected an error")
        } catch {
            #expect("\(error)" == "pcie-root-port 'r': hotplug=maybe is not valid; use on or off")
        }
        #expect(throws: PCIePortError.self) { try PCIePortFactory.make(driver: "pcie-rootport", id: "r", properties: [:]) }
    }

    @Test func resourceReserveAddsRedHatVendorCapability() throws {
        let port = try PCIePortFactory.make(driver: "pcie-root-port", id: "r", properties: ["bus-reserve": "3", "io-reserve": "0"])
        let cs = port.configSnapshot()
        let vendor = try #require(cs.capability(.standard(CapabilityID.vendorSpecific)))
        #expect(cs.get(vendor.offset + 3, width: 1) == 1)
        #expect(cs.get(vendor.offset + 4, width: 4) == 3)
        #expect(cs.get(vendor.offset + 8, width: 8) == 0)
        #expect(cs.get(vendor.offset + 16, width: 4) == 0xFFFF_FFFF)
        // io-reserve=0: no I/O window.
        _ = port.configWrite(Reg.ioBase, width: .byte, value: 0x00)
        #expect(port.configRead(Reg.ioBase, width: .byte) == 0xF0)
    }

    @Test func secondaryBusResetResetsFunctionsBehind() throws {
        let port = try PCIePortFactory.make(driver: "xio3130-downstream", id: "d", properties: [:])
        let behind = try PCIePortFactory.make(driver: "x3130-upstream", id: "u", properties: [:])
        try port.secondary.attach(behind, at: 0)
        _ = behind.configWrite(Reg.secondaryBus, width: .byte, value: 7)
        _ = port.configWrite(Reg.bridgeControl, width: .word, value: UInt32(BridgeControlBits.secondaryBusReset.rawValue))
        #expect(behind.busNumbers.secondary == 0)
        _ = port.configWrite(Reg.bridgeControl, width: .word, value: 0)
    }

    @Test func busNumbersRouteThroughPorts() throws {
        let root = PCIBus(name: "pcie.0")
        let rp = try PCIePortFactory.make(driver: "pcie-root-port", id: "rp", properties: [:])
        let up = try PCIePortFactory.make(driver: "x3130-upstream", id: "up", properties: [:])
        let down = try PCIePortFactory.make(driver: "xio3130-downstream", id: "dp", properties: [:])
        try root.attach(rp, at: 2 << 3)
        try rp.secondary.attach(up, at: 0)
        try up.secondary.attach(down, at: 0)
        _ = rp.configWrite(Reg.primaryBus, width: .dword, value: 0x00_03_01_00)
        _ = up.configWrite(Reg.primaryBus, width: .dword, value: 0x00_03_02_01)
        _ = down.configWrite(Reg.primaryBus, width: .dword, value: 0x00_03_03_02)
        #expect(root.resolve(3, thisBusNumber: 0) === down.secondary)
        #expect(root.resolve(2, thisBusNumber: 0)?.function(at: 0)?.name == "dp")
    }

    @Test func interruptPinsAsQEMU() throws {
        let pins = try PCIePortFactory.drivers.map {
            try PCIePortFactory.make(driver: $0, id: $0, properties: [:]).configSnapshot().interruptPin
        }
        #expect(pins == [1, 1, 0, 0])
    }

    @Test func aerAndACSArePresent() throws {
        for driver in PCIePortFactory.drivers {
            let cs = try PCIePortFactory.make(driver: driver, id: driver, properties: [:]).configSnapshot()
            #expect(cs.capability(.extended(ExtendedCapabilityID.aer))?.offset == 0x100)
            #expect((cs.acsControl != nil) == (driver == "pcie-root-port"))
        }
    }
}
