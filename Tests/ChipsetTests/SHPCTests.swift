import Chipset
import PCI
import Synchronization
import Testing
import VMMBase

/// Records what a function raises.
final class RecordingInterrupts: PCIInterruptOutput {
    enum Entry: Equatable { case msi(MSIMessage), intx(Bool) }
    let log = Mutex<[Entry]>([])
    func signal(_ message: MSIMessage) { log.withLock { $0.append(.msi(message)) } }
    func setINTx(_ asserted: Bool) { log.withLock { $0.append(.intx(asserted)) } }
    func take() -> [Entry] {
        log.withLock { entries in
            defer { entries = [] }
            return entries
        }
    }
}

/// Plays Linux shpchp against a bridge through BAR 0 (shpchp maps it and uses MMIO).
struct ShpchpDriver {
    let bridge: PCIBridge
    func read(_ offset: Int) -> UInt32 { UInt32(bridge.barRead(0, offset: UInt64(offset), width: .dword)) }
    func write(_ offset: Int, _ value: UInt32) { bridge.barWrite(0, offset: UInt64(offset), width: .dword, value: UInt64(value)) }
    func slot(_ device: UInt8) -> Int { SHPCRegister.slot(Int(device) - 1) }

    /// shpc_init: mask everything, then unmask slot events and the global/command interrupts.
    func initialize() {
        write(SHPCRegister.serrInt, read(SHPCRegister.serrInt) | 0xF)
        for d in UInt8(1)...31 { write(slot(d), read(slot(d)) | 0x7F00_0000) }
        for d in UInt8(1)...31 {
            // Unmask presence, button, MRL and connected power fault interrupts; clear latches.
            var v = read(slot(d)) & ~UInt32(0x1D00_0000)
            v |= 0x001F_0000
            write(slot(d), v)
        }
        write(SHPCRegister.serrInt, read(SHPCRegister.serrInt) & ~UInt32(0x5))
    }

    /// shpc_write_cmd: a 16-bit write of target << 8 | code.
    func command(_ code: UInt8, target: UInt8) {
        bridge.barWrite(0, offset: UInt64(SHPCRegister.commandCode), width: .word, value: UInt64(target) << 8 | UInt64(code))
    }

    var commandStatus: UInt16 { UInt16(read(SHPCRegister.commandCode) >> 16) }

    /// shpc_isr: mask global interrupt, clear command completion and slot events, unmask.
    func serviceInterrupt() -> UInt32 {
        let locator = read(SHPCRegister.interruptLocator)
        write(SHPCRegister.serrInt, read(SHPCRegister.serrInt) | 1)
        if locator & 1 != 0 { write(SHPCRegister.serrInt, read(SHPCRegister.serrInt) | 1 << 16) }
        for d in UInt8(1)...31 where locator & (1 << UInt32(d)) != 0 {
            write(slot(d), read(slot(d)))  // latched bits read as one, written back to clear
        }
        write(SHPCRegister.serrInt, read(SHPCRegister.serrInt) & ~UInt32(1))
        return locator
    }

    /// Programs MSI at `address`/`data` and enables it.
    func enableMSI(address: UInt64 = 0xFEE0_0000, data: UInt16 = 0x4041) throws {
        let msi = try #require(bridge.configSnapshot().capability(.msi)).offset
        _ = bridge.configWrite(msi + 4, width: .dword, value: UInt32(truncatingIfNeeded: address))
        _ = bridge.configWrite(msi + 8, width: .dword, value: UInt32(truncatingIfNeeded: address >> 32))
        _ = bridge.configWrite(msi + 12, width: .word, value: UInt32(data))
        _ = bridge.configWrite(msi + 2, width: .word, value: 1)
    }
}

@Suite("SHPC as Linux shpchp drives it")
struct SHPCTests {
    func rig(msi: Bool = true, kind: String = "pci-bridge") throws -> (PCIBridge, ShpchpDriver, RecordingInterrupts) {
        let properties = kind == "pci-bridge" ? ["chassis_nr": "1", "msi": msi ? "on" : "off"] : ["msi": msi ? "on" : "off"]
        let bridge = try #require(try PCIBridgeFactory.make(driver: kind, id: "br", properties: properties) as? PCIBridge)
        let irq = RecordingInterrupts()
        bridge.connect(interrupts: irq)
        return (bridge, ShpchpDriver(bridge: bridge), irq)
    }

    let message = MSIMessage(address: 0xFEE0_0000, data: 0x4041)

    @Test("hot-add and attention-button removal with MSI", arguments: ["pci-bridge", "pcie-pci-bridge"])
    func fullCycleMSI(_ kind: String) throws {
        let (bridge, drv, irq) = try rig(kind: kind)
        #expect(bridge.hotPlugSlots == Array(1...31))
        try drv.enableMSI()
        drv.initialize()
        #expect(irq.take().isEmpty, "init raises nothing: no events yet")
        #expect(drv.read(SHPCRegister.interruptLocator) == 0)

        // Plug: presence (and MRL, button) latched, MSI sent.
        try bridge.plug(device: 5)
        #expect(irq.take() == [.msi(message)])
        let slot = try #require(bridge.shpcSnapshot?.slot(device: 5))
        #expect(slot.present && !slot.mrlOpen && slot.state == .disabled)
        #expect(slot.latched == [.presenceChanged, .mrlSensorChanged, .attentionButton])
        #expect(drv.serviceInterrupt() == 1 << 5)
        #expect(drv.read(SHPCRegister.interruptLocator) == 0)

        // shpchp: blink power LED, attention off (command 0x38), then power on (0x01), enable
        // with power blink and attention off (0x3a), power LED on (0x04).
        for code: UInt8 in [0x38, 0x01, 0x3A, 0x04] {
            drv.command(code, target: 5)
            #expect(drv.commandStatus & 0xF == 0, "command \(hex(code, 2)) succeeds")
            #expect(irq.take() == [.msi(message)], "command completion interrupts")
            #expect(drv.serviceInterrupt() == 1)
        }
        #expect(bridge.takeEvents() == [.poweredOn(device: 5)])
        #expect(bridge.shpcSnapshot?.slot(device: 5)?.state == .enabled)
        #expect(bridge.shpcSnapshot?.slot(device: 5)?.powerIndicator == .on)

        // Attention button: latched, interrupt; shpchp blinks, then disables with power off.
        try bridge.requestUnplug(device: 5, mode: .attentionButton)
        #expect(irq.take() == [.msi(message)])
        #expect(drv.serviceInterrupt() == 1 << 5)
        drv.command(0x08, target: 5)   // power indicator blink
        _ = drv.serviceInterrupt()
        #expect(throws: HotPlugError.unplugInProgress(controller: "br", device: 5)) {
            try bridge.requestUnplug(device: 5, mode: .attentionButton)
        }
        #expect(bridge.takeEvents().isEmpty)
        drv.command(0x1F, target: 5)   // slot disable, power off, attention on
        #expect(drv.commandStatus & 0xF == 0)
        #expect(bridge.takeEvents() == [.ejected(device: 5)])
        let after = try #require(bridge.shpcSnapshot?.slot(device: 5))
        #expect(!after.present && after.mrlOpen && after.state == .disabled)
        #expect(drv.serviceInterrupt() == (1 | 1 << 5), "command completion and the presence/MRL change")
        #expect(throws: HotPlugError.slotEmpty(controller: "br", device: 5)) {
            try bridge.requestUnplug(device: 5, mode: .attentionButton)
        }
    }

    @Test("INTx path when MSI is off, and Interrupt Disable gates it")
    func intxPath() throws {
        let (bridge, drv, irq) = try rig(msi: false)
        #expect(bridge.configSnapshot().capability(.msi) == nil)
        drv.initialize()
        try bridge.plug(device: 1)
        #expect(irq.take() == [.intx(true)])
        #expect(bridge.configSnapshot().status.contains(.interrupt))
        _ = drv.serviceInterrupt()
        #expect(irq.take() == [.intx(false)], "deasserts once events are cleared")
        #expect(!bridge.configSnapshot().status.contains(.interrupt))
        _ = bridge.configWrite(Reg.command, width: .word, value: UInt32(CommandBits.intxDisable.rawValue))
        drv.command(0x01, target: 1)
        #expect(irq.take().isEmpty, "Interrupt Disable keeps INTA low")
        #expect(bridge.configSnapshot().status.contains(.interrupt), "Status.interrupt still shows the request")
        _ = bridge.configWrite(Reg.command, width: .word, value: 0)
        drv.command(0x01, target: 1)
        #expect(irq.take() == [.intx(true)])
    }

    @Test("masked controller raises nothing; surprise removal is refused")
    func masksAndSurprise() throws {
        let (bridge, drv, irq) = try rig()
        try drv.enableMSI()
        try bridge.plug(device: 3)
        #expect(irq.take().isEmpty, "reset state masks everything")
        #expect(drv.read(SHPCRegister.interruptLocator) == 0)
        #expect(throws: HotPlugError.surpriseNotSupported(controller: "br")) {
            try bridge.requestUnplug(device: 3, mode: .surprise)
        }
        #expect(throws: HotPlugError.slotOccupied(controller: "br", device: 3)) { try bridge.plug(device: 3) }
        #expect(throws: HotPlugError.noSuchSlot(controller: "br", device: 0)) { try bridge.plug(device: 0) }
        #expect(throws: HotPlugError.noSuchSlot(controller: "br", device: 32)) { try bridge.plug(device: 32) }
        let noSHPC = try #require(try PCIBridgeFactory.make(driver: "pci-bridge", id: "n",
                                                           properties: ["chassis_nr": "1", "shpc": "off"]) as? PCIBridge)
        #expect(noSHPC.hotPlugSlots.isEmpty)
        #expect(throws: HotPlugError.noSuchSlot(controller: "n", device: 1)) { try noSHPC.plug(device: 1) }
    }

    @Test("bad commands and targets report Invalid Command; bad speeds Invalid Mode; open MRL refuses power")
    func commandErrors() throws {
        let (bridge, drv, _) = try rig()
        drv.command(0xFF, target: 0)
        #expect(drv.commandStatus == SHPCCommandStatus.invalidCommand.rawValue)
        #expect(bridge.shpcSnapshot?.serrInt.contains(.commandCompletionDetected) == true)
        drv.command(0x02, target: 0)
        #expect(drv.commandStatus == SHPCCommandStatus.invalidCommand.rawValue)
        drv.command(0x40, target: 0)
        #expect(drv.commandStatus == 0)
        drv.command(0x43, target: 0)
        #expect(drv.commandStatus == SHPCCommandStatus.invalidSpeedMode.rawValue)
        drv.command(0x01, target: 4)  // empty slot, MRL open
        #expect(drv.commandStatus == SHPCCommandStatus.mrlOpen.rawValue)
        #expect(bridge.shpcSnapshot?.slot(device: 4)?.state == .disabled)
        try bridge.plug(device: 4)
        drv.command(0x02, target: 4)
        drv.command(0x01, target: 4)  // power-only while enabled
        #expect(drv.commandStatus == SHPCCommandStatus.invalidCommand.rawValue)
        drv.command(0x48, target: 0)  // power-only-all while a slot is enabled
        #expect(drv.commandStatus == SHPCCommandStatus.invalidCommand.rawValue)
    }

    @Test("hostile accesses to the window and the BAR never crash")
    func hostile() throws {
        let (bridge, drv, _) = try rig()
        let cap = try #require(bridge.shpcCapability)
        for select in 0...255 {
            _ = bridge.configWrite(cap + 2, width: .byte, value: UInt32(select))
            _ = bridge.configRead(cap + 4, width: .dword)
            _ = bridge.configWrite(cap + 4, width: .dword, value: 0xFFFF_FFFF)
            for o in 0..<8 {
                for w in AccessWidth.allCases where w != .qword {
                    _ = bridge.configWrite(cap + o, width: w, value: 0xDEAD_BEEF)
                    _ = bridge.configRead(cap + o, width: w)
                }
            }
        }
        _ = bridge.configWrite(cap + 2, width: .byte, value: 0x3F)
        #expect(bridge.configRead(cap + 4, width: .dword) == 0, "selects past the registers read 0")
        for offset in stride(from: UInt64(0), to: 0x120, by: 1) {
            for w in AccessWidth.allCases {
                bridge.barWrite(0, offset: offset, width: w, value: .max)
                _ = bridge.barRead(0, offset: offset, width: w)
            }
        }
        bridge.barWrite(0, offset: .max, width: .qword, value: .max)
        #expect(bridge.barRead(0, offset: .max - 1, width: .qword) == 0)
        #expect(bridge.barRead(1, offset: 0, width: .dword) == 0)
        // The register set survives: identity registers are read-only.
        #expect(drv.read(SHPCRegister.slotsAvailable33) == 31)
        #expect(drv.read(SHPCRegister.numberOfSlots) == 0xE001_011F)
    }

    @Test("window writes reach the selected register (unlike QEMU 10, which writes its own bytes)")
    func windowWrites() throws {
        let (bridge, drv, _) = try rig()
        let cap = try #require(bridge.shpcCapability)
        _ = bridge.configWrite(cap + 2, width: .byte, value: UInt32(SHPCRegister.serrInt / 4))
        _ = bridge.configWrite(cap + 4, width: .dword, value: 0)
        #expect(drv.read(SHPCRegister.serrInt) == 0)
        #expect(bridge.configRead(cap + 4, width: .dword) == 0)
        _ = bridge.configWrite(cap + 2, width: .byte, value: UInt32(SHPCRegister.commandCode / 4))
        _ = bridge.configWrite(cap + 4, width: .word, value: 0xFF)
        #expect(bridge.configRead(cap + 4, width: .dword) >> 16 == UInt32(SHPCCommandStatus.invalidCommand.rawValue))
    }

    @Test("reset: cold-plugged devices come up enabled with power on")
    func coldPlug() throws {
        let (bridge, drv, _) = try rig()
        try bridge.secondary.attach(PCITestDevice(name: "cold"), at: 7 << 3)
        bridge.reset()
        let slot = try #require(bridge.shpcSnapshot?.slot(device: 7))
        #expect(slot.present && slot.state == .enabled && slot.powerIndicator == .on && !slot.mrlOpen)
        #expect(drv.read(drv.slot(7)) == 0x7F00_0036)
    }
}
