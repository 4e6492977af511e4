import Chipset
import Interrupts
import Machine
import Synchronization
import Testing
import VMMBase

final class EventCollector: Sendable {
    private let store = Mutex<[MachineEvent]>([])
    func add(_ e: MachineEvent) { store.withLock { $0.append(e) } }
    var events: [MachineEvent] { store.withLock { $0 } }
}

@Suite struct LegacyWiringTests {
    func machine(_ backend: CaptureSerialBackend = CaptureSerialBackend()) throws -> (Machine, EventCollector) {
        let m = try Machine(MachineConfiguration(devices: []), serialBackend: backend, clock: ManualClock(unixSeconds: 1_700_000_000))
        let collector = EventCollector()
        _ = m.addEventListener { collector.add($0) }
        return (m, collector)
    }

    func cfgWrite(_ m: Machine, _ offset: UInt32, _ width: AccessWidth, _ value: UInt64) {
        m.portWrite(0xCF8, width: .dword, value: UInt64(0x8000_0000 | 0x1F << 11 | offset & 0xFC))
        m.portWrite(0xCFC + UInt16(offset & 3), width: width, value: value)
    }

    @Test func serialReachesBackend() throws {
        let backend = CaptureSerialBackend()
        let (m, _) = try machine(backend)
        for byte in "ok".utf8 { m.portWrite(0x3F8, width: .byte, value: UInt64(byte)) }
        #expect(backend.text == "ok")
        m.portWrite(0x3F9, width: .byte, value: 0x02)
        #expect(m.interrupts.isHigh(GSI(4)))
    }

    @Test func resetRequestsBecomeMachineEvents() throws {
        let (m, events) = try machine()
        m.portWrite(0xCF9, width: .byte, value: 0x06)
        m.portWrite(0x64, width: .byte, value: 0xFE)
        #expect(events.events == [.resetRequested(.resetControl(full: true)), .resetRequested(.keyboardController)])
        // CONFIG_ADDRESS still works beside RST_CNT.
        m.portWrite(0xCF8, width: .dword, value: 0x8000_F800)
        #expect(m.portRead(0xCFC, width: .dword) == 0x2918_8086)
    }

    @Test func s5PowerOffThroughPMBASE() throws {
        let (m, events) = try machine()
        #expect(m.portRead(0x604, width: .word) == 0xFFFF, "PM block undecoded before ACPI_EN")
        cfgWrite(m, 0x40, .dword, 0x601)
        cfgWrite(m, 0x44, .byte, 0x80)
        m.portWrite(0xB2, width: .byte, value: 0x02)
        #expect(m.portRead(0x604, width: .word) == 1)
        m.portWrite(0x604, width: .word, value: 0x2001)
        #expect(events.events == [.powerOff])
        // GPE through the hot-plug block raises the SCI on GSI 9 once enabled.
        m.portWrite(0x628, width: .byte, value: 0x02)
        let bus = m.legacy.acpiHotPlug.addBus(bsel: 0, name: "rp0", slots: [0])
        try bus.plug(device: 0)
        #expect(m.interrupts.isHigh(GSI(9)))
        #expect(m.portRead(0xCC0, width: .dword) == 1)
        m.portWrite(0x620, width: .byte, value: 0x02)
        #expect(!m.interrupts.isHigh(GSI(9)))
        // Moving PMBASE moves the block; the SCI follows ACPI_CNTL's selection.
        cfgWrite(m, 0x40, .dword, 0xB001)
        #expect(m.portRead(0xB004, width: .word) == 1)
        #expect(m.portRead(0x604, width: .word) == 0xFFFF)
        cfgWrite(m, 0x44, .byte, 0x82)
        #expect(m.legacy.powerManagement.sciGSI == GSI(11))
    }

    @Test func cmosReportsMachineMemory() throws {
        let (m, _) = try machine()
        m.portWrite(0x70, width: .byte, value: 0x35)
        #expect(m.portRead(0x71, width: .byte) == 0x07)  // (128 MiB - 16 MiB) / 64 KiB = 0x0700
    }

    @Test func platformResetRestoresLegacyDevices() throws {
        let (m, _) = try machine()
        m.portWrite(0x3FF, width: .byte, value: 0x55)
        m.reset()
        #expect(m.portRead(0x3FF, width: .byte) == 0)
        #expect(m.portRead(0x3FD, width: .byte) == 0x60)
    }

    /// Every width of read and write at every legacy port: reads never carry bits beyond their
    /// width, the only machine events are the resets and S5 that those ports mean, and the
    /// machine still answers afterwards with the values the datasheets give.
    @Test func hostileAccessesAtEveryLegacyPortLeaveAWorkingMachine() throws {
        let backend = CaptureSerialBackend()
        let (m, events) = try machine(backend)
        cfgWrite(m, 0x40, .dword, 0x601)
        cfgWrite(m, 0x44, .byte, 0x80)
        let ranges: [ClosedRange<UInt16>] = [0x60...0x64, 0x70...0x73, 0xB2...0xB3, 0x3F8...0x3FF, 0x600...0x67F,
                                             0xCC0...0xCDB, 0xCF8...0xCFB]
        var wideReads: [String] = []
        for range in ranges {
            for port in range {
                for width in [AccessWidth.byte, .word, .dword] {
                    let before = m.portRead(port, width: width)
                    // Writes of all ones at 0xCF9 and 0x64 ask for resets and S5; that is fine.
                    m.portWrite(port, width: width, value: 0xFFFF_FFFF)
                    m.portWrite(port, width: width, value: 0)
                    let after = m.portRead(port, width: width)
                    for v in [before, after] where v & ~width.allOnes != 0 {
                        wideReads.append("0x\(String(port, radix: 16))/\(width.bytes): 0x\(String(v, radix: 16))")
                    }
                }
            }
        }
        #expect(wideReads.isEmpty, "reads wider than their access: \(wideReads.prefix(8))")
        let unexpected = events.events.filter {
            if case .resetRequested = $0 { return false }
            return $0 != .powerOff
        }
        #expect(unexpected.isEmpty, "\(unexpected)")
        // 0xFF at 0xCF9 sets RST_CPU and FULL_RST (ICH9 datasheet, Reset Control Register).
        #expect(events.events.contains(.resetRequested(.resetControl(full: true))))

        // After a platform reset the chipset, CMOS and UART answer as on a fresh machine.
        m.reset()
        m.portWrite(0xCF8, width: .dword, value: 0x8000_F800)
        #expect(m.portRead(0xCFC, width: .dword) == 0x2918_8086, "ICH9 LPC at 00:1f.0")
        m.portWrite(0xCF8, width: .dword, value: 0x8000_0000)
        #expect(m.portRead(0xCFC, width: .dword) == 0x29C0_8086, "MCH at 00:00.0")
        m.portWrite(0x70, width: .byte, value: 0x35)
        #expect(m.portRead(0x71, width: .byte) == 0x07)
        #expect(m.portRead(0x3FD, width: .byte) == 0x60, "LSR: THR and transmitter empty")
        let sent = backend.text.count
        m.portWrite(0x3F8, width: .byte, value: UInt64(UInt8(ascii: "z")))
        #expect(backend.text.count == sent + 1 && backend.text.hasSuffix("z"))
    }
}
