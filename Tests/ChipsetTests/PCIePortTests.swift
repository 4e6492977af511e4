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

    /// Asserting Secondary Bus Reset is reported once, on its 0 -> 1 edge (as QEMU's
    /// pci_bridge_write_config resets the bus), for the machine to reset what is behind.
    @Test func secondaryBusResetIsAnEffectOnItsRisingEdge() throws {
        let port = try PCIePortFactory.make(driver: "xio3130-downstream", id: "d", properties: [:])
        let behind = try PCIePortFactory.make(driver: "x3130-upstream", id: "u", properties: [:])
        try port.secondary.attach(behind, at: 0)
        _ = behind.configWrite(Reg.secondaryBus, width: .byte, value: 7)
        let reset = UInt32(BridgeControlBits.secondaryBusReset.rawValue), serr = UInt32(BridgeControlBits.serr.rawValue)
        #expect(port.configWrite(Reg.bridgeControl, width: .word, value: reset).contains(.secondaryBusReset))
        #expect(!port.configWrite(Reg.bridgeControl, width: .word, value: reset | serr).contains(.secondaryBusReset))
        #expect(!port.configWrite(Reg.bridgeControl, width: .word, value: 0).contains(.secondaryBusReset))
        #expect(behind.busNumbers.secondary == 7, "the port leaves the reset below to the machine")
        port.secondary.resetAll(.secondaryBus)
        #expect(behind.busNumbers.secondary == 0)
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
        // Empty slots come out of reset powered off: nothing behind them answers.
        #expect(root.resolve(2, thisBusNumber: 0) == nil)
        // The switch is cold-plugged into rp (slot powered); dp's empty slot is powered on by the guest.
        try #require(rp as? any PCIExpressPort).engine.coldPlug(device: 0, linkPartner: PCIeLinkCapabilities(config: up.configSnapshot()))
        #expect(root.resolve(2, thisBusNumber: 0)?.function(at: 0)?.name == "dp")
        #expect(root.resolve(3, thisBusNumber: 0) == nil)
        let slotControl = 0x90 + PCIExpressRegister.slotControl
        _ = down.configWrite(slotControl, width: .word, value: down.configRead(slotControl, width: .word) & ~0x400)
        #expect(root.resolve(3, thisBusNumber: 0) === down.secondary)
    }

    /// Cold plug against QEMU 10's registers read through qtest (q35, native hot-plug):
    /// pcie-root-port with x3130-upstream behind reads Link Status 0x2011 (2.5 GT/s x1, DLL
    /// Link Active), Slot Status 0x0040 (present, no event) and Slot Control 0x03c0 (power on,
    /// indicators off); with a conventional device behind, the link reads the port's maximum.
    @Test func coldPlugLeavesTheSlotAsQEMUDoes() throws {
        let rp = try #require(try PCIePortFactory.make(driver: "pcie-root-port", id: "rp", properties: [:]) as? any PCIExpressPort)
        let up = try PCIePortFactory.make(driver: "x3130-upstream", id: "up", properties: [:])
        rp.engine.coldPlug(device: 0, linkPartner: PCIeLinkCapabilities(config: up.configSnapshot()))
        let exp = 0x54
        #expect(rp.configRead(exp + PCIExpressRegister.linkStatus, width: .word) == 0x2011)
        #expect(rp.configRead(exp + PCIExpressRegister.slotStatus, width: .word) == 0x0040)
        #expect(rp.configRead(exp + PCIExpressRegister.slotControl, width: .word) == 0x03C0)
        // The same after a reset, and the guest's Slot Status write-all at init leaves nothing to clear.
        rp.reset()
        #expect(rp.configRead(exp + PCIExpressRegister.linkStatus, width: .word) == 0x2011)
        #expect(rp.configRead(exp + PCIExpressRegister.slotControl, width: .word) == 0x03C0)

        let conventional = try #require(try PCIePortFactory.make(driver: "ioh3420", id: "i", properties: [:]) as? any PCIExpressPort)
        conventional.engine.coldPlug(device: 0, linkPartner: nil)
        #expect(conventional.configRead(0x90 + PCIExpressRegister.linkStatus, width: .word) == 0x2011)
        let fast = try #require(try PCIePortFactory.make(driver: "pcie-root-port", id: "f", properties: ["x-speed": "8", "x-width": "4"]) as? any PCIExpressPort)
        #expect(fast.configRead(exp + PCIExpressRegister.linkCapabilities, width: .dword) == 0x0030_0443)
        #expect(fast.configRead(exp + PCIExpressRegister.linkStatus, width: .word) == 0x0043)
        fast.engine.coldPlug(device: 0, linkPartner: nil)
        #expect(fast.configRead(exp + PCIExpressRegister.linkStatus, width: .word) == 0x2043)
    }

    /// QEMU 10's Link Capabilities, Link Capabilities 2 and Link Control 2 for every x-speed
    /// of pcie-root-port (x-width 1 and 12), read through qtest.
    @Test(arguments: [("2_5", "1", 0x0000_0411, 0x00, 0), ("2_5", "12", 0x0020_04C1, 0x00, 0),
                      ("5", "1", 0x0030_0412, 0x00, 2), ("8", "12", 0x0030_04C3, 0x0E, 3),
                      ("16", "1", 0x0030_0414, 0x1E, 4), ("32", "12", 0x0030_04C5, 0x3E, 5),
                      ("64", "1", 0x0030_0416, 0x7E, 6)])
    func linkRegistersFollowXSpeedAndXWidthAsQEMU(_ speed: String, _ width: String, _ cap: UInt32, _ cap2: UInt32, _ target: UInt32) throws {
        let port = try PCIePortFactory.make(driver: "pcie-root-port", id: "p", properties: ["x-speed": speed, "x-width": width])
        #expect(port.configRead(0x54 + PCIExpressRegister.linkCapabilities, width: .dword) == cap)
        #expect(port.configRead(0x54 + PCIExpressRegister.linkCapabilities2, width: .dword) == cap2)
        #expect(port.configRead(0x54 + PCIExpressRegister.linkControl2, width: .word) == target)
        #expect(port.configRead(0x54 + PCIExpressRegister.linkStatus, width: .word) == cap & 0x3FF)
    }

    @Test func badLinkPropertiesAreRejectedWithTheAcceptedValues() {
        #expect(throws: PCIePortError.invalidValue(driver: "pcie-root-port", id: "p", property: "x-speed", value: "3",
                                                   expected: "one of 2_5/5/8/16/32/64")) {
            try PCIePortFactory.make(driver: "pcie-root-port", id: "p", properties: ["x-speed": "3"])
        }
        #expect(throws: PCIePortError.invalidValue(driver: "pcie-root-port", id: "p", property: "x-width", value: "3",
                                                   expected: "one of 1/2/4/8/12/16/32")) {
            try PCIePortFactory.make(driver: "pcie-root-port", id: "p", properties: ["x-width": "3"])
        }
        #expect(throws: PCIePortError.self) { try PCIePortFactory.make(driver: "ioh3420", id: "p", properties: ["x-speed": "8"]) }
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
