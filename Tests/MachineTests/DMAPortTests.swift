import Chipset
import Foundation
import GuestMemory
import Interrupts
import Machine
import PCI
import Synchronization
import Testing
import VMMBase

/// The bus-master port a placed function gets: gated by Bus Master Enable (PCI Local Bus spec,
/// Command register bit 2), bounds-checked against guest RAM, MSIs as dword writes into the
/// interrupt window. What a DMA write leaves in RAM is read back through the CPU's view of
/// memory (`readMemory`, the qtest path), not through the port.
@Suite struct DMAPortTests {
    static let ramSize: UInt64 = 128 << 20

    /// A test device on bus 0 (slot 5) and one behind a root port, after firmware (which sets
    /// Bus Master Enable on functions with BARs, as SeaBIOS does).
    func machine(memorySize: UInt64 = ramSize) throws -> (Machine, ECAMConfigCycles) {
        let machine = try Machine(MachineConfiguration(memorySize: memorySize, devices: try [
            "pci-testdev,id=dev,addr=5", "pcie-root-port,id=rp1,chassis=1,slot=1,addr=6", "pci-testdev,id=leaf,bus=rp1",
        ].map(DeviceSpec.init(parsing:))))
        try machine.runFirmware()
        return (machine, ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase))
    }

    func port(_ machine: Machine, _ id: String) throws -> any DMAPort {
        let placed = try #require(machine.device(id: id))
        return try #require(machine.dmaPort(of: placed))
    }

    func setBusMaster(_ ecam: ECAMConfigCycles, bus: UInt8 = 0, device: UInt8, _ on: Bool) {
        let command = ecam.read(bus: bus, devfn: device << 3, offset: Reg.command, width: .word)
        ecam.write(bus: bus, devfn: device << 3, offset: Reg.command, width: .word,
                   value: on ? command | 0x4 : command & ~0x4)
    }

    @Test func busMasterEnableGatesEveryAccessAtTheTimeOfAccess() throws {
        let (machine, ecam) = try machine()
        let dma = try port(machine, "dev")
        setBusMaster(ecam, device: 5, false)
        #expect(throws: DMAError.busMasterDisabled(function: "dev")) { try dma.write(at: 0x10_0000, bytes: [1, 2, 3, 4]) }
        #expect(throws: DMAError.busMasterDisabled(function: "dev")) { try dma.read(at: 0x10_0000, count: 4) }
        #expect(machine.readMemory(0x10_0000, count: 4) == [0, 0, 0, 0])
        setBusMaster(ecam, device: 5, true)
        try dma.write(at: 0x10_0000, bytes: [1, 2, 3, 4])
        #expect(machine.readMemory(0x10_0000, count: 4) == [1, 2, 3, 4])
        machine.writeMemory(0x20_0000, [9, 8, 7])
        #expect(try dma.read(at: 0x20_0000, count: 3) == [9, 8, 7])
        // Behind a root port: the port's own Bus Master Enable is not the function's.
        let leaf = try port(machine, "leaf")
        try leaf.write(at: 0x30_0000, bytes: [0x5A])
        setBusMaster(ecam, bus: 1, device: 0, false)
        #expect(throws: DMAError.busMasterDisabled(function: "leaf")) { try leaf.write(at: 0x30_0000, bytes: [0]) }
        #expect(machine.readMemory(0x30_0000, count: 1) == [0x5A])
    }

    @Test func accessesOutsideRAMOrWrappingAreRefusedWithoutTouchingMemory() throws {
        let (machine, _) = try machine()
        let dma = try port(machine, "dev")
        let end = Self.ramSize
        #expect(throws: DMAError.memory(.unmapped(address: end, length: 1))) { try dma.write(at: end, bytes: [1]) }
        // Straddling the end of RAM: nothing of it is written.
        #expect(throws: DMAError.memory(.unmapped(address: end - 2, length: 4))) { try dma.write(at: end - 2, bytes: [1, 2, 3, 4]) }
        #expect(machine.readMemory(end - 2, count: 2) == [0, 0])
        // MMIO (ECAM) is not RAM for a bus master here.
        #expect(throws: DMAError.memory(.unmapped(address: Q35Layout.standard.ecamBase, length: 4))) {
            try dma.read(at: Q35Layout.standard.ecamBase, count: 4)
        }
        // address + length past 2^64: a typed error, no trap.
        #expect(throws: DMAError.memory(.addressOverflow(address: .max - 1, length: 4))) { try dma.write(at: .max - 1, bytes: [1, 2, 3, 4]) }
        #expect(throws: DMAError.memory(.addressOverflow(address: .max, length: 2))) { try dma.read(at: .max, count: 2) }
        // The last byte of RAM is RAM.
        try dma.write(at: end - 1, bytes: [0xEE])
        #expect(machine.readMemory(end - 1, count: 1) == [0xEE])
    }

    @Test func ramAboveFourGiBIsWhereTheCPUSeesIt() throws {
        let low = Q35Layout.standard.lowMemoryLimit
        let (machine, _) = try machine(memorySize: low + (1 << 20))
        let dma = try port(machine, "dev")
        try dma.write(at: 1 << 32, bytes: [0xA5, 0x5A])
        #expect(machine.readMemory(1 << 32, count: 2) == [0xA5, 0x5A])
        // The hole between the top of low RAM and 4 GiB is not RAM.
        #expect(throws: DMAError.memory(.unmapped(address: low, length: 1))) { try dma.write(at: low, bytes: [1]) }
        #expect(throws: DMAError.memory(.unmapped(address: (1 << 32) + (1 << 20), length: 1))) {
            try dma.write(at: (1 << 32) + (1 << 20), bytes: [1])
        }
    }

    @Test func aDwordWriteToTheInterruptWindowIsAnMSI() throws {
        let (machine, _) = try machine()
        let dma = try port(machine, "leaf")
        machine.interrupts.clearEvents()
        try dma.write(at: 0xFEE0_1000, bytes: [0x41, 0x40, 0, 0])
        #expect(machine.interrupts.events == [.msi(MSIMessage(address: 0xFEE0_1000, data: 0x4041))])
        // Only dword writes are MSIs; reads and other sizes are refused.
        #expect(throws: DMAError.interruptWindow(address: 0xFEE0_0000, length: 2, isWrite: true)) {
            try dma.write(at: 0xFEE0_0000, bytes: [1, 2])
        }
        #expect(throws: DMAError.interruptWindow(address: 0xFEE0_0000, length: 4, isWrite: false)) {
            try dma.read(at: 0xFEE0_0000, count: 4)
        }
        #expect(throws: DMAError.interruptWindow(address: 0xFEDF_FFFE, length: 4, isWrite: true)) {
            try dma.write(at: 0xFEDF_FFFE, bytes: [1, 2, 3, 4])
        }
        #expect(machine.interrupts.events.count == 1)
    }

    /// MSI is a memory write (PCI Local Bus spec 6.8: a function may not send one with Bus
    /// Master Enable clear; QEMU drops it the same way through its bus-master address space).
    @Test func msiGoesThroughThePortAndIsDroppedWithBusMasterOff() throws {
        let machine = try Machine(MachineConfiguration(devices: [try DeviceSpec(parsing: "pci-testdev,id=msiNoMaster,addr=5")]))
        let report = try machine.runFirmware()
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        let bar1 = try #require(report.functions.first { $0.address.shortDescription == "00:05.0" }?.bars.first { $0.index == 1 }).range.base
        let placed = try #require(machine.device(id: "msiNoMaster"))
        let cap = try #require(placed.function.configSnapshot().capability(.msix)).offset
        let entry = bar1 + PCITestDevice.msixLayout.tableOffset + 16
        machine.mmioWrite(entry, width: .dword, value: 0xFEE0_0000)
        machine.mmioWrite(entry + 8, width: .dword, value: 0x61)
        machine.mmioWrite(entry + 12, width: .dword, value: 0)
        ecam.write(bus: 0, devfn: 5 << 3, offset: cap + 2, width: .word, value: 0x8000)
        machine.interrupts.clearEvents()

        setBusMaster(ecam, device: 5, false)
        machine.mmioWrite(bar1 + PCITestDevice.doorbell, width: .dword, value: 1)
        #expect(machine.interrupts.events.isEmpty)
        #expect(GuestErrorLog.recent.contains { $0.device == "msiNoMaster" && $0.message.contains("Bus Master Enable") })

        setBusMaster(ecam, device: 5, true)
        machine.mmioWrite(bar1 + PCITestDevice.doorbell, width: .dword, value: 1)
        #expect(machine.interrupts.events == [.msi(MSIMessage(address: 0xFEE0_0000, data: 0x61))])
    }

    @Test func anUnpluggedFunctionsPortRefusesEverything() throws {
        let (machine, _) = try machine()
        let placed = try #require(machine.device(id: "leaf"))
        let dma = try port(machine, "leaf")
        try dma.write(at: 0x1000, bytes: [1])
        try machine.unplug(id: "leaf", mode: .surprise)
        #expect(machine.dmaPort(of: placed) == nil)
        #expect(dma.requester == nil)
        #expect(throws: DMAError.disconnected) { try dma.write(at: 0x1000, bytes: [2]) }
        #expect(throws: DMAError.disconnected) { try dma.read(at: 0x1000, count: 1) }
        #expect(machine.readMemory(0x1000, count: 1) == [1])
    }

    /// A burst (one batch of a device's queue work) is admitted once: Bus Master Enable cleared
    /// inside it applies from the next access outside it, as a request already under way
    /// completes; a burst begun with it clear admits nothing; the grant is the port's own, so
    /// another port's accesses on the same thread are still checked.
    @Test func aBurstIsAdmittedOnceAndOnlyForItsOwnPort() throws {
        let (machine, ecam) = try machine()
        let dma = try port(machine, "dev"), leaf = try port(machine, "leaf")
        setBusMaster(ecam, bus: 1, device: 0, false)
        try dma.burst { () throws(DMAError) in
            try dma.write(at: 0x10_0000, bytes: [1])
            setBusMaster(ecam, device: 5, false)
            try dma.write(at: 0x10_0001, bytes: [2])
            #expect(throws: DMAError.busMasterDisabled(function: "leaf")) { try leaf.write(at: 0x30_0000, bytes: [3]) }
        }
        #expect(machine.readMemory(0x10_0000, count: 2) == [1, 2])
        #expect(machine.readMemory(0x30_0000, count: 1) == [0])
        #expect(throws: DMAError.busMasterDisabled(function: "dev")) { try dma.write(at: 0x10_0002, bytes: [4]) }
        dma.burst {
            #expect(throws: DMAError.busMasterDisabled(function: "dev")) { try dma.write(at: 0x10_0002, bytes: [4]) }
        }
        #expect(machine.readMemory(0x10_0002, count: 1) == [0])
        // Bounds are still checked per access inside a burst.
        setBusMaster(ecam, device: 5, true)
        dma.burst {
            #expect(throws: DMAError.self) { try dma.write(at: Self.ramSize - 1, bytes: [5, 6]) }
        }
    }

    /// An unplug's disconnect waits for a burst under way to end, then refuses everything.
    @Test func aDisconnectWaitsForABurstUnderWay() throws {
        let (machine, _) = try machine()
        let dma = try #require(try port(machine, "dev") as? BusMasterPort)
        let started = DispatchSemaphore(value: 0)
        let finished = Atomic<Bool>(false)
        let worker = Thread {
            dma.burst {
                started.signal()
                usleep(200_000)
                try? dma.write(at: 0x10_0000, bytes: [7])
                finished.store(true, ordering: .releasing)
            }
        }
        worker.start()
        started.wait()
        dma.disconnect { usleep(1000) }
        let burstEnded = finished.load(ordering: .acquiring)
        #expect(burstEnded, "disconnect returned while the burst was under way")
        #expect(machine.readMemory(0x10_0000, count: 1) == [7])
        #expect(throws: DMAError.disconnected) { try dma.write(at: 0x10_0000, bytes: [8]) }
    }
}
