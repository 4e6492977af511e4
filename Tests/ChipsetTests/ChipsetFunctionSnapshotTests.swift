import Chipset
import Interrupts
import PCI
import Testing
import VMMBase

/// Snapshot and restore of the config-only ICH9 functions and the ACPI PCI hot-plug block,
/// checked differentially through the guest's accessors.
@Suite struct ChipsetFunctionSnapshotTests {
    /// AHCI and SMBus with BARs placed, decoding on, MSI programmed (AHCI) and HOSTC set.
    @Test(arguments: ["ahci", "smbus"])
    func configOnlyFunction(kind: String) throws {
        let make = { kind == "ahci" ? ICH9Functions.ahci() : ICH9Functions.smbus() }
        let original = make(), fresh = make()
        var setup: [FunctionAccess] = [.configWrite(Reg.bar0 + 16, .dword, 0xC040), .configWrite(Reg.command, .word, 0x0407),
                                       .configWrite(Reg.interruptLine, .byte, 10), .configWrite(0x40, .byte, 0xFF)]
        if kind == "ahci" {
            setup += [.configWrite(Reg.bar0 + 20, .dword, 0xFEB4_0000), .configWrite(0x84, .dword, 0xFEE0_0000),
                      .configWrite(0x88, .dword, 0), .configWrite(0x8C, .dword, 0x1234_4041), .configWrite(0x82, .word, 1)]
        }
        _ = answers(original, setup)
        try fresh.restore(try transported(original.snapshot()))
        #expect(answers(fresh, everyConfigDword(original)) == answers(original, everyConfigDword(original)))
        let further: [FunctionAccess] = [.configWrite(Reg.command, .word, 0), .configWrite(Reg.bar0 + 16, .dword, ~0)]
            + everyConfigDword(original)
        #expect(answers(fresh, further) == answers(original, further))
    }

    @Test func configOnlyFunctionRefusesAnotherLayout() throws {
        let ahci = ICH9Functions.ahci(), smbus = ICH9Functions.smbus()
        _ = smbus.configWrite(Reg.command, width: .word, value: 1)
        let before = answers(ahci, everyConfigDword(ahci))
        #expect(throws: DeviceStateError.self) { try ahci.restore(smbus.snapshot()) }
        #expect(answers(ahci, everyConfigDword(ahci)) == before)
    }

    final class NoGPE: GeneralPurposeEvents, Sendable { func raiseGPE(_ bit: Int) {} }

    /// Two BSELs, one with a cold-plugged bridge; a plug not yet read (PCIU), a removal
    /// requested (PCID), BNUM left at bus 1 and an acpi-index latched in PIDX.
    func hotPlugMachine() -> (ACPIHotPlugController, [ACPIHotPlugBus]) {
        let controller = ACPIHotPlugController(gpe: NoGPE())
        let buses = [controller.addBus(bsel: 0, name: "rp0", slots: [0]), controller.addBus(bsel: 1, name: "br1")]
        buses[1].coldPlug(device: 2, bridge: true)
        buses[1].coldPlug(device: 4)
        buses[1].setACPIIndex(7, forSlot: 6)
        return (controller, buses)
    }

    /// Every register of every BSEL, read as the guest's AML does (BNUM first), ending with
    /// the BNUM the snapshot left.
    func registerView(_ select: UInt32) -> [RegisterAccess] {
        [0, 1].flatMap { bsel -> [RegisterAccess] in
            [.write(ACPIHotPlugController.Offset.select, .dword, bsel)]
                + [0x00, 0x04, 0x08, 0x0C, 0x10].map { .read($0, .dword) }
        } + [.write(ACPIHotPlugController.Offset.select, .dword, UInt64(select))]
    }

    @Test func hotPlugControllerRestoredAnswersAsTheOriginal() throws {
        let (original, originalBuses) = hotPlugMachine(), (fresh, freshBuses) = hotPlugMachine()
        try originalBuses[0].plug(device: 0)
        try originalBuses[1].plug(device: 6)
        try originalBuses[1].requestUnplug(device: 4, mode: .attentionButton)
        _ = answers(original.registers, [.write(ACPIHotPlugController.Offset.select, .dword, 1),
                                         .write(ACPIHotPlugController.Offset.acpiIndex, .dword, 1 << 6)])
        try fresh.restore(try transported(original.snapshot()))
        // PIDX first (any write clears it), then the rest; BNUM before each block.
        let pidx: [RegisterAccess] = [.read(ACPIHotPlugController.Offset.acpiIndex, .dword), .read(ACPIHotPlugController.Offset.select, .dword)]
        let originalPIDX = answers(original.registers, pidx)
        #expect(originalPIDX.first == 7)
        #expect(answers(fresh.registers, pidx) == originalPIDX)
        #expect(answers(fresh.registers, registerView(1)) == answers(original.registers, registerView(1)))
        // _EJ0 for slot 4 then for the bridge's slot 2: the same ejections on both.
        let eject: [RegisterAccess] = [.write(ACPIHotPlugController.Offset.eject, .dword, 1 << 4),
                                       .write(ACPIHotPlugController.Offset.eject, .dword, 1 << 2)]
        _ = answers(original.registers, eject)
        _ = answers(fresh.registers, eject)
        #expect(freshBuses[1].takeEvents() == originalBuses[1].takeEvents())
        #expect(answers(fresh.registers, registerView(0)) == answers(original.registers, registerView(0)))
        #expect(throws: HotPlugError.self) { try freshBuses[1].plug(device: 6) }  // still occupied
    }

    @Test func hotPlugControllerRefusesAnotherSetOfBuses() throws {
        let (original, _) = hotPlugMachine()
        let other = ACPIHotPlugController(gpe: NoGPE())
        other.addBus(bsel: 0, name: "rp0", slots: [0])
        other.write(offset: ACPIHotPlugController.Offset.select, width: .dword, value: 5)
        #expect(throws: DeviceStateError.self) { try other.restore(original.snapshot()) }
        #expect(other.read(offset: ACPIHotPlugController.Offset.select, width: .dword) == 5)
    }
}
