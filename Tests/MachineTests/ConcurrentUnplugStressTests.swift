import Chipset
import Foundation
import Interrupts
import Machine
import PCI
import Synchronization
import Testing
import VMMBase

/// vCPU-like threads hammer one pci-testdev through every entry point a vCPU exit or the
/// device itself uses (ECAM and CF8/CFC config cycles, BAR MMIO, the INTx doorbell, its DMA
/// port and an MSI through it) while the test thread plugs and unplugs it, cycle after cycle,
/// through root ports, a switch downstream port and a PCI bridge slot: surprise removal and
/// the attention button (native), or the guest's ACPI eject. Per cycle, once unplug has
/// returned no access reaches the removed function (its own access counter stays put while the
/// threads keep hammering its old addresses). At the end no GSI is left high, nothing is left
/// placed or connected, bridges keep their bus numbers and windows, an empty slot master-aborts,
/// and fds and RSS are where they were after warm-up. `make stress` runs 10,000 cycles per
/// flavour (SWITCHYARD_STRESS_CYCLES); `make test` the short version; `make stress-tsan` the
/// same under ThreadSanitizer.
@Suite(.serialized) struct ConcurrentUnplugStressTests {
    static var cycles: Int { ProcessInfo.processInfo.environment["SWITCHYARD_STRESS_CYCLES"].flatMap(Int.init) ?? 100 }
    static let warmUpCycles = 40
    static let hammers = 3

    static let topology = [
        "pcie-root-port,id=rp1,chassis=1,slot=1", "ioh3420,id=rp2,chassis=1,slot=2",
        "pcie-root-port,id=rp3,chassis=1,slot=3", "x3130-upstream,id=up1,bus=rp3",
        "xio3130-downstream,id=dp1,bus=up1,chassis=2,slot=1",
        "pci-bridge,id=br1,chassis_nr=5",
    ]
    static let slots = ["rp1", "rp2", "dp1", "br1"]
    /// Natively, pciehp's slots only: an SHPC slot would need SHPC's command set played as well;
    /// the ACPI flavour covers the bridge slot.
    static func slots(_ flavour: Flavour) -> [String] { flavour == .native ? ["rp1", "rp2", "dp1"] : slots }
    /// A bridge slot other than the one the SHPC numbers first, so its devfn is not 0.
    static let bridgeDevfn: UInt8 = 3 << 3

    enum Flavour: String, CaseIterable, CustomTestStringConvertible {
        /// pciehp's surprise removal and the attention button; SHPC's button on the bridge.
        case native
        /// device_del asks through GPE0; the guest's `_EJ0` (B0EJ) completes it.
        case acpi
        var testDescription: String { rawValue }
    }

    /// What the hammers aim at: the device's config address, its BAR 1 and its DMA port.
    struct Target: Sendable {
        let bus: UInt8
        let devfn: UInt8
        let bar: UInt64
        let dma: (any DMAPort)?
    }

    /// Where the DMA hammers write: guest RAM no device owns.
    static let dmaScratch: UInt64 = 0x10_0000

    final class Hammers: Sendable {
        let target = Mutex<Target?>(nil)
        let rounds = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let finished = DispatchGroup()

        func start(_ machine: Machine) {
            for index in 0..<ConcurrentUnplugStressTests.hammers {
                finished.enter()
                let thread = Thread { [self] in
                    let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
                    var step = index
                    while !stop.load(ordering: .relaxed) {
                        if let target = target.withLock({ $0 }) {
                            Self.access(machine, ecam: ecam, target, step: step, usesPorts: index == 0)
                        }
                        step &+= 1
                        rounds.add(1, ordering: .relaxed)
                    }
                    finished.leave()
                }
                thread.name = "stress-vcpu\(index)"
                thread.start()
            }
        }

        /// One access as a guest vCPU (or the device's own DMA engine) would make it. Only
        /// hammer 0 uses CF8/CFC, whose address latch is shared (a guest serializes it too).
        static func access(_ machine: Machine, ecam: ECAMConfigCycles, _ t: Target, step: Int, usesPorts: Bool) {
            switch step % 7 {
            case 0:
                _ = ecam.read(bus: t.bus, devfn: t.devfn, offset: 0, width: .dword)
            case 1:
                ecam.write(bus: t.bus, devfn: t.devfn, offset: Reg.interruptLine, width: .byte, value: UInt32(step & 0xFF))
            case 2:
                machine.mmioWrite(t.bar, width: .dword, value: UInt64(step & 0xFFFF_FFFF))
                _ = machine.mmioRead(t.bar, width: .dword)
            case 3:
                machine.mmioWrite(t.bar + PCITestDevice.doorbell, width: .dword, value: 0)  // INTx: MSI-X is off
            case 4:
                machine.mmioWrite(t.bar + PCITestDevice.intxClear, width: .dword, value: 0)
            case 5:
                var word = UInt64(step)
                try? withUnsafeBytes(of: &word) { try t.dma?.write(at: dmaScratch + UInt64(step % 8) * 8, from: $0) }
                try? withUnsafeMutableBytes(of: &word) { try t.dma?.read(at: dmaScratch, into: $0) }
                var msi = UInt32(0x30).littleEndian  // vector 0x30 to APIC 0
                try? withUnsafeBytes(of: &msi) { try t.dma?.write(at: 0xFEE0_0000, from: $0) }
            default:
                guard usesPorts else {
                    _ = ecam.read(bus: t.bus, devfn: t.devfn, offset: Reg.command, width: .word)
                    return
                }
                let address = 0x8000_0000 | UInt64(t.bus) << 16 | UInt64(t.devfn) << 8
                machine.portWrite(0xCF8, width: .dword, value: address | UInt64(Reg.command))
                _ = machine.portRead(0xCFC, width: .word)
                machine.portWrite(0xCF8, width: .dword, value: address | UInt64(Reg.interruptLine & ~3))
                machine.portWrite(0xCFC, width: .byte, value: UInt64(step & 0xFF))
            }
        }

        func join() {
            stop.store(true, ordering: .relaxed)
            finished.wait()
        }
    }

    struct StressFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// The machine as after firmware, with ACPI's PM block decoding (PMBASE 0x600) and GPE0
    /// bit 1 enabled in the ACPI flavour, as Linux leaves them.
    static func machine(_ flavour: Flavour) throws -> Machine {
        let machine = try Machine(MachineConfiguration(memorySize: 64 << 20,
                                                       devices: try topology.map { try DeviceSpec(parsing: $0) },
                                                       acpiPCIHotplug: flavour == .acpi))
        try machine.runFirmware()
        if flavour == .acpi {
            let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
            ecam.write(bus: 0, devfn: 0x1F << 3, offset: 0x40, width: .dword, value: 0x601)
            ecam.write(bus: 0, devfn: 0x1F << 3, offset: 0x44, width: .byte, value: 0x80)
            machine.portWrite(0x628, width: .byte, value: 0x02)
        }
        return machine
    }

    /// Per slot: the bus behind it and its memory window, as firmware programmed them, and
    /// where its Slot Control register is (PCIe ports).
    struct SlotBridge: Equatable {
        let busNumbers: BridgeBusNumbers
        let windows: BridgeWindows
        let devfn: UInt8
        let slotControl: Int?

        init(_ machine: Machine, _ slot: String) throws {
            let placed = try #require(machine.device(id: slot))
            let config = placed.function.configSnapshot()
            busNumbers = config.busNumbers
            windows = config.programmedWindows
            devfn = placed.devfn
            slotControl = config.capability(.standard(CapabilityID.pciExpress)).map { $0.offset + 0x18 }
        }

        /// pciehp switching the slot's power, the power indicator with it (PCIe 7.5.3.10).
        func setPower(_ on: Bool, ecam: ECAMConfigCycles) throws {
            let offset = try #require(slotControl)
            let control = ecam.read(bus: busNumbers.primary, devfn: devfn, offset: offset, width: .word)
            let powerOff: UInt32 = 1 << 10, indicator: UInt32 = 0b11 << 8
            let value = (control & ~(powerOff | indicator)) | (on ? 0b01 << 8 : powerOff | 0b11 << 8)
            ecam.write(bus: busNumbers.primary, devfn: devfn, offset: offset, width: .word, value: value)
        }
    }

    /// One cycle: plug into `slot`, set it up as a guest driver would (BAR 1 at the start of the
    /// slot's memory window, memory decode and bus mastering on), let the hammers reach it,
    /// unplug it, then let the hammers keep aiming at its old addresses and check none of that
    /// reached it. Returns false when an access reached it after unplug returned.
    static func cycle(_ machine: Machine, _ flavour: Flavour, _ i: Int, hammers: Hammers, ecam: ECAMConfigCycles,
                      bridges: [String: SlotBridge]) throws -> Bool {
        let slots = slots(flavour)
        let slot = slots[i % slots.count]
        let id = "s\(i)"
        let devfn: UInt8 = slot == "br1" ? bridgeDevfn : 0
        let placed = try machine.hotPlug(DeviceSpec(driver: "pci-testdev", id: id, bus: slot, devfn: devfn))
        guard let device = placed.function as? PCITestDevice else { throw StressFailure("\(id) is not a PCITestDevice") }
        let bridge = try #require(bridges[slot])
        switch flavour {
        case .native: try bridge.setPower(true, ecam: ecam)
        case .acpi: acknowledgeGPE(machine)
        }
        let bus = bridge.busNumbers.secondary
        let bar = try #require(bridge.windows.memory, "\(slot) has no memory window").base
        ecam.write(bus: bus, devfn: devfn, offset: Reg.bar0 + 4, width: .dword, value: UInt32(bar))
        ecam.write(bus: bus, devfn: devfn, offset: Reg.command, width: .word,
                   value: UInt32(CommandBits([.memory, .busMaster]).rawValue))
        guard ecam.read(bus: bus, devfn: devfn, offset: 0, width: .dword) == 0x0005_1B36 else {
            throw StressFailure("cycle \(i): \(id) in \(slot) does not answer config cycles at \(bus):\(devfn)")
        }
        hammers.target.withLock { $0 = Target(bus: bus, devfn: devfn, bar: bar, dma: machine.dmaPort(of: placed)) }
        try waitUntil("cycle \(i): the hammers reach \(id)") { device.accessCount > 16 }

        switch flavour {
        case .native where i % 2 == 0:
            try machine.unplug(id: id, mode: .surprise)
        case .native:
            // The button, then pciehp powering the slot off, which completes the removal.
            try machine.unplug(id: id, mode: .attentionButton)
            try bridge.setPower(false, ecam: ecam)
        case .acpi:
            try machine.unplug(id: id)
            acknowledgeGPE(machine)
            let bsel = try #require((0..<UInt32(16)).first { machine.legacy.acpiHotPlug.bus(bsel: $0)?.name == slot })
            machine.portWrite(0xCD0, width: .dword, value: UInt64(bsel))
            machine.portWrite(0xCC8, width: .dword, value: 1 << UInt64(devfn >> 3))  // _EJ0
        }
        guard machine.device(id: id) == nil else { throw StressFailure("cycle \(i): \(id) in \(slot) is still there after its removal") }
        let atRemoval = device.accessCount
        let rounds = hammers.rounds.load(ordering: .relaxed)
        try waitUntil("cycle \(i): the hammers keep going") {
            hammers.rounds.load(ordering: .relaxed) > rounds + 4 * ConcurrentUnplugStressTests.hammers * 7
        }
        let after = device.accessCount
        if after != atRemoval {
            Issue.record("cycle \(i): \(after - atRemoval) accesses reached \(id) (\(slot), \(flavour)) after its removal returned")
            return false
        }
        return true
    }

    /// The guest's GPE handler: GPE0 status bit 1 cleared, so the SCI (GSI 9) goes low.
    static func acknowledgeGPE(_ machine: Machine) { machine.portWrite(0x620, width: .byte, value: 0x02) }

    static func waitUntil(_ what: String, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(10)
        while !condition() {
            guard Date() < deadline else { throw StressFailure("timed out: \(what)") }
            sched_yield()
        }
    }

    @Test(arguments: Flavour.allCases)
    func unplugUnderConcurrentAccessLeavesNothingBehind(_ flavour: Flavour) throws {
        let machine = try Self.machine(flavour)
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        var bridges: [String: SlotBridge] = [:]
        for slot in Self.slots(flavour) { bridges[slot] = try SlotBridge(machine, slot) }
        let deleted = Mutex(0)
        _ = machine.addEventListener { event in
            if case .deviceDeleted = event { deleted.withLock { $0 += 1 } }
        }
        let highBefore = (0..<Machine.ioapicInputs).filter { machine.interrupts.isHigh(GSI($0)) }
        let hammers = Hammers()
        hammers.start(machine)
        defer { hammers.join() }

        let started = Date()
        var violations = 0
        for i in 0..<Self.warmUpCycles {
            if try !Self.cycle(machine, flavour, i, hammers: hammers, ecam: ecam, bridges: bridges) { violations += 1 }
        }
        let fds = HotPlugSoakTests.openFileDescriptors(), rss = HotPlugSoakTests.residentKiB()
        let cycles = Self.cycles
        for i in Self.warmUpCycles..<(Self.warmUpCycles + cycles) {
            if try !Self.cycle(machine, flavour, i, hammers: hammers, ecam: ecam, bridges: bridges) { violations += 1 }
            if violations > 5 { break }
        }
        hammers.join()
        let seconds = Date().timeIntervalSince(started)

        #expect(violations == 0)
        #expect(deleted.withLock { $0 } == Self.warmUpCycles + cycles, "one DEVICE_DELETED per cycle")
        // No INTx left asserted: neither by the machine's accounting nor at the irqchip input.
        #expect(machine.assertedINTxLines.isEmpty, "asserted after the last unplug: \(machine.assertedINTxLines)")
        let highAfter = (0..<Machine.ioapicInputs).filter { machine.interrupts.isHigh(GSI($0)) }
        #expect(highAfter == highBefore, "GSIs high before: \(highBefore), after: \(highAfter)")
        #expect(machine.devices.count == Self.topology.count)
        #expect(machine.connectedInterruptOutputs == Self.topology.count, "only the ports and bridges' outputs stay")
        for slot in Self.slots(flavour) {
            #expect(try SlotBridge(machine, slot) == bridges[slot], "\(slot)'s bus numbers or windows moved")
            let bus = try #require(bridges[slot]).busNumbers.secondary
            let devfn: UInt8 = slot == "br1" ? Self.bridgeDevfn : 0
            #expect(ecam.read(bus: bus, devfn: devfn, offset: 0, width: .dword) == 0xFFFF_FFFF, "\(slot) master-aborts when empty")
        }
        let fdsAfter = HotPlugSoakTests.openFileDescriptors(), rssAfter = HotPlugSoakTests.residentKiB()
        #expect(!HotPlugSoakTests.fdsLeaked(from: fds, to: fdsAfter, over: cycles),
                "fds grew from \(fds) to \(fdsAfter) over \(cycles) cycles")
        // Allocator noise only (as the soak): under ThreadSanitizer its shadow memory and
        // history buffers grow with the work done, so RSS is printed, not compared.
        let sanitized = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__tsan_init") != nil
            || dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__asan_init") != nil
        if !sanitized { #expect(rssAfter - rss < 8 * 1024, "RSS grew \(rssAfter - rss) KiB over \(cycles) cycles") }
        print("stress (\(flavour)): \(cycles) cycles after \(Self.warmUpCycles) warm-up in \(String(format: "%.1f", seconds)) s; "
              + "\(hammers.rounds.load(ordering: .relaxed)) hammer accesses; fds \(fds) -> \(fdsAfter); RSS \(rss) -> \(rssAfter) KiB"
              + (sanitized ? " (sanitizer: not compared)" : ""))
    }
}
