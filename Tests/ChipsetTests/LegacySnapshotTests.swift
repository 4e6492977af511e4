import AddressSpace
import Chipset
import Foundation
import Interrupts
import Testing
import VMMBase

/// One guest access to a port or MMIO register block.
enum RegisterAccess {
    case read(UInt64, AccessWidth)
    case write(UInt64, AccessWidth, UInt64)
}

/// Runs the same accesses on two devices and returns each one's answers to the reads, in
/// order: a restored device must answer exactly as the original does (reads with side
/// effects have them on both alike).
func answers(_ device: some IORegionHandler, _ script: [RegisterAccess]) -> [UInt64] {
    script.compactMap { access in
        switch access {
        case .read(let offset, let width): return device.read(offset: offset, width: width)
        case .write(let offset, let width, let value): device.write(offset: offset, width: width, value: value); return nil
        }
    }
}

/// The snapshot as migration will carry it: through its Codable encoding and back.
func transported<S: Codable>(_ snapshot: S) throws -> S {
    try JSONDecoder().decode(S.self, from: try JSONEncoder().encode(snapshot))
}

/// Snapshot and restore of the legacy devices, checked differentially: a device driven to a
/// non-trivial state through its ports, and a fresh one restored from its snapshot, answer
/// every register read and every further access sequence identically.
@Suite struct LegacySnapshotTests {
    @Test func uartRestoredFromASnapshotAnswersAsTheOriginal() throws {
        let clock = ManualClock()
        let originalSink = RecordingSink(), restoredSink = RecordingSink()
        let original = UART16550(interrupts: originalSink, backend: CaptureSerialBackend(), clock: clock)
        // 38400 7E1 through the divisor latch, FIFOs on with a 4-byte trigger, loopback with
        // every interrupt enabled, a scratch byte, and three bytes looped into the receive FIFO.
        _ = answers(original, [.write(3, .byte, 0x80), .write(0, .byte, 3), .write(1, .byte, 0), .write(3, .byte, 0x1A),
                               .write(2, .byte, 0x47), .write(4, .byte, 0x1B), .write(1, .byte, 0x0F), .write(7, .byte, 0x5A),
                               .write(0, .byte, 0x61), .write(0, .byte, 0x62), .write(0, .byte, 0x63), .read(2, .byte)])
        let restored = UART16550(interrupts: restoredSink, backend: CaptureSerialBackend(), clock: clock)
        try restored.restore(try transported(original.snapshot()))
        #expect(restored.interruptAsserted == original.interruptAsserted)
        #expect(restoredSink.isHigh(UART16550.com1GSI) == originalSink.isHigh(UART16550.com1GSI))
        // Every register, then the divisor latch, then draining the FIFO and more traffic.
        let script: [RegisterAccess] = (0..<8).map { .read($0, .byte) }
            + [.write(3, .byte, 0x9A), .read(0, .byte), .read(1, .byte), .write(3, .byte, 0x1A)]
            + (0..<5).flatMap { _ in [RegisterAccess.read(5, .byte), .read(2, .byte), .read(0, .byte)] }
            + [.write(0, .byte, 0x7A), .read(5, .byte), .read(0, .byte), .write(4, .byte, 0x03), .read(6, .byte), .read(2, .byte)]
        let expected = answers(original, script)
        #expect(answers(restored, script) == expected)
        #expect(expected.contains(0x61), "the looped-back bytes survived the snapshot")
        #expect(restoredSink.isHigh(UART16550.com1GSI) == originalSink.isHigh(UART16550.com1GSI))
    }

    @Test func uartRefusesASnapshotItCouldNeverHold() throws {
        let uart = UART16550(interrupts: RecordingSink(), backend: CaptureSerialBackend(), clock: ManualClock())
        let json = String(decoding: try JSONEncoder().encode(uart.snapshot()), as: UTF8.self)
        let bad = json.replacingOccurrences(of: "\"rxTrigger\":1", with: "\"rxTrigger\":3")
        try #require(bad != json)
        let snapshot = try JSONDecoder().decode(UART16550.State.self, from: Data(bad.utf8))
        let before = answers(uart, (0..<8).map { .read($0, .byte) })
        #expect(throws: DeviceStateError.self) { try uart.restore(snapshot) }
        #expect(answers(uart, (0..<8).map { .read($0, .byte) }) == before)
    }

    @Test func rtcRestoredFromASnapshotAnswersAsTheOriginal() throws {
        let clock = ManualClock(unixSeconds: 1_700_000_000)
        let original = CMOSRTC(clock: clock, interrupts: RecordingSink(), ram: [0x34: 0x12])
        // Binary 24-hour mode with the update-ended interrupt, an alarm, a RAM byte, an index.
        _ = answers(original, [.write(0, .byte, 0x0B), .write(1, .byte, 0x16), .write(0, .byte, 0x01), .write(1, .byte, 30),
                               .write(0, .byte, 0x40), .write(1, .byte, 0x77), .write(0, .byte, 0x0C), .read(1, .byte),
                               .write(0, .byte, 0x35)])
        clock.advance(nanoseconds: 1_500_000_000)
        let restored = CMOSRTC(clock: clock, interrupts: RecordingSink())
        try restored.restore(try transported(original.snapshot()))
        // The index latch first (a data read at the restored index), then all 128 bytes, time
        // running on, and register C again.
        var script: [RegisterAccess] = [.read(1, .byte)]
        script += (0..<128).flatMap { [RegisterAccess.write(0, .byte, UInt64($0)), .read(1, .byte)] }
        let expected = answers(original, script)
        #expect(answers(restored, script) == expected)
        #expect(expected[1 + 0x40] == 0x77 && expected[1 + 0x34] == 0x12)
        clock.advance(nanoseconds: 2_000_000_000)
        let later: [RegisterAccess] = [.write(0, .byte, 0x00), .read(1, .byte), .write(0, .byte, 0x0C), .read(1, .byte),
                                       .write(0, .byte, 0x0A), .read(1, .byte)]
        #expect(answers(restored, later) == answers(original, later))
    }

    @Test func ioapicRestoredFromASnapshotAnswersAsTheOriginal() throws {
        let originalOut = RecordingSink(), restoredOut = RecordingSink()
        let original = IOAPIC(output: originalOut)
        func program(_ pin: Int, low: UInt64, high: UInt64) -> [RegisterAccess] {
            [.write(0, .dword, UInt64(0x10 + 2 * pin)), .write(0x10, .dword, low),
             .write(0, .dword, UInt64(0x11 + 2 * pin)), .write(0x10, .dword, high)]
        }
        // An id, a level-triggered pin with Remote IRR set (its input still high), a masked
        // edge pin with a held request, and the select register left pointing somewhere.
        _ = answers(original, [.write(0, .dword, 0), .write(0x10, .dword, 0x0500_0000)]
                    + program(16, low: 0x41 | 1 << 15, high: 0x0300_0000) + program(5, low: 0x1_0052, high: 0)
                    + [.write(0, .dword, 0x01)])
        original.setLevel(GSI(16), high: true)
        original.setLevel(GSI(5), high: true)
        let restored = IOAPIC(output: restoredOut)
        try restored.restore(try transported(original.snapshot()))
        originalOut.clearEvents()
        var script: [RegisterAccess] = [.read(0, .dword), .read(0x10, .dword)]
        script += (0..<(0x10 + 2 * IOAPICRegisters.pins)).flatMap { [RegisterAccess.write(0, .dword, UInt64($0)), .read(0x10, .dword)] }
        #expect(answers(restored, script) == answers(original, script))
        // The EOI redelivers the still-asserted level pin; unmasking pin 5 releases its edge.
        for ioapic in [original, restored] {
            ioapic.endOfInterrupt(vector: 0x41)
            _ = answers(ioapic, program(5, low: 0x0052, high: 0))
        }
        #expect(restoredOut.events == originalOut.events)
        #expect(originalOut.events.count == 2)
    }

    @Test func i8042RestoredFromASnapshotAnswersAsTheOriginal() throws {
        let originalSink = RecordingSink(), restoredSink = RecordingSink()
        let original = I8042(interrupts: originalSink, events: PlatformEventLog())
        // Keyboard reset (ACK, self-test passed) queued with its interrupt up, the AUX port
        // enabled, a controller command (write output port) waiting for its data byte.
        _ = answers(original, [.write(0, .byte, 0xFF), .write(4, .byte, 0xA8), .write(4, .byte, 0x20),
                               .write(4, .byte, 0xD1)])
        let restored = I8042(interrupts: restoredSink, events: PlatformEventLog())
        try restored.restore(try transported(original.snapshot()))
        #expect(restoredSink.isHigh(I8042.keyboardGSI) == originalSink.isHigh(I8042.keyboardGSI))
        #expect(originalSink.isHigh(I8042.keyboardGSI))
        let script: [RegisterAccess] = [.write(0, .byte, 0xDF)]  // the output port byte (A20 on)
            + (0..<4).flatMap { _ in [RegisterAccess.read(4, .byte), .read(0, .byte)] }
            + [.write(4, .byte, 0xD0), .read(4, .byte), .read(0, .byte), .write(0, .byte, 0xEE), .read(0, .byte)]
        #expect(answers(restored, script) == answers(original, script))
        #expect(restored.a20Enabled == original.a20Enabled)
        #expect(restoredSink.isHigh(I8042.keyboardGSI) == originalSink.isHigh(I8042.keyboardGSI))
    }

    @Test func acpiPMRestoredFromASnapshotAnswersAsTheOriginal() throws {
        let clock = ManualClock()
        let originalSink = RecordingSink(), restoredSink = RecordingSink()
        let original = ICH9PowerManagement(clock: clock, interrupts: originalSink, events: PlatformEventLog())
        // ACPI enabled through the APM port, the power button and timer enabled, a GPE0
        // enable byte, SMI_EN, and the timer run past its overflow so TMR_STS raises the SCI.
        _ = answers(original.apmPorts, [.write(0, .byte, 0x02), .write(1, .byte, 0x5A)])
        _ = answers(original.pmBlock, [.write(0x02, .word, 0x0101), .write(0x28, .byte, 0x0F), .write(0x30, .dword, 0x0000_0001)])
        clock.advance(nanoseconds: 5_000_000_000)
        _ = answers(original.pmBlock, [.read(0x00, .word)])
        let restored = ICH9PowerManagement(clock: clock, interrupts: restoredSink, events: PlatformEventLog())
        try restored.restore(try transported(original.snapshot()))
        #expect(restored.sciAsserted == original.sciAsserted)
        #expect(restoredSink.isHigh(ICH9PowerManagement.defaultSCI) == originalSink.isHigh(ICH9PowerManagement.defaultSCI))
        let block: [RegisterAccess] = stride(from: UInt64(0), to: 0x38, by: 4).map { .read($0, .dword) }
        let apm: [RegisterAccess] = [.read(0, .byte), .read(1, .byte)]
        #expect(answers(restored.pmBlock, block) == answers(original.pmBlock, block))
        #expect(answers(restored.apmPorts, apm) == answers(original.apmPorts, apm))
        let further: [RegisterAccess] = [.write(0x00, .word, 0x0001), .read(0x00, .word), .write(0x02, .word, 0), .read(0x08, .dword)]
        #expect(answers(restored.pmBlock, further) == answers(original.pmBlock, further))
        #expect(restored.sciAsserted == original.sciAsserted)
    }

    @Test func ioapicRefusesASnapshotOfAnotherSize() throws {
        let ioapic = IOAPIC(output: RecordingSink())
        var snapshot = ioapic.snapshot()
        snapshot.entries.removeLast()
        #expect(throws: DeviceStateError.self) { try ioapic.restore(snapshot) }
        #expect(ioapic.registers.entries.count == IOAPICRegisters.pins)
    }
}
