import AddressSpace
import Chipset
import Interrupts
import Testing
import Synchronization
import VMMBase

@Suite struct UARTTests {
    let sink = RecordingSink()
    let backend = CaptureSerialBackend()
    let clock = ManualClock()
    var uart: UART16550 { _uart }
    private let _uart: UART16550

    init() { _uart = UART16550(interrupts: sink, backend: backend, clock: clock) }

    func out(_ r: UInt64, _ v: UInt64) { uart.write(offset: r, width: .byte, value: v) }
    func inb(_ r: UInt64) -> UInt8 { UInt8(uart.read(offset: r, width: .byte)) }

    @Test func linuxStyleInitAndTransmit() {
        out(3, 0x80); out(0, 0x01); out(1, 0x00); out(3, 0x03)  // 115200 8N1
        #expect(uart.divisor == 1)
        out(2, 0xC7); out(4, 0x0B)
        #expect(inb(2) == 0xC1)
        out(1, 0x02)  // THRI: THR is empty, so the interrupt is pending at once
        #expect(sink.isHigh(UART16550.com1GSI))
        #expect(inb(2) == 0xC2)
        #expect(!sink.isHigh(UART16550.com1GSI), "reading IIR with THRI pending clears it")
        sink.clearEvents()
        for byte in "hi\n".utf8 { out(0, UInt64(byte)) }
        #expect(backend.text == "hi\n")
        #expect(inb(5) & 0x60 == 0x60)
        // Each transmitted byte gives a fresh THRE edge.
        #expect(sink.events.filter { $0 == .level(UART16550.com1GSI, high: true) }.count == 3)
    }

    @Test func loopbackAndReceive() {
        out(4, 0x1A)
        #expect(inb(6) == 0x90)
        out(1, 0x01)
        out(0, 0x5A)
        #expect(backend.bytes.isEmpty)
        #expect(inb(5) & 0x01 == 1)
        #expect(inb(2) == 0x04)
        #expect(inb(0) == 0x5A)
        #expect(!sink.isHigh(UART16550.com1GSI))
        out(4, 0x0B)
        #expect(uart.receive([1, 2]) == 1, "without FIFO one byte fits")
        out(2, 0x01)  // FIFO on, trigger 1 (flushes)
        #expect(uart.receive(Array(repeating: 7, count: 20)) == 16)
        #expect(inb(2) == 0xC4)
        for _ in 0..<16 { #expect(inb(0) == 7) }
        #expect(inb(5) & 1 == 0)
    }

    @Test func characterTimeoutWithClock() {
        out(1, 0x01); out(2, 0xC1)  // trigger 14
        uart.receive([0x41])
        #expect(inb(2) == 0xC1)
        clock.advance(nanoseconds: 10_000_000)
        uart.serviceTimers()
        #expect(inb(2) == 0xCC)
        #expect(sink.isHigh(UART16550.com1GSI))
        #expect(inb(0) == 0x41)
        #expect(inb(2) == 0xC1)
    }

    /// Any access at any width: reads carry no bits beyond the access, and after a reset the
    /// UART is the 16550 of the datasheet again (LSR 0x60, IIR 0x01) and transmits.
    @Test func hostileAccessesLeaveAWorkingUART() {
        var wide: [String] = []
        for offset in 0..<UInt64(12) {
            for width in AccessWidth.allCases {
                for value: UInt64 in [0, 0xFF, 0xA5A5_A5A5_A5A5_A5A5, .max] {
                    uart.write(offset: offset, width: width, value: value)
                    let v = uart.read(offset: offset, width: width)
                    if v & ~width.allOnes != 0 { wide.append("\(offset)/\(width.bytes): 0x\(String(v, radix: 16))") }
                }
            }
        }
        #expect(uart.receive(Array(repeating: 0, count: 100)) <= 16, "at most a 16-byte FIFO takes input")
        #expect(wide.isEmpty, "\(wide.prefix(8))")
        uart.reset()
        #expect(inb(5) == 0x60 && inb(2) == 0x01)
        backend.clear()
        out(3, 0x03); out(0, 0x41)
        #expect(backend.text == "A")
    }
}

@Suite struct RTCTests {
    // 2024-02-29 13:45:30 UTC, a Thursday.
    static let time: Int64 = 1_709_214_330

    func rtc(_ clock: ManualClock, ram: [Int: UInt8] = [:]) -> CMOSRTC {
        CMOSRTC(clock: clock, interrupts: RecordingSink(), ram: ram)
    }

    func reg(_ rtc: CMOSRTC, _ i: UInt64) -> UInt8 {
        rtc.write(offset: 0, width: .byte, value: i | 0x80)  // NMI bit set: not part of the index
        return UInt8(rtc.read(offset: 1, width: .byte))
    }

    func set(_ rtc: CMOSRTC, _ i: UInt64, _ v: UInt64) {
        rtc.write(offset: 0, width: .byte, value: i)
        rtc.write(offset: 1, width: .byte, value: v)
    }

    @Test func bcdDate() {
        let rtc = rtc(ManualClock(unixSeconds: Self.time))
        #expect([0, 2, 4, 6, 7, 8, 9, 0x32].map { reg(rtc, $0) } == [0x30, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20])
        #expect(reg(rtc, 0x0A) == 0x26 && reg(rtc, 0x0B) == 0x02 && reg(rtc, 0x0D) == 0x80)
    }

    @Test func binaryAnd12Hour() {
        let rtc = rtc(ManualClock(unixSeconds: Self.time))
        set(rtc, 0x0B, 0x04)  // binary, 12-hour
        #expect(reg(rtc, 4) == 0x80 | 1)  // 1 PM
        #expect(reg(rtc, 9) == 24 && reg(rtc, 7) == 29 && reg(rtc, 0) == 30)
    }

    @Test func setModeWritesTime() {
        let clock = ManualClock(unixSeconds: Self.time)
        let rtc = rtc(clock)
        set(rtc, 0x0B, 0x82)
        set(rtc, 9, 0x99); set(rtc, 0x32, 0x19); set(rtc, 8, 0x12); set(rtc, 7, 0x31)
        set(rtc, 4, 0x23); set(rtc, 2, 0x59); set(rtc, 0, 0x58)
        set(rtc, 0x0B, 0x02)
        clock.advance(nanoseconds: 3_000_000_000)
        #expect(rtc.guestTime == 946_684_801)  // 2000-01-01 00:00:01
        #expect(reg(rtc, 9) == 0x00 && reg(rtc, 0x32) == 0x20 && reg(rtc, 0) == 0x01)
    }

    @Test func updateInProgress() {
        let clock = ManualClock(monotonic: 0, wall: Self.time * 1_000_000_000 + 999_900_000)
        let rtc = rtc(clock)
        #expect(reg(rtc, 0x0A) == 0xA6)
        clock.advance(nanoseconds: 200_000)
        #expect(reg(rtc, 0x0A) == 0x26)
    }

    @Test func cmosMemorySizes() {
        // 2 GiB below 4 GiB and 2 GiB above.
        let ram = CMOSRTC.qemuPCLayout(belowFourGiB: 0x8000_0000, aboveFourGiB: 0x8000_0000, cpuCount: 4)
        let rtc = rtc(ManualClock(), ram: ram)
        #expect(reg(rtc, 0x34) == 0x00 && reg(rtc, 0x35) == 0x7F)  // (2 GiB - 16 MiB) / 64 KiB = 0x7F00
        #expect(reg(rtc, 0x5B) == 0x00 && reg(rtc, 0x5C) == 0x80 && reg(rtc, 0x5D) == 0x00)  // 0x8000
        #expect(reg(rtc, 0x15) == 0x80 && reg(rtc, 0x16) == 0x02)
        #expect(reg(rtc, 0x17) == 0xFF && reg(rtc, 0x18) == 0xFF)
        #expect(reg(rtc, 0x5F) == 3)
    }

    /// Any index and value, any width: register D keeps VRT (bit 7, "valid RAM and time") set,
    /// as the MC146818 defines it read-only, and byte reads stay bytes.
    @Test func hostileAccessesLeaveAValidRTC() {
        let rtc = rtc(ManualClock(unixSeconds: -5_000_000_000))
        var wide: [String] = []
        for index in 0..<UInt64(256) {
            for value: UInt64 in [0, 0x7F, 0xFF] {
                rtc.write(offset: 0, width: .byte, value: index)
                rtc.write(offset: 1, width: .byte, value: value)
                let v = rtc.read(offset: 1, width: .byte)
                if v > 0xFF { wide.append("index \(index): 0x\(String(v, radix: 16))") }
            }
        }
        for offset in 0..<UInt64(4) {
            for width in AccessWidth.allCases {
                rtc.write(offset: offset, width: width, value: .max)
                let v = rtc.read(offset: offset, width: width)
                if v & ~width.allOnes != 0 { wide.append("\(offset)/\(width.bytes): 0x\(String(v, radix: 16))") }
            }
        }
        #expect(wide.isEmpty, "\(wide.prefix(8))")
        #expect(reg(rtc, 0x0D) == 0x80)
    }
}

@Suite struct KeyboardControllerTests {
    @Test func selfTestAndResetPulse() {
        let events = PlatformEventLog()
        let kbc = I8042(interrupts: RecordingSink(), events: events)
        #expect(kbc.readStatus() == 0x18)
        kbc.writeCommand(0xAA)
        #expect(kbc.readStatus() & 0x01 == 1)
        #expect(kbc.readData() == 0x55)
        kbc.writeCommand(0x20)
        #expect(kbc.readData() == 0x03)
        kbc.writeCommand(0x60); kbc.writeData(0x47)
        kbc.writeCommand(0x20)
        #expect(kbc.readData() == 0x47)
        #expect(events.events.isEmpty)
        kbc.writeCommand(0xFE)
        #expect(events.takeEvents() == [.resetRequested(.keyboardController)])
        kbc.writeCommand(0xFF)
        #expect(events.events.isEmpty)
        kbc.writeCommand(0xD1); kbc.writeData(0xCE)
        #expect(events.takeEvents() == [.resetRequested(.keyboardController)])
    }

    @Test func keyboardInterruptOnOutput() {
        let sink = RecordingSink()
        let kbc = I8042(interrupts: sink, events: PlatformEventLog())
        kbc.writeData(0xFF)
        #expect(sink.isHigh(I8042.keyboardGSI))
        #expect(kbc.readData() == 0xFA && kbc.readData() == 0xAA)
        #expect(!sink.isHigh(I8042.keyboardGSI))
    }

    /// Every command and data byte: the only platform events are the resets the 8042 defines
    /// (command 0xFE, or output-port writes that clear bit 0), and afterwards the controller
    /// still passes its self-test (0xAA answers 0x55).
    @Test func hostileAccessesLeaveAWorkingController() {
        let events = PlatformEventLog()
        let kbc = I8042(interrupts: RecordingSink(), events: events)
        var wide: [String] = []
        for byte in 0..<UInt64(256) {
            kbc.write(offset: 4, width: .byte, value: byte)
            kbc.write(offset: 0, width: .byte, value: byte)
            for width in AccessWidth.allCases {
                let v = kbc.read(offset: byte % 8, width: width)
                if v & ~width.allOnes != 0 { wide.append("\(byte % 8)/\(width.bytes): 0x\(String(v, radix: 16))") }
            }
        }
        #expect(wide.isEmpty, "\(wide.prefix(8))")
        #expect(events.takeEvents().allSatisfy { $0 == .resetRequested(.keyboardController) })
        kbc.reset()
        while kbc.readStatus() & 0x01 != 0 { _ = kbc.readData() }
        kbc.writeCommand(0xAA)
        #expect(kbc.readData() == 0x55)
    }
}

@Suite struct ResetControlTests {
    @Test func cf9ByteResetsAndDwordLatchesConfigAddress() {
        let events = PlatformEventLog()
        let rcr = ResetControlRegister(events: events)
        let port = ConfigAddressAndResetControl(configAddress: ConfigAddressPort(), resetControl: rcr)
        port.write(offset: 0, width: .dword, value: 0x8000_F840)
        #expect(port.configAddress.value == 0x8000_F840)
        port.write(offset: 1, width: .byte, value: 0x02)
        #expect(port.read(offset: 1, width: .byte) == 0x02)
        #expect(port.configAddress.value == 0x8000_F840)
        port.write(offset: 1, width: .byte, value: 0x06)
        #expect(events.takeEvents() == [.resetRequested(.resetControl(full: true))])
        port.write(offset: 1, width: .byte, value: 0x04)
        #expect(events.takeEvents() == [.resetRequested(.resetControl(full: false))])
    }
}

@Suite struct PowerManagementTests {
    let sink = RecordingSink()
    let events = PlatformEventLog()
    let clock = ManualClock()
    let pm: ICH9PowerManagement

    init() { pm = ICH9PowerManagement(clock: clock, interrupts: sink, events: events) }

    @Test func apmEnablesSCIAndS5PowersOff() {
        let apm = pm.apmPorts, block = pm.pmBlock
        #expect(block.read(offset: 4, width: .word) == 0)
        apm.write(offset: 0, width: .byte, value: 0x02)
        #expect(pm.sciEnabled)
        apm.write(offset: 0, width: .byte, value: 0x03)
        #expect(!pm.sciEnabled)
        block.write(offset: 4, width: .word, value: 1 << 10 | 0x2000)  // S3: not supported
        #expect(events.events.isEmpty)
        block.write(offset: 4, width: .word, value: 0x2001)  // SLP_TYP 0 = S5, SLP_EN
        #expect(events.takeEvents() == [.powerOffRequested])
        #expect(block.read(offset: 4, width: .word) == 0x0001, "SLP_EN reads 0")
    }

    @Test func sciFollowsEnabledStatus() {
        let block = pm.pmBlock
        block.write(offset: 0, width: .word, value: 0xFFFF)  // clear TMR_STS
        block.write(offset: 2, width: .word, value: 0x0100)  // PWRBTN_EN
        #expect(!sink.isHigh(GSI(9)))
        pm.pressPowerButton()
        #expect(sink.isHigh(GSI(9)))
        #expect(block.read(offset: 0, width: .word) & 0x0100 != 0)
        block.write(offset: 0, width: .word, value: 0x0100)
        #expect(!sink.isHigh(GSI(9)))
        // GPE: status without enable raises nothing; enabling raises; W1C lowers.
        pm.raiseGPE(1)
        #expect(!sink.isHigh(GSI(9)))
        block.write(offset: 0x28, width: .byte, value: 0x02)
        #expect(sink.isHigh(GSI(9)))
        block.write(offset: 0x20, width: .byte, value: 0x02)
        #expect(!sink.isHigh(GSI(9)))
        pm.raiseGPE(1)
        pm.routeSCI(to: GSI(11))
        #expect(!sink.isHigh(GSI(9)) && sink.isHigh(GSI(11)))
    }

    @Test func timerRunsAt3579545Hz() {
        let block = pm.pmBlock
        #expect(block.read(offset: 8, width: .dword) == 0)
        clock.advance(nanoseconds: 1_000_000_000)
        #expect(block.read(offset: 8, width: .dword) == 3_579_545)
        var last = block.read(offset: 8, width: .dword)
        for _ in 0..<100 {
            clock.advance(nanoseconds: 1_234_567)
            let now = block.read(offset: 8, width: .dword)
            let delta = (now &- last) & 0xFF_FFFF
            #expect(delta == 4419 || delta == 4420)  // 1.234567 ms of ticks, within rounding
            last = now
        }
        // 24 bits: wraps after 2^24 ticks (~4.69 s).
        clock.advance(nanoseconds: 5_000_000_000)
        #expect(block.read(offset: 8, width: .dword) <= 0xFF_FFFF)
    }

    @Test func timerOverflowSetsStatus() {
        let block = pm.pmBlock
        block.write(offset: 0, width: .word, value: 1)
        #expect(block.read(offset: 0, width: .word) & 1 == 0)
        block.write(offset: 2, width: .word, value: 1)  // TMR_EN
        clock.advance(nanoseconds: 2_400_000_000)  // past 2^23 ticks
        pm.serviceTimers()
        #expect(block.read(offset: 0, width: .word) & 1 == 1)
        #expect(sink.isHigh(GSI(9)))
    }

    /// Any access at any width, and GPE numbers outside the block: reads stay within their
    /// width, out-of-range GPEs set no status bit, and the PM timer still counts at 3.579545 MHz.
    @Test func hostileAccessesLeaveAWorkingPMBlock() {
        let block = pm.pmBlock, apm = pm.apmPorts
        var wide: [String] = []
        for offset in 0..<UInt64(132) {
            for width in AccessWidth.allCases {
                for value: UInt64 in [0, .max, 0x2000_2000_2000_2000] {
                    block.write(offset: offset, width: width, value: value)
                    let v = block.read(offset: offset, width: width)
                    apm.write(offset: offset % 3, width: width, value: value)
                    let a = apm.read(offset: offset % 3, width: width)
                    for r in [v, a] where r & ~width.allOnes != 0 { wide.append("\(offset)/\(width.bytes): 0x\(String(r, radix: 16))") }
                }
            }
        }
        #expect(wide.isEmpty, "\(wide.prefix(8))")
        block.write(offset: 0x20, width: .dword, value: 0xFFFF_FFFF)  // GPE0_STS is write-1-to-clear
        let gpeStatus = block.read(offset: 0x20, width: .dword)
        pm.raiseGPE(-1); pm.raiseGPE(64); pm.raiseGPE(1000)
        #expect(block.read(offset: 0x20, width: .dword) == gpeStatus)
        let t0 = block.read(offset: 8, width: .dword)
        clock.advance(nanoseconds: 1_000_000_000)
        #expect((block.read(offset: 8, width: .dword) &- t0) & 0xFF_FFFF == 3_579_545)
    }
}

@Suite struct ACPIHotPlugTests {
    let sink = RecordingSink()
    let pm: ICH9PowerManagement
    let controller: ACPIHotPlugController

    init() {
        pm = ICH9PowerManagement(clock: ManualClock(), interrupts: sink, events: PlatformEventLog())
        controller = ACPIHotPlugController(gpe: pm)
        pm.pmBlock.write(offset: 0, width: .word, value: 1)
        pm.pmBlock.write(offset: 0x28, width: .byte, value: 1 << ACPIHotPlugController.gpeBit)
    }

    func r(_ o: UInt64) -> UInt32 { UInt32(controller.read(offset: o, width: .dword)) }
    func w(_ o: UInt64, _ v: UInt32) { controller.write(offset: o, width: .dword, value: UInt64(v)) }

    @Test func plugUnplugEjectProtocol() throws {
        let bus0 = controller.addBus(bsel: 0, name: "rp0", slots: [0])
        let bus1 = controller.addBus(bsel: 1, name: "br1")
        try bus1.plug(device: 3)
        #expect(sink.isHigh(GSI(9)))
        #expect(pm.pmBlock.read(offset: 0x20, width: .byte) == 0x02)
        w(0x10, 1)
        #expect(r(0x10) == 1)
        #expect(r(0x00) == 1 << 3)
        #expect(r(0x00) == 0, "reading PCIU clears it")
        w(0x10, 0)
        // PCIRMV: QEMU 10 reads all ones on a root port's bus, and clears only the slots of
        // cold-plugged bridges (which B0EJ then leaves alone).
        #expect(r(0x0C) == 0xFFFF_FFFF)
        bus1.coldPlug(device: 5, bridge: true)
        w(0x10, 1)
        #expect(r(0x0C) == ~(1 << 5))
        w(0x08, 1 << 5)
        #expect(bus1.takeEvents().isEmpty)
        w(0x10, 0)
        #expect(throws: HotPlugError.noSuchSlot(controller: "rp0", device: 1)) { try bus0.plug(device: 1) }
        // GPE status is write-1-to-clear and drops the SCI.
        pm.pmBlock.write(offset: 0x20, width: .byte, value: 0x02)
        #expect(!sink.isHigh(GSI(9)))

        try bus1.requestUnplug(device: 3, mode: .attentionButton)
        #expect(sink.isHigh(GSI(9)))
        w(0x10, 1)
        #expect(r(0x04) == 1 << 3)
        #expect(bus1.takeEvents().isEmpty)
        let box = NotificationBox()
        controller.setEventHandler { bus in box.add(bus.bsel) }
        w(0x08, 1 << 3)
        #expect(box.values == [1])
        #expect(bus1.takeEvents() == [.ejected(device: 3)])
        #expect(r(0x04) == 0)
        try bus1.plug(device: 3)
        try bus1.requestUnplug(device: 3, mode: .surprise)
        #expect(bus1.takeEvents() == [.ejected(device: 3)])
        #expect(throws: HotPlugError.slotEmpty(controller: "br1", device: 3)) { try bus1.requestUnplug(device: 3, mode: .surprise) }
    }

    @Test func acpiIndexAndSelect() throws {
        let bus = controller.addBus(bsel: 2, name: "rp2", slots: [0])
        bus.setACPIIndex(42, forSlot: 0)
        w(0x10, 2)
        w(0x14, 1)
        #expect(r(0x14) == 42)
        #expect(r(0x14) == 0)
        w(0x10, 0x1000)
        #expect(r(0x10) == 0 && r(0x0C) == 0)
        #expect(controller.read(offset: 0x10, width: .byte) == 0)
    }

    /// Any access at any width: reads stay within their width, and after a reset the
    /// controller reports nothing pending and still signals a plug on its bus.
    @Test func hostileAccessesLeaveAWorkingController() throws {
        let bus = controller.addBus(bsel: 0, name: "b")
        var wide: [String] = []
        for offset in 0..<UInt64(0x1C) {
            for width in AccessWidth.allCases {
                for value: UInt64 in [0, 1, 0x8000_0000, .max] {
                    controller.write(offset: offset, width: width, value: value)
                    let v = controller.read(offset: offset, width: width)
                    if v & ~width.allOnes != 0 { wide.append("\(offset)/\(width.bytes): 0x\(String(v, radix: 16))") }
                }
            }
        }
        #expect(wide.isEmpty, "\(wide.prefix(8))")
        controller.reset()
        w(0x10, 0)
        #expect(r(0x00) == 0 && r(0x04) == 0, "nothing pending after reset")
        try bus.plug(device: 5)
        w(0x10, 0)
        #expect(r(0x00) == 1 << 5)
    }
}

final class NotificationBox: Sendable {
    private let store = Mutex<[UInt32]>([])
    func add(_ v: UInt32) { store.withLock { $0.append(v) } }
    var values: [UInt32] { store.withLock { $0 } }
}
