import Chipset
import Firmware
import Interrupts
import Machine
import PCI
import Testing
import VMMBase

/// The machine with `acpiPCIHotplug`: device_add and device_del go through the ACPI block at
/// 0x0CC0 (GPE0 bit 1) and the guest's `_EJ0` (BNUM, B0EJ) completes a removal.
@Suite struct ACPIHotPlugMachineTests {
    /// The rig's topology (Tests/Rig/l1/lib.sh), in its order of creation.
    static let rigTopology = [
        "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1", "pcie-root-port,id=rp2,bus=pcie.0,chassis=2,slot=2",
        "pcie-root-port,id=rp3,bus=pcie.0,chassis=3,slot=3", "pcie-root-port,id=rp4,bus=pcie.0,chassis=4,slot=4",
        "pci-testdev,id=t1,bus=rp1", "x3130-upstream,id=up1,bus=rp2",
        "xio3130-downstream,id=dn1,bus=up1,chassis=5,slot=0", "xio3130-downstream,id=dn2,bus=up1,chassis=6,slot=1",
        "pci-testdev,id=t2,bus=dn1", "pci-bridge,id=br1,bus=pcie.0,chassis_nr=7",
        "pci-testdev,id=t3,bus=br1,addr=1", "pci-testdev,id=t0,bus=pcie.0",
    ]

    func machine(_ specs: [String] = rigTopology, acpi: Bool = true) throws -> Machine {
        let machine = try Machine(MachineConfiguration(devices: try specs.map { try DeviceSpec(parsing: $0) },
                                                       acpiPCIHotplug: acpi))
        try machine.runFirmware()
        // PMBASE 0x600, ACPI decoding on, GPE0 bit 1 enabled (Linux enables GPEs with _Exx).
        cfg(machine, device: 0x1F, offset: 0x40, .dword, 0x601)
        cfg(machine, device: 0x1F, offset: 0x44, .byte, 0x80)
        machine.portWrite(0x628, width: .byte, value: 0x02)
        return machine
    }

    func cfg(_ m: Machine, device: UInt32, offset: UInt32, _ width: AccessWidth, _ value: UInt64) {
        m.portWrite(0xCF8, width: .dword, value: UInt64(0x8000_0000 | device << 11 | offset & 0xFC))
        m.portWrite(0xCFC + UInt16(offset & 3), width: width, value: value)
    }

    func pciu(_ m: Machine, bsel: UInt64) -> UInt64 {
        m.portWrite(0xCD0, width: .dword, value: bsel)
        return m.portRead(0xCC0, width: .dword)
    }

    /// BSELs as QEMU 10 numbered the rig's buses (measured through qtest: device_add into each
    /// bus, then the BSEL whose PCIU shows the slot): br1 0, rp4 1, rp3 2, rp2 3, up1 4,
    /// dn2 5, dn1 6, rp1 7.
    @Test func busesAreNumberedAsQEMUNumbersThem() throws {
        let m = try machine()
        let qemu: [String: UInt32] = ["br1": 0, "rp4": 1, "rp3": 2, "rp2": 3, "up1": 4, "dn2": 5, "dn1": 6, "rp1": 7]
        for (name, bsel) in qemu {
            #expect(m.legacy.acpiHotPlug.bus(bsel: bsel)?.name == name, "BSEL \(bsel)")
        }
        #expect(m.legacy.acpiHotPlug.bus(bsel: 8) == nil)
        // PCIRMV as QEMU 10 read it: cold-plugged bridges (up1 on rp2, dn1 and dn2 on up1) are
        // not removable; endpoints (t1 on rp1) are.
        for (bsel, removable) in [(0, 0xFFFF_FFFF), (3, 0xFFFF_FFFE), (4, 0xFFFF_FFFC), (7, 0xFFFF_FFFF)] as [(UInt64, UInt64)] {
            m.portWrite(0xCD0, width: .dword, value: bsel)
            #expect(m.portRead(0xCCC, width: .dword) == removable, "PCIRMV of BSEL \(bsel)")
        }
        // An eject of a bridge's slot leaves it in place.
        m.portWrite(0xCD0, width: .dword, value: 3)
        m.portWrite(0xCC8, width: .dword, value: 1)
        #expect(m.device(id: "up1") != nil)
        let selectors = m.platformDescription().pci.buses.compactMap(\.acpiHotplugSelector).sorted()
        #expect(selectors == Array(0...7))
    }

    @Test func plugSignalsThroughGPEAndEjectCompletesRemoval() throws {
        let m = try machine()
        let deleted = DeletedEvents()
        deleted.attach(m)
        try m.hotPlug(DeviceSpec(parsing: "pci-testdev,id=hp,bus=rp3"))
        #expect(m.interrupts.isHigh(GSI(9)), "SCI for GPE0 bit 1")
        #expect(m.portRead(0x620, width: .byte) == 0x02)
        #expect(pciu(m, bsel: 2) == 1)
        #expect(pciu(m, bsel: 2) == 0, "PCIU clears when read")
        // The root port's native controller is not involved: no presence change there.
        let port = try #require(m.device(id: "rp3")).function.configSnapshot()
        let cap = try #require(port.capability(.standard(CapabilityID.pciExpress))).offset
        #expect(port.read(cap + 0x1A, width: .word) & 0x48 == 0)
        #expect(port.read(cap + 0x18, width: .word) & 0x400 == 0, "slot powered on, as QEMU does")
        m.portWrite(0x620, width: .byte, value: 0x02)
        #expect(!m.interrupts.isHigh(GSI(9)))

        try m.unplug(id: "hp")
        m.portWrite(0xCD0, width: .dword, value: 2)
        #expect(m.portRead(0xCC4, width: .dword) == 1, "PCID: eject requested")
        #expect(m.device(id: "hp") != nil && deleted.ids.withLock { $0 }.isEmpty)
        m.portWrite(0xCC8, width: .dword, value: 1)  // _EJ0
        #expect(m.device(id: "hp") == nil)
        #expect(deleted.ids.withLock { $0 } == ["hp"])
        #expect(m.portRead(0xCC4, width: .dword) == 0)
    }

    @Test func bridgeSlotsGoThroughTheBlockToo() throws {
        let m = try machine()
        let deleted = DeletedEvents()
        deleted.attach(m)
        try m.hotPlug(DeviceSpec(parsing: "pci-testdev,id=hp,bus=br1,addr=2"))
        #expect(pciu(m, bsel: 0) == 1 << 2)
        // Slot 1 holds t3 (cold-plugged): plugging there is refused.
        #expect(throws: MachineConfigurationError.self) { try m.hotPlug(DeviceSpec(parsing: "pci-testdev,id=x,bus=br1,addr=1")) }
        try m.unplug(id: "hp")
        m.portWrite(0xCD0, width: .dword, value: 0)
        m.portWrite(0xCC8, width: .dword, value: 1 << 2)
        #expect(deleted.ids.withLock { $0 } == ["hp"])
        // The root bus has no hot-plug, as on QEMU's q35.
        #expect(throws: MachineConfigurationError.self) { try m.hotPlug(DeviceSpec(parsing: "pci-testdev,id=y,bus=pcie.0")) }
    }

    @Test func firmwareDescribesACPIHotPlugInsteadOfNative() throws {
        let acpi = try machine().platformDescription()
        #expect(!acpi.pci.nativeHotplug)
        #expect(acpi.acpiHotplug == PlatformDescription.ACPIHotplugRegisters())
        let native = try machine(acpi: false).platformDescription()
        #expect(native.pci.nativeHotplug)
        #expect(native.acpiHotplug == nil)
        #expect(native.pci.buses.allSatisfy { $0.acpiHotplugSelector == nil })
    }

    @Test func aPortWithHotPlugOffKeepsItsBusOutOfTheBlock() throws {
        let m = try machine(["pcie-root-port,id=rp1,chassis=1,slot=1,hotplug=off", "pcie-root-port,id=rp2,chassis=2,slot=2"])
        #expect(m.legacy.acpiHotPlug.bus(bsel: 0)?.name == "rp2")
        #expect(m.legacy.acpiHotPlug.bus(bsel: 1) == nil)
        #expect(throws: MachineConfigurationError.self) { try m.hotPlug(DeviceSpec(parsing: "pci-testdev,id=y,bus=rp1")) }
    }
}
