import AddressSpace
import Dispatch
import Synchronization
import Chipset
import PCI
import TestRequirements
import Testing
import VMMBase
@testable import Machine

/// A commit builds again only the buses a change touched and keeps the others' trees. Oracle:
/// the same hierarchy composed from scratch (no kept trees) after every step of a seeded
/// random sequence of guest config writes through ECAM: BAR moves, decode on and off, bridge
/// windows moved, on every level of a hierarchy of conventional bridges, root ports and a
/// switch. The committed views must equal the fresh ones, range by range and name by name;
/// then each endpoint's BAR answers where the config space says it is.
@Suite struct BusTreeCacheTests {
    static let ecamBase: UInt64 = 0xB000_0000
    static let devices = [
        "pci-bridge,id=br0,bus=pcie.0,chassis_nr=1,addr=0x2", "pci-testdev,id=a0,bus=br0,addr=0x1",
        "pci-testdev,id=a1,bus=br0,addr=0x2", "pci-bridge,id=br1,bus=br0,chassis_nr=2,addr=0x3",
        "pci-testdev,id=a2,bus=br1,addr=0x1",
        "pcie-root-port,id=rp1,bus=pcie.0,chassis=3,slot=1,addr=0x3", "x3130-upstream,id=up,bus=rp1",
        "xio3130-downstream,id=dn0,bus=up,chassis=4,slot=0", "xio3130-downstream,id=dn1,bus=up,chassis=4,slot=1,addr=0x1",
        "pci-testdev,id=b0,bus=dn0", "pci-testdev,id=b1,bus=dn1", "pci-testdev,id=c0,bus=pcie.0,addr=0x4",
    ]

    struct Place: Equatable, CustomStringConvertible {
        let range: AddressRange
        let name: String
        var description: String { "\(name) \(range)" }
    }

    static func places(_ view: FlatView) -> [Place] { view.entries.map { Place(range: $0.range, name: $0.name) } }

    /// The ECAM address of `offset` in the config space of device `id`.
    static func ecam(_ machine: Machine, _ id: String, _ offset: UInt64) throws -> UInt64 {
        let placed = try #require(machine.device(id: id))
        var bus: UInt64 = 0
        if placed.busName != "pcie.0" {
            let bridge = try #require(machine.device(id: placed.busName)).function
            bus = UInt64(bridge.configSnapshot().get(0x19, width: 1))
        }
        return ecamBase + bus << 20 + UInt64(placed.devfn) << 12 + offset
    }

    @Test(arguments: [0x5EED_0001, 0x5EED_0002] as [UInt64])
    func keptTreesMatchAFreshComposition(seed: UInt64) throws {
        let machine = try Machine(MachineConfiguration(devices: try Self.devices.map { try DeviceSpec(parsing: $0) }))
        try machine.runFirmware()
        let endpoints = ["a0", "a1", "a2", "b0", "b1", "c0"], bridges = ["br0", "br1", "rp1", "up", "dn0", "dn1"]
        var rng = SplitMix64(state: seed)
        var reused = 0
        for step in 0..<400 {
            let before = machine.spaces.rebuildCounts.pci
            let handlersBefore = Dictionary(machine.spaces.pci.views.memory.entries.map { ($0.name, ObjectIdentifier($0.handler)) },
                                            uniquingKeysWith: { first, _ in first })
            switch rng.next() % 4 {
            case 0, 1:  // BAR 1 (32-bit memory, 4 KiB) to a random 4 KiB page of 0xC000_0000-0xC3FF_FFFF
                let id = endpoints[Int(rng.next() % 6)]
                try machine.mmioWrite(Self.ecam(machine, id, 0x14), width: .dword, value: 0xC000_0000 + (rng.next() % 0x4000) << 12)
            case 2:  // memory decode on or off
                let id = (endpoints + bridges)[Int(rng.next() % 12)]
                try machine.mmioWrite(Self.ecam(machine, id, 0x04), width: .word, value: rng.next() % 2 == 0 ? 0x0006 : 0x0004)
            default:  // a bridge's memory window: 1-16 MiB at a random MiB of the same range
                let id = bridges[Int(rng.next() % 6)]
                let base = 0xC000_0000 + (rng.next() % 64) << 20, limit = base + (1 + rng.next() % 16) << 20 - 1
                try machine.mmioWrite(Self.ecam(machine, id, 0x20), width: .dword, value: (limit >> 16 & 0xFFF0) << 16 | base >> 16 & 0xFFF0)
            }
            guard machine.spaces.rebuildCounts.pci > before else { continue }
            let fresh = PCIMappings.compose(root: machine.rootBus, cache: BusTreeCache())
            let committed = machine.spaces.pci.views
            let (kept, expected) = (Self.places(committed.memory), Self.places(FlatView(rendering: fresh.memory)))
            if kept != expected {
                Issue.record("step \(step): committed \(kept), fresh \(expected)")
                return
            }
            #expect(Self.places(committed.io) == Self.places(FlatView(rendering: fresh.io)))
            // A BAR shown before and after is served by the same handler, on a kept bus or a
            // built one: a diff sees it as unchanged or moved, not as a new region.
            for entry in committed.memory.entries where entry.name.hasSuffix("BAR1") {
                if let old = handlersBefore[entry.name], old != ObjectIdentifier(entry.handler) {
                    Issue.record("step \(step): \(entry.name) has a new handler")
                }
            }
            reused += 1
        }
        #expect(reused > 200, "only \(reused) steps committed")
        // Each endpoint's BAR answers where its config space places it, if anything there shows it.
        for id in endpoints {
            let function = try #require(machine.device(id: id)).function
            guard let range = function.configSnapshot().decodedBARRange(1),
                  machine.spaces.pci.views.memory.entry(containing: range.base)?.name.hasPrefix("\(function.name)@") == true
            else { continue }
            machine.mmioWrite(range.base, width: .dword, value: 0xABCD)
            #expect(function.barRead(1, offset: 0, width: .dword) == 0xABCD, "\(id)'s BAR 1 at \(range)")
        }
    }

    /// A Function Level Reset clears the command register and BARs (PCIe 6.0, 6.6.2): the BAR
    /// must stop answering once the config write that started the reset returns.
    @Test func aFunctionLevelResetUnmapsTheBARs() throws {
        let machine = try Machine(MachineConfiguration(devices: try [
            "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x2", "virtio-rng-pci,id=rng,bus=rp1",
        ].map { try DeviceSpec(parsing: $0) }))
        try machine.runFirmware()
        let function = try #require(machine.device(id: "rng")).function
        let bar = try #require(function.configSnapshot().decodedBARRange(4), "firmware left BAR 4 unassigned")
        // Common config's device_feature_select (offset 0) reads back what was written.
        machine.mmioWrite(bar.base, width: .dword, value: 1)
        #expect(machine.mmioRead(bar.base, width: .dword) == 1)
        let express = try #require(function.configSnapshot().capabilities.first { $0.kind == .standard(0x10) }).offset
        try machine.mmioWrite(Self.ecam(machine, "rng", UInt64(express) + 9), width: .byte, value: 0x80)
        #expect(function.configSnapshot().decodedBARRange(4) == nil)
        #expect(machine.spaces.pci.views.memory.entry(containing: bar.base) == nil)
        #expect(machine.mmioRead(bar.base, width: .dword) == 0xFFFF_FFFF)
    }

    /// Four threads move BARs on four buses at once (the root bus, behind a PCI bridge, behind
    /// each of a switch's downstream ports), so compositions race invalidations of other
    /// buses. When a thread's write returns, the views show its BAR where it wrote it (a commit
    /// returns with views at least as new as the change); at the end they equal a fresh
    /// composition.
    @Test func concurrentMovesOnSeveralBusesAreNeverLost() throws {
        let machine = try Machine(MachineConfiguration(devices: try Self.devices.map { try DeviceSpec(parsing: $0) }))
        try machine.runFirmware()
        func window(_ id: String, _ base: UInt64, _ size: UInt64) throws {
            let limit = base + size - 1
            try machine.mmioWrite(Self.ecam(machine, id, 0x20), width: .dword, value: (limit >> 16 & 0xFFF0) << 16 | base >> 16 & 0xFFF0)
        }
        // Nothing else decodes in the ranges the movers use.
        for id in ["a1", "a2", "br1"] { try machine.mmioWrite(Self.ecam(machine, id, 0x04), width: .word, value: 0) }
        try window("br0", 0xC000_0000, 16 << 20)
        try window("rp1", 0xC100_0000, 32 << 20)
        try window("up", 0xC100_0000, 32 << 20)
        try window("dn0", 0xC100_0000, 16 << 20)
        try window("dn1", 0xC200_0000, 16 << 20)
        let movers: [(id: String, base: UInt64)] = [("c0", 0xC300_0000), ("a0", 0xC000_0000), ("b0", 0xC100_0000), ("b1", 0xC200_0000)]
        let addresses = try movers.map { try Self.ecam(machine, $0.id, 0x14) }
        let names = try movers.map { try #require(machine.device(id: $0.id)).function.name + "@" }
        let misses = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: movers.count) { thread in
            var rng = SplitMix64(state: 0xC0FF_EE00 + UInt64(thread))
            for step in 0..<500 {
                let bar = movers[thread].base + (rng.next() % 4096) << 12
                machine.mmioWrite(addresses[thread], width: .dword, value: bar)
                let shown = machine.spaces.pci.views.memory.entry(containing: bar)?.name ?? "nothing"
                if !shown.hasPrefix(names[thread]) {
                    misses.withLock { $0.append("\(movers[thread].id) step \(step): \(shown) at \(bar)") }
                }
            }
        }
        #expect(misses.withLock { $0 } == [])
        let fresh = PCIMappings.compose(root: machine.rootBus, cache: BusTreeCache())
        #expect(Self.places(machine.spaces.pci.views.memory) == Self.places(FlatView(rendering: fresh.memory)))
    }
}
