import Chipset
import PCI
import Synchronization
import Testing
import VMMBase

/// An interrupt output that remembers what the port did.
final class RecordedInterrupts: PCIInterruptOutput {
    private let log = Mutex<(messages: [MSIMessage], intx: [Bool])>(([], []))
    func signal(_ message: MSIMessage) { log.withLock { $0.messages.append(message) } }
    func setINTx(_ asserted: Bool) { log.withLock { $0.intx.append(asserted) } }
    var messages: [MSIMessage] { log.withLock { $0.messages } }
    var intx: [Bool] { log.withLock { $0.intx } }
    var intxLevel: Bool { log.withLock { $0.intx.last ?? false } }
}

/// Drives a port's hot-plug registers the way Linux pciehp does.
struct PCIeHPGuest {
    let port: any PCIExpressPort
    let exp: Int

    init(_ port: any PCIExpressPort) {
        self.port = port
        exp = port.configSnapshot().pciExpressOffset!
    }

    var control: PCIExpressSlotControl { PCIExpressSlotControl(rawValue: UInt16(port.configRead(exp + 0x18, width: .word))) }
    var status: PCIExpressSlotStatus { PCIExpressSlotStatus(rawValue: UInt16(port.configRead(exp + 0x1A, width: .word))) }
    var linkActive: Bool { port.configRead(exp + 0x12, width: .word) & (1 << 13) != 0 }

    @discardableResult
    func writeControl(_ value: PCIExpressSlotControl) -> ConfigWriteEffects {
        port.configWrite(exp + 0x18, width: .word, value: UInt32(value.rawValue))
    }

    /// pcie_write_cmd: read-modify-write of the bits in `mask`.
    func command(_ bits: PCIExpressSlotControl, mask: PCIExpressSlotControl) {
        writeControl(control.subtracting(mask).union(bits.intersection(mask)))
    }

    func ack(_ bits: PCIExpressSlotStatus) { _ = port.configWrite(exp + 0x1A, width: .word, value: UInt32(bits.rawValue)) }

    /// The ISR: read the events, write the same bits back.
    func takeStatusEvents() -> PCIExpressSlotStatus {
        let events = status.intersection([.attentionButtonPressed, .powerFaultDetected, .presenceDetectChanged,
                                          .commandCompleted, .dataLinkLayerStateChanged])
        if !events.isEmpty { ack(events) }
        return events
    }

    /// Programs MSI (address/data) or MSI-X (entry 0, unmasked) and enables it.
    func enableMessages() {
        let cs = port.configSnapshot()
        if let msi = cs.msiState {
            _ = port.configWrite(msi.offset + 4, width: .dword, value: 0xFEE0_0000)
            let data = msi.offset + (msi.is64Bit ? 0x0C : 0x08)
            _ = port.configWrite(data, width: .word, value: 0x4041)
            _ = port.configWrite(msi.offset + 2, width: .word, value: 1)
        } else if let msix = cs.capability(.msix) {
            port.barWrite(0, offset: 0, width: .dword, value: 0xFEE0_0000)
            port.barWrite(0, offset: 8, width: .dword, value: 0x4041)
            port.barWrite(0, offset: 12, width: .dword, value: 0)
            _ = port.configWrite(msix.offset + 2, width: .word, value: 0x8000)
        }
    }

    static let pciehpEnables: PCIExpressSlotControl = [.hotPlugInterruptEnable, .presenceDetectChangedEnable,
        .dataLinkLayerStateChangedEnable, .attentionButtonPressedEnable, .commandCompletedInterruptEnable]
}

@Suite struct PCIeHotPlugTests {
    static let expected = MSIMessage(address: 0xFEE0_0000, data: 0x4041)

    func rig(_ driver: String, properties: [String: String] = [:]) throws -> (any PCIExpressPort, RecordedInterrupts, PCIeHPGuest) {
        let port = try #require(try PCIePortFactory.make(driver: driver, id: "p", properties: properties) as? any PCIExpressPort)
        let irq = RecordedInterrupts()
        port.connect(interrupts: irq)
        return (port, irq, PCIeHPGuest(port))
    }

    @Test(arguments: ["pcie-root-port", "ioh3420", "xio3130-downstream"])
    func pciehpPlugPowerOnButtonUnplug(_ driver: String) throws {
        let (port, irq, guest) = try rig(driver)
        let controller = try #require(port as? any HotPlugController)
        #expect(controller.hotPlugSlots == [0])
        guest.enableMessages()
        guest.writeControl(guest.control.union(PCIeHPGuest.pciehpEnables))
        // Enabling notification is itself a command: Command Completed, with CCIE one MSI.
        #expect(guest.status.contains(.commandCompleted))
        #expect(irq.messages == [Self.expected])
        #expect(guest.takeStatusEvents() == [.commandCompleted])

        // Plug: presence detect (and link) change, exactly one message.
        try controller.plug(device: 0)
        let reportsLink = port.configSnapshot().get(guest.exp + 0x0C, width: 4) & (1 << 20) != 0
        #expect(guest.status.contains([.presenceDetected, .presenceDetectChanged]))
        #expect(guest.status.contains(.dataLinkLayerStateChanged) == reportsLink)
        // QEMU 10 shows DLL Link Active on every port once a device is in (measured on
        // pcie-root-port and ioh3420 through qtest); the event needs the reporting capability.
        #expect(guest.linkActive)
        #expect(irq.messages.count == 2)
        #expect(throws: HotPlugError.slotOccupied(controller: "p", device: 0)) { try controller.plug(device: 0) }

        // Ack by W1C: no new interrupt; presence stays (read-only).
        let events = guest.takeStatusEvents()
        #expect(events.contains(.presenceDetectChanged))
        #expect(irq.messages.count == 2)
        #expect(guest.status.contains(.presenceDetected))
        #expect(guest.status.intersection([.presenceDetectChanged, .dataLinkLayerStateChanged]).isEmpty)

        // Power on with the power indicator on: command completed + interrupt, .poweredOn.
        guest.command(PCIExpressSlotControl(rawValue: PCIExpressIndicator.on.rawValue << 8),
                      mask: [.powerControllerOff, .powerIndicatorControl])
        #expect(guest.status.contains(.commandCompleted))
        #expect(irq.messages.count == 3)
        #expect(controller.takeEvents() == [.poweredOn(device: 0)])
        _ = guest.takeStatusEvents()

        // Attention-button unplug: ABP + interrupt; nothing leaves until the guest powers off.
        try controller.requestUnplug(device: 0, mode: .attentionButton)
        #expect(guest.status.contains(.attentionButtonPressed))
        #expect(irq.messages.count == 4)
        #expect(controller.takeEvents().isEmpty)
        #expect(throws: HotPlugError.unplugInProgress(controller: "p", device: 0)) {
            try controller.requestUnplug(device: 0, mode: .attentionButton)
        }
        _ = guest.takeStatusEvents()
        // pciehp: blink, then power off, then indicator off.
        guest.command(PCIExpressSlotControl(rawValue: PCIExpressIndicator.blink.rawValue << 8), mask: .powerIndicatorControl)
        guest.command(.powerControllerOff, mask: .powerControllerOff)
        #expect(controller.takeEvents().isEmpty)
        guest.command(PCIExpressSlotControl(rawValue: PCIExpressIndicator.off.rawValue << 8), mask: .powerIndicatorControl)
        #expect(controller.takeEvents() == [.ejected(device: 0)])
        #expect(!guest.status.contains(.presenceDetected))
        #expect(guest.status.contains(.presenceDetectChanged))
        #expect(!guest.linkActive)
        #expect(throws: HotPlugError.slotEmpty(controller: "p", device: 0)) {
            try controller.requestUnplug(device: 0, mode: .attentionButton)
        }
    }

    @Test func surpriseRemovalEjectsAtOnce() throws {
        let (port, irq, guest) = try rig("pcie-root-port")
        let controller = try #require(port as? any HotPlugController)
        guest.enableMessages()
        guest.writeControl(guest.control.union(PCIeHPGuest.pciehpEnables))
        _ = guest.takeStatusEvents()
        try controller.plug(device: 0)
        _ = guest.takeStatusEvents()
        let before = irq.messages.count
        try controller.requestUnplug(device: 0, mode: .surprise)
        #expect(controller.takeEvents() == [.ejected(device: 0)])
        #expect(guest.status.contains([.presenceDetectChanged, .dataLinkLayerStateChanged]))
        #expect(!guest.status.contains(.presenceDetected))
        #expect(irq.messages.count == before + 1)
    }

    @Test func surpriseNeedsHotPlugSurprise() throws {
        let (port, _, _) = try rig("pcie-root-port", properties: ["x-hotplug-surprise": "off"])
        let controller = try #require(port as? any HotPlugController)
        #expect(port.configSnapshot().pciExpressSlotState?.features.contains(.hotPlugSurprise) == false)
        try controller.plug(device: 0)
        #expect(throws: HotPlugError.surpriseNotSupported(controller: "p")) {
            try controller.requestUnplug(device: 0, mode: .surprise)
        }
    }

    @Test func hotplugOffHasNoSlots() throws {
        let (port, _, _) = try rig("pcie-root-port", properties: ["hotplug": "off"])
        let controller = try #require(port as? any HotPlugController)
        #expect(controller.hotPlugSlots.isEmpty)
        #expect(throws: HotPlugError.noSuchSlot(controller: "p", device: 0)) { try controller.plug(device: 0) }
    }

    @Test func intxLevelWhileMessagesAreOff() throws {
        let (port, irq, guest) = try rig("ioh3420")
        let controller = try #require(port as? any HotPlugController)
        guest.writeControl(guest.control.union([.hotPlugInterruptEnable, .presenceDetectChangedEnable]))
        // No CCIE: the command completes silently.
        #expect(!irq.intxLevel)
        _ = guest.takeStatusEvents()
        try controller.plug(device: 0)
        #expect(irq.intxLevel)
        #expect(port.configSnapshot().status.contains(.interrupt))
        #expect(irq.messages.isEmpty)
        // Level stays high until the event is acknowledged.
        _ = port.configRead(guest.exp + 0x1A, width: .word)
        #expect(irq.intxLevel)
        guest.ack(.presenceDetectChanged)
        #expect(!irq.intxLevel)
        #expect(!port.configSnapshot().status.contains(.interrupt))
        #expect(irq.intx == [true, false])
    }

    @Test func downstreamPortHasNoINTx() throws {
        let (port, irq, guest) = try rig("xio3130-downstream")
        let controller = try #require(port as? any HotPlugController)
        guest.writeControl(guest.control.union([.hotPlugInterruptEnable, .presenceDetectChangedEnable]))
        try controller.plug(device: 0)
        #expect(irq.intx.isEmpty)
        #expect(irq.messages.isEmpty)
    }

    @Test func maskedMSIIsDeliveredOnUnmask() throws {
        let (port, irq, guest) = try rig("ioh3420")
        let controller = try #require(port as? any HotPlugController)
        guest.enableMessages()
        let msi = try #require(port.configSnapshot().msiState)
        _ = port.configWrite(msi.offset + 0x0C, width: .dword, value: 1)  // mask vector 0
        guest.writeControl(guest.control.union([.hotPlugInterruptEnable, .presenceDetectChangedEnable]))
        try controller.plug(device: 0)
        #expect(irq.messages.isEmpty)
        _ = port.configWrite(msi.offset + 0x0C, width: .dword, value: 0)
        #expect(irq.messages == [Self.expected])
    }

    @Test func guestCancelsButtonUnplug() throws {
        let (port, _, guest) = try rig("pcie-root-port")
        let controller = try #require(port as? any HotPlugController)
        try controller.plug(device: 0)
        guest.command(PCIExpressSlotControl(rawValue: PCIExpressIndicator.on.rawValue << 8),
                      mask: [.powerControllerOff, .powerIndicatorControl])
        #expect(controller.takeEvents() == [.poweredOn(device: 0)])
        try controller.requestUnplug(device: 0, mode: .attentionButton)
        guest.command(PCIExpressSlotControl(rawValue: PCIExpressIndicator.blink.rawValue << 8), mask: .powerIndicatorControl)
        guest.command(PCIExpressSlotControl(rawValue: PCIExpressIndicator.on.rawValue << 8), mask: .powerIndicatorControl)
        #expect(controller.takeEvents() == [.unplugCancelled(device: 0)])
        // A new request is accepted again.
        try controller.requestUnplug(device: 0, mode: .attentionButton)
    }

    @Test func interlockControlTogglesInterlockStatus() throws {
        let (_, _, guest) = try rig("pcie-root-port")
        guest.writeControl(guest.control.union(.electromechanicalInterlockControl))
        #expect(guest.status.contains(.electromechanicalInterlockEngaged))
        #expect(!guest.control.contains(.electromechanicalInterlockControl))
        guest.writeControl(guest.control.union(.electromechanicalInterlockControl))
        #expect(!guest.status.contains(.electromechanicalInterlockEngaged))
    }

    @Test(arguments: ["pcie-root-port", "ioh3420", "xio3130-downstream"])
    func hostileSlotWritesKeepReadOnlyBits(_ driver: String) throws {
        let (port, _, guest) = try rig(driver)
        let controller = try #require(port as? any HotPlugController)
        try controller.plug(device: 0)
        let capabilities = port.configRead(guest.exp + 0x14, width: .dword)
        var seed: UInt32 = 0x1234_5678
        for i in 0..<2000 {
            seed = seed &* 1_664_525 &+ 1_013_904_223
            let offset = guest.exp + 0x14 + Int(seed >> 28) % 8
            let width: AccessWidth = [.byte, .word, .dword][i % 3]
            _ = port.configWrite(offset, width: width, value: seed)
            _ = controller.takeEvents()
            #expect(port.configRead(guest.exp + 0x14, width: .dword) == capabilities)
            // Presence is physical: only plug/unplug change it.
            let present = controller.hotPlugSlots.isEmpty ? false : guest.status.contains(.presenceDetected)
            if !present {
                try controller.plug(device: 0)
            }
        }
        #expect(guest.status.contains(.presenceDetected))
        #expect(guest.status.isDisjoint(with: [.mrlOpen]))
    }

    @Test func resetKeepsAPresentDevicePowered() throws {
        let (port, _, guest) = try rig("pcie-root-port")
        let controller = try #require(port as? any HotPlugController)
        try controller.plug(device: 0)
        port.reset()
        #expect(guest.status.contains(.presenceDetected))
        #expect(!guest.status.contains(.presenceDetectChanged))
        #expect(!guest.control.contains(.powerControllerOff))
        #expect(guest.linkActive)
    }
}
