import Foundation
import GuestMemory
@testable import Chipset
@testable import Machine
import PCI
import Testing
import TestRequirements
import VMMBase
@testable import switchyard_fuzz

/// A machine kept across fuzz inputs must not hide bugs: after an input and `putBack`, it is
/// indistinguishable from one freshly built from the same configuration — the same device
/// state values, and the same config space of every reachable function as the real lspci
/// decodes it — and it got there without being rebuilt (else the check would be empty).
@Suite("Fuzz machine reuse")
struct ReusedMachineTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz/corpus")

    static func input(_ target: String, _ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: corpus.appendingPathComponent("\(target)/\(name)")))
    }

    /// Hot-plug and surprise removal, BAR rewrites, a platform reset (which unnumbers every
    /// bus and closes ECAM and BARs), each input chosen because it changes the machine.
    @Test(.requires(RealLspci.isInstalled, RealLspci.missing),
          arguments: ["hotplug-surprise", "bars-write-read", "reset-then-cf8"])
    func machineTarget(_ name: String) throws {
        let reused = try #require(ReusedMachine(build: MachineFuzzRun.build))
        let fresh = try #require(MachineFuzzRun.build())
        var run = MachineFuzzRun(try Self.input("machine", name), on: reused.built)
        run.runToEnd()
        try expectChanged(reused.machine, from: fresh.machine)
        reused.putBack()
        try expectEqual(reused, fresh.machine)
    }

    @Test(.requires(RealLspci.isInstalled, RealLspci.missing), arguments: ["hotplug-cycle", "anonymous-and-bridges"])
    func qmpTarget(_ name: String) throws {
        let reused = try #require(ReusedMachine(build: FuzzTarget.unenumerated))
        let fresh = try #require(FuzzTarget.unenumerated())
        FuzzTarget.runQMP(try Self.input("qmp", name), on: reused.machine)
        try expectChanged(reused.machine, from: fresh.machine)
        reused.putBack()
        try expectEqual(reused, fresh.machine)
    }

    @Test(.requires(RealLspci.isInstalled, RealLspci.missing), arguments: ["config-type1", "ecam", "memory", "irq-clock-legacy"])
    func qtestTarget(_ name: String) throws {
        let reused = try #require(ReusedMachine(build: FuzzTarget.unenumerated))
        let fresh = try #require(FuzzTarget.unenumerated())
        FuzzTarget.runQTest(try Self.input("qtest", name), on: reused.machine)
        try expectChanged(reused.machine, from: fresh.machine)
        reused.putBack()
        try expectEqual(reused, fresh.machine)
    }

    /// The device writes RAM too: the rng fills the buffers the descriptors point at, and the
    /// used ring, wherever the driver put them; RAM's residency finds those pages.
    @Test(.requires(RealLspci.isInstalled, RealLspci.missing),
          arguments: ["one-writable-buffer", "indirect-table", "packed-ring-buffer-chain-indirect"])
    func virtqueueTarget(_ name: String) throws {
        let reused = try #require(ReusedMachine(build: VirtqueueFuzzRun.build))
        let fresh = try #require(VirtqueueFuzzRun.build())
        var run = try #require(VirtqueueFuzzRun(try Self.input("virtqueue", name), on: reused.built))
        run.run()
        try expectChanged(reused.machine, from: fresh.machine)
        reused.putBack()
        #expect(reused.restoredPages > 0)
        try expectEqual(reused, fresh.machine)
        // Again, from the put-back machine: the same input runs as on a fresh one.
        var again = try #require(VirtqueueFuzzRun(try Self.input("virtqueue", name), on: reused.built))
        again.run()
        reused.putBack()
        try expectEqual(reused, fresh.machine)
    }

    /// Bytes stored straight into the host's mapping (as a device's DMA does) and through
    /// GuestMemory: the sweep finds both pages with nothing telling it where.
    @Test func ramTouchedByAnyPathComesBackAsBuilt() throws {
        let built = try #require(VirtqueueFuzzRun.build())
        var baseline = try #require(RAMBaseline(of: built.machine.guestMemory))
        let memory = built.machine.guestMemory
        let before = try memory.read(at: GuestAddress(0x1F0_0000), count: 8)
        let host = try memory.hostBuffer(at: GuestAddress(0x1F0_0000), length: 8)
        host.storeBytes(of: UInt64(0x1122_3344_5566_7788), as: UInt64.self)
        try memory.write(at: GuestAddress(0x1000), bytes: [0xAA])
        let restored = baseline.restore()
        #expect(restored)
        #expect(baseline.restoredPages >= 2)
        // Nothing touched since: nothing to put back.
        let again = baseline.restore()
        #expect(again)
        #expect(baseline.restoredPages == 0)
        #expect(try memory.read(at: GuestAddress(0x1F0_0000), count: 8) == before)
        #expect(try memory.read(at: GuestAddress(0x1000), count: 1) != [0xAA])
    }

    /// The input did something the put-back has to undo.
    func expectChanged(_ machine: Machine, from fresh: Machine) throws {
        let changed = try Self.comparable(machine.snapshotDevices()) != Self.comparable(fresh.snapshotDevices()) || Self.ram(of: machine) != Self.ram(of: fresh)
        #expect(changed, "the input left the machine as built: pick one that changes it")
    }

    func expectEqual(_ reused: ReusedMachine, _ fresh: Machine) throws {
        #expect(reused.rebuilds == 0)
        let machine = reused.machine
        #expect(Self.comparable(try machine.snapshotDevices()) == Self.comparable(try fresh.snapshotDevices()))
        #expect(machine.devices.map(\.qomPath).sorted() == fresh.devices.map(\.qomPath).sorted())
        #expect(machine.assertedINTxLines == fresh.assertedINTxLines)
        #expect(Self.firstDifference(Self.ram(of: machine), Self.ram(of: fresh)) == nil, "RAM differs from a fresh machine's")
        let ours = try Self.lspci(machine), theirs = try Self.lspci(fresh)
        #expect(!ours.isEmpty)
        #expect(ours == theirs, "--- reused\n\(ours)--- fresh\n\(theirs)")
    }

    /// The state with the RTC's guest time as its offset from the host's wall clock: two
    /// machines built a moment apart hold different host times for the same guest time.
    static func comparable(_ state: MachineDeviceState) -> MachineDeviceState {
        var state = state
        let rtc = state.platform.rtc
        state.platform.rtc.subsecond = rtc.baseSeconds &* 1_000_000_000 &+ rtc.subsecond &- rtc.lastUpdate
        state.platform.rtc.baseSeconds = 0
        state.platform.rtc.lastUpdate = 0
        // The time registers (MC146818: seconds, minutes, hours, weekday, day, month, year;
        // century at 0x32) hold the time as last written there, a second apart in two machines
        // built a second apart; the time itself is compared above.
        for register in [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32] { state.platform.rtc.cmos[register] = 0 }
        return state
    }

    /// Every function config cycles reach, decoded by the real lspci with full config dumps.
    static func lspci(_ machine: Machine) throws -> String {
        let functions = machine.reachableFunctions().map { address, function in
            let config = function.configSnapshot()
            let name = String(format: "%02x:%02x.%x", address.bus, address.devfn >> 3, address.devfn & 7)
            return (address: name, bytes: Array(config.bytes.prefix(config.size)))
        }
        return try RealLspci.decode(functions, arguments: ["-vvv", "-xxxx"])
    }

    /// The first guest address where two RAM images differ (a failure names it instead of
    /// printing 32 MiB).
    static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> String? {
        guard a.count == b.count else { return "sizes \(a.count) and \(b.count)" }
        guard a != b else { return nil }
        return a.indices.first { a[$0] != b[$0] }.map { "0x" + String($0, radix: 16) }
    }

    static func ram(of machine: Machine) -> [UInt8] {
        (try? machine.guestMemory.read(at: GuestAddress(0), count: Int(machine.configuration.memorySize))) ?? []
    }
}

