import Chipset
import Interrupts
import Machine
import PCI
import Synchronization
import Testing
import VMMBase

/// Plays Linux pciehp against a root port through ECAM, as a guest would.
struct PCIeHotPlugGuest {
    let machine: Machine
    let ecam: ECAMConfigCycles
    let port: PCIAddress
    let cap: Int

    // Slot Control bits.
    static let abpe: UInt32 = 1 << 0, pdce: UInt32 = 1 << 3, ccie: UInt32 = 1 << 4, hpie: UInt32 = 1 << 5
    static let dllsce: UInt32 = 1 << 12, powerOff: UInt32 = 1 << 10
    static let powerIndicatorOn: UInt32 = 0b01 << 8, powerIndicatorOff: UInt32 = 0b11 << 8
    static let attentionOff: UInt32 = 0b11 << 6
    // Slot Status bits.
    static let abp: UInt32 = 1 << 0, pdc: UInt32 = 1 << 3, cc: UInt32 = 1 << 4, pds: UInt32 = 1 << 6, dllsc: UInt32 = 1 << 8

    init(machine: Machine, port: PCIAddress) throws {
        self.machine = machine
        self.port = port
        ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        let config = try #require(machine.devices.first { $0.busName == "pcie.0" && $0.devfn == port.devfn }).function.configSnapshot()
        cap = try #require(config.capability(.standard(CapabilityID.pciExpress))).offset
    }

    func read(_ offset: Int, _ width: AccessWidth) -> UInt32 { ecam.read(bus: port.bus, devfn: port.devfn, offset: offset, width: width) }
    func write(_ offset: Int, _ width: AccessWidth, _ value: UInt32) { ecam.write(bus: port.bus, devfn: port.devfn, offset: offset, width: width, value: value) }

    var slotStatus: UInt32 { read(cap + 0x1A, .word) }
    var slotControl: UInt32 { read(cap + 0x18, .word) }
    func setSlotControl(_ value: UInt32) { write(cap + 0x18, .word, value) }
    /// Clears the pending events among `bits` by writing back exactly those, as pciehp's
    /// interrupt handler does (a write that also sets events not pending is undone, as on QEMU).
    func acknowledge(_ bits: UInt32) { write(cap + 0x1A, .word, bits & read(cap + 0x1A, .word)) }
    var linkActive: Bool { read(cap + 0x12, .word) & (1 << 13) != 0 }

    /// Enables MSI-X vector 0 of the port (table in BAR0) with the given data.
    func enableMSIX(data: UInt32) throws {
        let config = try #require(machine.devices.first { $0.busName == "pcie.0" && $0.devfn == port.devfn }).function.configSnapshot()
        let msix = try #require(config.capability(.msix)).offset
        let bar0 = UInt64(read(Reg.bar0, .dword) & ~0xF)
        machine.mmioWrite(bar0, width: .dword, value: 0xFEE0_0000)
        machine.mmioWrite(bar0 + 8, width: .dword, value: UInt64(data))
        machine.mmioWrite(bar0 + 12, width: .dword, value: 0)
        write(msix + 2, .word, 0x8000)
    }

    /// pciehp's init: events on, power indicator and power as the slot's presence says.
    func enableNotifications() {
        setSlotControl(Self.abpe | Self.pdce | Self.ccie | Self.hpie | Self.dllsce | Self.attentionOff | Self.powerIndicatorOff | Self.powerOff)
        acknowledge(0x1FF)
    }

    func powerOn() {
        setSlotControl((slotControl & ~(Self.powerOff | (0b11 << 8))) | Self.powerIndicatorOn)
    }

    func powerOff() {
        setSlotControl((slotControl & ~(0b11 << 8)) | Self.powerOff | Self.powerIndicatorOff)
    }
}

final class DeletedEvents: Sendable {
    let ids = Mutex<[String]>([])
    func attach(_ machine: Machine) {
        _ = machine.addEventListener { [self] event in
            if case .deviceDeleted(let id, let path) = event { ids.withLock { $0.append(id ?? path) } }
        }
    }
}

@Suite struct HotPlugTests {
    func machineWithRootPort(_ extra: String = "") throws -> (Machine, PCIeHotPlugGuest) {
        let machine = try Machine(MachineConfiguration(devices: [
            try DeviceSpec(parsing: "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x2" + extra),
        ]))
        try machine.runFirmware()
        return (machine, try PCIeHotPlugGuest(machine: machine, port: PCIAddress(bus: 0, device: 2, function: 0)!))
    }

    func msiCount(_ machine: Machine) -> Int {
        machine.interrupts.events.filter { if case .msi = $0 { true } else { false } }.count
    }

    @Test func plugRaisesPresenceAndLinkEventsWithOneInterrupt() throws {
        let (machine, guest) = try machineWithRootPort()
        try guest.enableMSIX(data: 0x51)
        guest.enableNotifications()
        machine.interrupts.clearEvents()
        try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=t1,bus=rp1"))
        #expect(guest.slotStatus & (PCIeHotPlugGuest.pdc | PCIeHotPlugGuest.pds) == PCIeHotPlugGuest.pdc | PCIeHotPlugGuest.pds)
        #expect(guest.slotStatus & PCIeHotPlugGuest.dllsc != 0 && guest.linkActive)
        #expect(machine.interrupts.events == [.msi(MSIMessage(address: 0xFEE0_0000, data: 0x51))])
        // The slot's power is off: config cycles do not reach the device yet (QEMU hides it too).
        let secondary = UInt8(guest.read(Reg.secondaryBus, .byte))
        #expect(guest.ecam.read(bus: secondary, devfn: 0, offset: 0, width: .dword) == 0xFFFF_FFFF)
        // Acknowledging does not raise another interrupt; powering on completes a command.
        guest.acknowledge(0x1FF)
        guest.powerOn()
        #expect(guest.slotStatus & PCIeHotPlugGuest.cc != 0)
        #expect(msiCount(machine) == 2)
        // Powered, the device answers behind the port at its secondary bus.
        #expect(guest.ecam.read(bus: secondary, devfn: 0, offset: 0, width: .dword) == 0x0005_1B36)
    }

    @Test func attentionButtonUnplugCompletesWhenTheGuestPowersOff() throws {
        let (machine, guest) = try machineWithRootPort()
        let deleted = DeletedEvents()
        deleted.attach(machine)
        try guest.enableMSIX(data: 0x52)
        guest.enableNotifications()
        try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=t1,bus=rp1"))
        guest.acknowledge(0x1FF)
        guest.powerOn()
        guest.acknowledge(0x1FF)
        try machine.unplug(id: "t1", mode: .attentionButton)
        #expect(guest.slotStatus & PCIeHotPlugGuest.abp != 0)
        #expect(machine.device(id: "t1") != nil)  // still there until the guest lets go
        #expect(deleted.ids.withLock { $0 }.isEmpty)
        guest.acknowledge(PCIeHotPlugGuest.abp)
        guest.powerOff()
        #expect(machine.device(id: "t1") == nil)
        #expect(deleted.ids.withLock { $0 } == ["t1"])
        let secondary = UInt8(guest.read(Reg.secondaryBus, .byte))
        #expect(guest.ecam.read(bus: secondary, devfn: 0, offset: 0, width: .dword) == 0xFFFF_FFFF)
    }

    /// Cold plug as QEMU 10 shows it through qtest (present, powered, link up, nothing latched),
    /// and device_del of cold-plugged devices: a switch with a downstream port and a device
    /// behind it leaves whole when the guest powers the slot off (DEVICE_DELETED for each id,
    /// as QEMU reports them); x-surprise takes a cold-plugged device at once.
    @Test func coldPluggedDevicesAndSubtreesCanBeDeleted() throws {
        let machine = try Machine(MachineConfiguration(devices: try [
            "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x2", "x3130-upstream,id=up,bus=rp1",
            "xio3130-downstream,id=dp,bus=up,chassis=2,slot=1", "pci-testdev,id=td,bus=dp",
            "pcie-root-port,id=rp2,bus=pcie.0,chassis=1,slot=2,addr=0x3", "pci-testdev,id=td2,bus=rp2",
        ].map(DeviceSpec.init(parsing:))))
        try machine.runFirmware()
        let deleted = DeletedEvents()
        deleted.attach(machine)
        let guest = try PCIeHotPlugGuest(machine: machine, port: PCIAddress(bus: 0, device: 2, function: 0)!)
        #expect(guest.slotStatus == PCIeHotPlugGuest.pds)
        #expect(guest.linkActive)
        #expect(guest.slotControl & PCIeHotPlugGuest.powerOff == 0)

        try machine.unplug(id: "up", mode: .attentionButton)
        #expect(guest.slotStatus & PCIeHotPlugGuest.abp != 0)
        #expect(deleted.ids.withLock { $0 }.isEmpty)
        guest.acknowledge(PCIeHotPlugGuest.abp)
        guest.powerOff()
        #expect(Set(deleted.ids.withLock { $0 }) == ["up", "dp", "td"])
        #expect(["up", "dp", "td"].allSatisfy { machine.device(id: $0) == nil })
        #expect(!guest.linkActive)

        try machine.unplug(id: "td2", mode: .surprise)
        #expect(deleted.ids.withLock { $0 }.last == "td2")
        #expect(machine.device(id: "td2") == nil)
    }

    @Test func surpriseUnplugIsImmediate() throws {
        let (machine, guest) = try machineWithRootPort()
        let deleted = DeletedEvents()
        deleted.attach(machine)
        guest.enableNotifications()
        try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=t1,bus=rp1"))
        guest.acknowledge(0x1FF)
        try machine.unplug(id: "t1", mode: .surprise)
        #expect(deleted.ids.withLock { $0 } == ["t1"])
        #expect(guest.slotStatus & PCIeHotPlugGuest.pdc != 0)
        #expect(guest.slotStatus & PCIeHotPlugGuest.pds == 0)
        #expect(!guest.linkActive)
    }

    @Test func surpriseUnplugNeedsTheCapability() throws {
        let (machine, _) = try machineWithRootPort(",x-hotplug-surprise=off")
        try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=t1,bus=rp1"))
        #expect { try machine.unplug(id: "t1", mode: .surprise) } throws: { "\($0)".contains("surprise") }
        #expect(machine.device(id: "t1") != nil)
    }

    @Test func plugErrorsNameTheProblemAndChangeNothing() throws {
        let (machine, _) = try machineWithRootPort()
        let before = machine.devices.count
        #expect { try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=x,bus=pcie.0")) }
            throws: { "\($0)".contains("Bus 'pcie.0' does not support hotplugging") }
        #expect { try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=x,bus=rp1,addr=3")) }
            throws: { "\($0)".contains("not hot-pluggable") }
        #expect { try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=x,bus=nowhere")) }
            throws: { "\($0)".contains("no bus named 'nowhere'") }
        try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=a,bus=rp1"))
        #expect { try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=b,bus=rp1")) }
            throws: { "\($0)".contains("no free slot") }
        #expect { try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=b,bus=rp1,addr=0")) }
            throws: { "\($0)".contains("already used by a") }
        #expect { try machine.unplug(id: "ghost") } throws: { "\($0)".contains("Device 'ghost' not found") }
        #expect(machine.devices.count == before + 1)
        #expect { try machine.add(DeviceSpec(parsing: "pcie-root-port,id=rp2,chassis=1,slot=1")) }
            throws: { "\($0)".contains("chassis 1 slot 1 is already used by 'rp1'") }
        #expect { try machine.add(DeviceSpec(parsing: "pcie-root-port,id=rp3,chassis=300")) }
            throws: { "\($0)".contains("chassis") }
    }

    /// Plug and unplug a thousand times: nothing may accumulate.
    @Test func plugUnplugLoopLeavesNothingBehind() throws {
        let (machine, guest) = try machineWithRootPort()
        guest.enableNotifications()
        let devices = machine.devices.count
        let outputs = machine.connectedInterruptOutputs
        for i in 0..<1000 {
            try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=t\(i),bus=rp1"))
            // The guest raises INTx from the new device now and then; unplug must release it.
            if i % 100 == 0 {
                let secondary = UInt8(guest.read(Reg.secondaryBus, .byte))
                guest.ecam.write(bus: secondary, devfn: 0, offset: 0x14, width: .dword, value: 0xC000_0000)
                guest.ecam.write(bus: secondary, devfn: 0, offset: Reg.command, width: .word, value: 0x2)
            }
            guest.acknowledge(0x1FF)
            guest.powerOn()  // pciehp powers a slot on when presence appears
            guest.acknowledge(0x1FF)
            try machine.unplug(id: "t\(i)", mode: i % 2 == 0 ? .surprise : .attentionButton)
            guest.acknowledge(0x1FF)
            guest.powerOff()
        }
        #expect(machine.devices.count == devices)
        #expect(machine.connectedInterruptOutputs == outputs)
        // The port itself holds INTx while its last command-completed event is pending.
        guest.acknowledge(0x1FF)
        #expect(machine.assertedINTxLines.isEmpty)
        // The same id can be used again: nothing remembers the old devices.
        try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=t0,bus=rp1"))
    }

    @Test func failedEnumerationLeavesBusNumbersAsTheyWere() throws {
        var config = MachineConfiguration(devices: (0..<4).map {
            DeviceSpec(driver: "pci-bridge", id: "b\($0)", devfn: UInt8($0 + 1) << 3)
        } + (0..<4).map { DeviceSpec(driver: "pci-testdev", id: "t\($0)", bus: "b\($0)") })
        config.layout.pciMemory64Last = config.layout.pciMemory64Base + (2 << 20) - 1
        let machine = try Machine(config)
        #expect(throws: EnumerationError.self) { try machine.runFirmware() }
        for i in 1...4 {
            let numbers = machine.rootComplex.configRead(bus: 0, devfn: UInt8(i) << 3, offset: Reg.primaryBus, width: .dword)
            #expect(numbers & 0xFF_FFFF == 0, "bridge \(i) kept bus numbers \(String(numbers, radix: 16))")
        }
    }
}
