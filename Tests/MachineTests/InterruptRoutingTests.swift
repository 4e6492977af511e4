import Chipset
import Interrupts
import Machine
import PCI
import Testing
import VMMBase

@Suite struct InterruptRoutingTests {
    /// Enumerates, then finds the BAR1 base of a function by address.
    func bar1(_ report: EnumerationReport, _ address: String) throws -> UInt64 {
        let f = try #require(report.functions.first { $0.address.shortDescription == address })
        return try #require(f.bars.first { $0.index == 1 }).range.base
    }

    @Test func intxIsSwizzledThroughTheBridgeToAPIRQAndShared() throws {
        let machine = try Machine(.defaultMachine)
        let report = try machine.runFirmware()
        // t1 is 01:01.0 behind the bridge in slot 3: INTA swizzles by device 1 to INTB at slot 3.
        let behind = try bar1(report, "01:01.0")
        let expected = machine.lpc.pirq(forSlot: 3, pin: .b).apicGSI
        machine.mmioWrite(behind + PCITestDevice.doorbell, width: .dword, value: 0)
        #expect(machine.interrupts.isHigh(expected))
        #expect(machine.assertedINTxLines[expected] == 1)
        // t2 at 01:02.0 swizzles INTA to INTC at slot 3: another link (or the same; both are fine),
        // and lines are shared: the GSI stays high until every source lets go.
        let other = try bar1(report, "01:02.0")
        let otherGSI = machine.lpc.pirq(forSlot: 3, pin: .c).apicGSI
        machine.mmioWrite(other + PCITestDevice.doorbell, width: .dword, value: 0)
        machine.mmioWrite(behind + PCITestDevice.intxClear, width: .dword, value: 0)
        #expect(machine.interrupts.isHigh(otherGSI))
        #expect(machine.interrupts.isHigh(expected) == (expected == otherGSI))
        machine.mmioWrite(other + PCITestDevice.intxClear, width: .dword, value: 0)
        #expect(machine.assertedINTxLines.isEmpty)
        #expect(!machine.interrupts.isHigh(otherGSI))
    }

    /// ICH9 D28IR (RCBA + 0x3146, reset 0x3210) routes slot 28's pins: an asserted INTA moves
    /// from PIRQA (GSI 16) to PIRQD (GSI 19) when the guest rewrites it, still held once; a
    /// platform reset restores the reset routing with no line left high.
    @Test func rewrittenPinRoutingMovesAnAssertedLineAndResetRestoresIt() throws {
        let machine = try Machine(MachineConfiguration(devices: [try DeviceSpec(parsing: "pci-testdev,id=t28,addr=0x1c")]))
        let report = try machine.runFirmware()
        let base = try bar1(report, "00:1c.0")
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        ecam.write(bus: 0, devfn: 0x1F << 3, offset: 0xF0, width: .dword, value: 0xFED1_C001)
        machine.mmioWrite(base + PCITestDevice.doorbell, width: .dword, value: 0)
        #expect(machine.assertedINTxLines == [GSI(16): 1])
        machine.mmioWrite(0xFED1_C000 + 0x3146, width: .word, value: 0x3213)
        #expect(machine.assertedINTxLines == [GSI(19): 1])
        #expect(machine.interrupts.isHigh(GSI(19)) && !machine.interrupts.isHigh(GSI(16)))
        machine.reset()
        #expect(machine.assertedINTxLines.isEmpty)
        #expect(!machine.interrupts.isHigh(GSI(19)) && !machine.interrupts.isHigh(GSI(16)))
        let again = try machine.runFirmware()
        machine.mmioWrite(try bar1(again, "00:1c.0") + PCITestDevice.doorbell, width: .dword, value: 0)
        #expect(machine.assertedINTxLines == [GSI(16): 1])
    }

    /// In PIC mode a link reaches the ISA IRQ its PIRQx_ROUT names: 00:02.0's INTA is PIRQG
    /// ((2 + 0) mod 4 + PIRQE), which firmware steers to IRQ 11; a guest write of PIRQG_ROUT
    /// (LPC 0x6A) = 10 moves the asserted level from IRQ 11 to IRQ 10 at the write.
    @Test func pirqRouteRewriteMovesAnAssertedPICLine() throws {
        let machine = try Machine(.defaultMachine)
        let report = try machine.runFirmware()
        let recorder = RecordingSink()
        machine.attachInterruptSink(PIRQSteeringSink(downstream: recorder, lpc: machine.lpc))
        machine.mmioWrite(try bar1(report, "00:02.0") + PCITestDevice.doorbell, width: .dword, value: 0)
        #expect(recorder.isHigh(GSI(22)) && recorder.isHigh(GSI(11)))
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        ecam.write(bus: 0, devfn: 0x1F << 3, offset: 0x6A, width: .byte, value: 10)
        #expect(recorder.isHigh(GSI(22)) && recorder.isHigh(GSI(10)) && !recorder.isHigh(GSI(11)))
    }

    @Test func firmwareProgramsPIRQLinksAndInterruptLines() throws {
        let machine = try Machine(.defaultMachine)
        try machine.runFirmware()
        #expect(PIRQ.allCases.map { machine.lpc.pirqRoute($0) } == [10, 10, 11, 11, 10, 10, 11, 11])
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        // 01:01.0 reaches slot 3 as INTB; its line is the IRQ of that slot's link.
        let link = machine.lpc.pirq(forSlot: 3, pin: .b)
        let line = ecam.read(bus: 1, devfn: 1 << 3, offset: Reg.interruptLine, width: .byte)
        #expect(line == UInt32(machine.lpc.pirqRoute(link) ?? 0))
        // The host bridge has no pin and keeps line 0.
        #expect(ecam.read(bus: 0, devfn: 0, offset: Reg.interruptLine, width: .byte) == 0)
    }

    @Test func intxDisableMasksTheLine() throws {
        let machine = try Machine(.defaultMachine)
        let report = try machine.runFirmware()
        let base = try bar1(report, "00:02.0")
        let gsi = machine.lpc.pirq(forSlot: 2, pin: .a).apicGSI
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        machine.mmioWrite(base + PCITestDevice.doorbell, width: .dword, value: 0)
        #expect(machine.interrupts.isHigh(gsi))
        let command = ecam.read(bus: 0, devfn: 2 << 3, offset: Reg.command, width: .word)
        ecam.write(bus: 0, devfn: 2 << 3, offset: Reg.command, width: .word, value: command | 0x400)
        #expect(!machine.interrupts.isHigh(gsi))
        // Status.interrupt still shows the device's own view.
        #expect(ecam.read(bus: 0, devfn: 2 << 3, offset: Reg.status, width: .word) & 0x8 != 0)
        ecam.write(bus: 0, devfn: 2 << 3, offset: Reg.command, width: .word, value: command)
        #expect(machine.interrupts.isHigh(gsi))
    }

    @Test func msixMessagesReachTheSinkAndMaskedOnesWaitInThePBA() throws {
        let machine = try Machine(.defaultMachine)
        let report = try machine.runFirmware()
        let base = try bar1(report, "00:02.0")
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        let config = try #require(machine.device(id: "t0")).function.configSnapshot()
        let cap = try #require(config.capability(.msix)).offset
        // Program vector 1, enable MSI-X with the function masked.
        let entry = base + PCITestDevice.msixLayout.tableOffset + 16
        machine.mmioWrite(entry, width: .dword, value: 0xFEE0_0000)
        machine.mmioWrite(entry + 8, width: .dword, value: 0x41)
        machine.mmioWrite(entry + 12, width: .dword, value: 0)  // unmask the entry
        ecam.write(bus: 0, devfn: 2 << 3, offset: cap + 2, width: .word, value: 0xC000)  // enable + function mask
        machine.mmioWrite(base + PCITestDevice.doorbell, width: .dword, value: 1)
        #expect(machine.interrupts.events.isEmpty)
        let pba = machine.mmioRead(base + PCITestDevice.msixLayout.pbaOffset, width: .qword)
        #expect(pba == 0b10)
        ecam.write(bus: 0, devfn: 2 << 3, offset: cap + 2, width: .word, value: 0x8000)  // unmask the function
        #expect(machine.interrupts.events == [.msi(MSIMessage(address: 0xFEE0_0000, data: 0x41))])
        #expect(machine.mmioRead(base + PCITestDevice.msixLayout.pbaOffset, width: .qword) == 0)
    }

    @Test func resetClosesECAMAndBARsUntilFirmwareRunsAgain() throws {
        let machine = try Machine(.defaultMachine)
        let report = try machine.runFirmware()
        let base = try bar1(report, "00:02.0")
        machine.mmioWrite(base, width: .dword, value: 0x1234_5678)
        #expect(machine.mmioRead(base, width: .dword) == 0x1234_5678)
        machine.reset()
        #expect(machine.mmioRead(0xB000_0000, width: .dword) == 0xFFFF_FFFF)  // ECAM closed
        #expect(machine.mmioRead(base, width: .dword) == 0xFFFF_FFFF)         // BAR unmapped
        let again = try machine.runFirmware()
        #expect(again.functions.count == report.functions.count)
        #expect(machine.mmioRead(try bar1(again, "00:02.0"), width: .dword) == 0)  // device state reset too
    }
}
