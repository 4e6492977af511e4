import Chipset
import Machine
import PCI
import Testing
import VMMBase

/// SHPC hot-plug on a PCI-PCI bridge through the whole machine: the guest's MMIO to the
/// bridge's BAR 0 (placed by firmware) drives the controller, and an ejection the guest
/// completes detaches the device and reports DEVICE_DELETED.
@Suite struct SHPCMachineTests {
    @Test func bridgeSlotsBeyondBusZeroHotPlugAndUnplug() throws {
        let machine = try Machine(MachineConfiguration(devices: [try DeviceSpec(parsing: "pci-bridge,id=br,chassis_nr=7,addr=3")]))
        let report = try machine.runFirmware()
        let bridge = try #require(report.functions.first { $0.address.shortDescription == "00:03.0" })
        let bar0 = try #require(bridge.bars.first { $0.index == 0 }).range.base
        let deleted = DeletedEvents()
        deleted.attach(machine)
        func read(_ offset: Int) -> UInt32 { UInt32(machine.mmioRead(bar0 + UInt64(offset), width: .dword)) }
        func write(_ offset: Int, _ value: UInt32) { machine.mmioWrite(bar0 + UInt64(offset), width: .dword, value: UInt64(value)) }
        func command(_ code: UInt8, slot: UInt8) {
            machine.mmioWrite(bar0 + UInt64(SHPCRegister.commandCode), width: .word, value: UInt64(slot) << 8 | UInt64(code))
        }
        let slot9 = SHPCRegister.slot(9 - 1)
        // shpchp init: unmask slot events, then the global interrupt.
        write(slot9, (read(slot9) & ~UInt32(0x1D00_0000)) | 0x001F_0000)
        write(SHPCRegister.serrInt, read(SHPCRegister.serrInt) & ~UInt32(0x5))

        try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=t9,bus=br,addr=9"))
        #expect(read(SHPCRegister.interruptLocator) & (1 << 9) != 0)
        let gsi = machine.lpc.pirq(forSlot: 3, pin: .a).apicGSI
        // MSI is off, so the bridge's INTx (swizzled to slot 3's link) carries the event...
        #expect(machine.interrupts.isHigh(gsi))
        write(slot9, read(slot9))  // ...until the guest clears the latched events
        #expect(!machine.interrupts.isHigh(gsi))
        for code: UInt8 in [0x38, 0x01, 0x3A, 0x04] { command(code, slot: 9) }
        // The device answers behind the bridge.
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        let secondary = UInt8(ecam.read(bus: 0, devfn: 3 << 3, offset: Reg.secondaryBus, width: .byte))
        #expect(ecam.read(bus: secondary, devfn: 9 << 3, offset: 0, width: .dword) == 0x0005_1B36)

        try machine.unplug(id: "t9")
        #expect(machine.device(id: "t9") != nil)
        command(0x08, slot: 9)   // power indicator blink
        command(0x1F, slot: 9)   // disable the slot, power off
        #expect(machine.device(id: "t9") == nil)
        #expect(deleted.ids.withLock { $0 } == ["t9"])
        #expect(ecam.read(bus: secondary, devfn: 9 << 3, offset: 0, width: .dword) == 0xFFFF_FFFF)
        // Surprise removal is not something SHPC can do: a clear error.
        try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=t10,bus=br,addr=10"))
        #expect { try machine.unplug(id: "t10", mode: .surprise) } throws: { "\($0)".contains("surprise") }
    }
}
