import AddressSpace
import Chipset
import Interrupts
import Testing
import VMMBase

/// The IOAPIC's delivery, checked against the 82093AA datasheet (redirection entry layout,
/// Remote IRR for level-triggered interrupts) and the Intel SDM's MSI format (vol. 3, 11.11:
/// address 0xFEExxxxx with the destination ID in bits 19:12 and the destination mode in bit 2;
/// data: vector in 7:0, delivery mode in 10:8, trigger mode in 15).
@Suite struct IOAPICTests {
    func program(_ ioapic: IOAPIC, pin: Int, low: UInt32, high: UInt32 = 0) {
        ioapic.write(offset: 0, width: .dword, value: UInt64(0x10 + 2 * pin + 1))
        ioapic.write(offset: 0x10, width: .dword, value: UInt64(high))
        ioapic.write(offset: 0, width: .dword, value: UInt64(0x10 + 2 * pin))
        ioapic.write(offset: 0x10, width: .dword, value: UInt64(low))
    }

    @Test func levelInterruptWaitsForEOIAndComesBackWhileAsserted() {
        let out = RecordingSink(), ioapic = IOAPIC(output: out)
        // Pin 16: vector 0x41, lowest priority (001), logical destination 0x03, level-triggered.
        program(ioapic, pin: 16, low: 0x41 | 1 << 8 | 1 << 11 | 1 << 15, high: 0x0300_0000)
        ioapic.setLevel(GSI(16), high: true)
        let message = MSIMessage(address: 0xFEE0_3004, data: 0x41 | 1 << 8 | 1 << 15)
        #expect(out.events == [.msi(message)])
        #expect(ioapic.registers.entries[16] & IOAPICRegisters.Entry.remoteIRR != 0)
        ioapic.setLevel(GSI(16), high: true)          // Remote IRR: not sent again
        #expect(out.events.count == 1)
        ioapic.endOfInterrupt(vector: 0x41)           // still asserted: sent again
        #expect(out.events == [.msi(message), .msi(message)])
        ioapic.setLevel(GSI(16), high: false)
        ioapic.endOfInterrupt(vector: 0x41)
        #expect(ioapic.registers.entries[16] & IOAPICRegisters.Entry.remoteIRR == 0)
        #expect(out.events.count == 2)
    }

    @Test func maskedEdgeIsHeldUntilUnmaskedAndISAIRQ0UsesPin2() {
        let out = RecordingSink(), ioapic = IOAPIC(output: out)
        program(ioapic, pin: 2, low: 0x1_0030)        // masked, edge, vector 0x30, physical 0
        ioapic.setLevel(GSI(0), high: true)           // the PIT's IRQ 0 is wired to pin 2
        #expect(out.events.isEmpty)
        program(ioapic, pin: 2, low: 0x0030)
        #expect(out.events == [.msi(MSIMessage(address: 0xFEE0_0000, data: 0x30))])
        #expect(ioapic.registers.entries[2] & IOAPICRegisters.Entry.remoteIRR == 0)
    }

    @Test func hostileAccessesAreIgnored() {
        let out = RecordingSink(), ioapic = IOAPIC(output: out)
        ioapic.write(offset: 0, width: .dword, value: 0xFF)            // past the table
        ioapic.write(offset: 0x10, width: .dword, value: 0)
        #expect(ioapic.read(offset: 0x10, width: .dword) == 0)
        ioapic.write(offset: 0, width: .dword, value: 0x10)
        ioapic.write(offset: 0x10, width: .word, value: 0)              // IOWIN is dword only
        #expect(ioapic.read(offset: 0x10, width: .dword) == 0x1_0000)
        #expect(ioapic.read(offset: 0x10, width: .byte) == 0)
        ioapic.setLevel(GSI(4000), high: true)                          // no such input
        #expect(out.events.isEmpty)
    }
}
