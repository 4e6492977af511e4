// Config-space read cost as the number of PCI functions grows.
//
// Each benchmark reads the vendor/device dword (offset 0) of one pci-testdev function, the
// way a vCPU exit would, either through ECAM (one MMIO dword read dispatched through the
// machine's memory map) or through CF8/CFC (one dword write to port 0xCF8, one dword read of
// port 0xCFC). One inner iteration is one access, so the per-iteration figures the tool prints
// (scaled, marked `*`) are per access.
//
// Topologies. N counts pci-testdev endpoint functions; the q35 chipset's own two functions
// (MCH 00:00.0, LPC 00:1f.0) are always there too. In every topology the target function sits
// behind exactly one PCI-PCI bridge, on the highest-numbered bus, at the highest devfn
// used there, so every config cycle is routed through bus 0's bridges and one secondary bus;
// the ratio between N only reflects how many functions, slots, bridges and buses exist.
//   N=1:    pcie.0 has one pci-bridge (00:01.0); behind it one pci-testdev at 01:00.0 (target).
//   N=256:  pcie.0 has one pci-bridge (00:01.0); behind it 32 slots x 8 functions of
//           multi-function pci-testdev. Target 01:1f.7.
//   N=4096: pcie.0 has 16 pci-bridges (00:01.0-00:10.0), each with 32 slots x 8 functions of
//           multi-function pci-testdev behind it; their buses are numbered 1-16
//           as firmware numbers them (depth first). Target 10:1f.7
//           (bus 16, the last bridge's secondary bus, reached after all 16 bridges on bus 0).
// Two references that are not part of the 4096/1 ratio:
//   direct N=1:         one pci-testdev at 00:02.0, no bridge (no routing at all).
//   16 bridges x1 N=16: the 16 bridges of N=4096, one pci-testdev at 00.0 behind each; target
//                       10:00.0. Against N=4096 it separates the cost of bridges on the path
//                       from the cost of functions present.
//
// Names end in "N=<count>" so `report.sh` can pair them up and print the 4096/1 ratios.

import Benchmark
import Machine  // the SwitchyardMachine product

/// A machine with ECAM enabled and bus numbers assigned, and the function every access reads.
struct Fixture: Sendable {
    let machine: Machine
    let bus: UInt8
    let devfn: UInt8

    /// 0xCF8 value for a dword at offset 0 of the target (enable bit 31).
    var cf8: UInt64 { 0x8000_0000 | UInt64(bus) << 16 | UInt64(devfn) << 8 }
    /// ECAM address of offset 0 of the target.
    var ecam: UInt64 { Self.ecamBase + UInt64(bus) << 20 + UInt64(devfn) << 12 }

    static let ecamBase: UInt64 = 0xB000_0000

    /// pci-testdev's vendor 1b36 and device 0005 as one dword.
    static let expectedID: UInt64 = 0x0005_1B36

    /// `bridges` pci-bridges on pcie.0 from slot 1, each with `functionsPerBridge` pci-testdev
    /// functions behind it, filled slot by slot, 8 functions to a slot (function 0 carries
    /// multifunction=on whenever the slot has more than one). The target is the last function
    /// placed behind the last bridge.
    static func behindBridges(bridges: Int, functionsPerBridge: Int) -> Fixture {
        precondition((1...30).contains(bridges) && (1...256).contains(functionsPerBridge))
        var devices: [DeviceSpec] = []
        for b in 0..<bridges {
            let bridge = "br\(b)"
            devices.append(DeviceSpec(driver: "pci-bridge", id: bridge, bus: "pcie.0", devfn: UInt8(b + 1) << 3))
            for f in 0..<functionsPerBridge {
                devices.append(DeviceSpec(driver: "pci-testdev", id: "t\(b)-\(f)", bus: bridge, devfn: UInt8(f),
                                          multifunction: functionsPerBridge > 1 && f % 8 == 0))
            }
        }
        let machine = build(devices, bridgeSlots: 1...bridges)
        // Read the last bridge's secondary bus number back through ECAM.
        let lastBridge = UInt8(bridges) << 3
        let secondary = UInt8(truncatingIfNeeded: machine.mmioRead(ecamBase + UInt64(lastBridge) << 12 + 0x18,
                                                                   width: .dword) >> 8)
        return checked(Fixture(machine: machine, bus: secondary, devfn: UInt8(functionsPerBridge - 1)))
    }

    /// One pci-testdev on the root bus at 00:02.0, no bridge.
    static func direct() -> Fixture {
        checked(Fixture(machine: build([DeviceSpec(driver: "pci-testdev", id: "t", bus: "pcie.0", devfn: 2 << 3)]),
                        bus: 0, devfn: 2 << 3))
    }

    /// The machine with ECAM on and the bridges' bus numbers programmed as firmware numbers
    /// them (depth first: the bridge in slot s of bus 0 gets bus s here, all bridges being in
    /// slots 1...). `runFirmware()` is not used: it also assigns BARs and throws when 256
    /// pci-testdevs' 256-byte I/O BARs (64 KiB) do not fit the 60 KiB I/O window. BARs live in
    /// the PCI layer of the address spaces, which config accesses never reach (ECAM and
    /// CF8/CFC decode in the platform layer first), so leaving them unassigned does not
    /// change what is measured.
    private static func build(_ devices: [DeviceSpec], bridgeSlots: ClosedRange<Int>? = nil) -> Machine {
        let machine: Machine
        do {
            machine = try Machine(MachineConfiguration(devices: devices))
        } catch {
            fatalError("cannot build the benchmark machine: \(error)")
        }
        // PCIEXBAR (MCH 00:00.0, 0x60/0x64) through CF8/CFC, as runFirmware() does: high dword
        // first, then base | length 256 MiB (0) | enable.
        machine.portWrite(0xCF8, width: .dword, value: 0x8000_0064)
        machine.portWrite(0xCFC, width: .dword, value: 0)
        machine.portWrite(0xCF8, width: .dword, value: 0x8000_0060)
        machine.portWrite(0xCFC, width: .dword, value: ecamBase | 1)
        for slot in bridgeSlots.map(Array.init) ?? [] {
            let bus = UInt64(slot)
            // Primary 0, secondary = subordinate = slot (dword at 0x18).
            machine.mmioWrite(ecamBase + UInt64(slot) << 15 + 0x18, width: .dword, value: bus << 8 | bus << 16)
        }
        return machine
    }

    /// Both paths must really reach the target before anything is timed.
    private static func checked(_ f: Fixture) -> Fixture {
        let viaECAM = f.machine.mmioRead(f.ecam, width: .dword)
        f.machine.portWrite(0xCF8, width: .dword, value: f.cf8)
        let viaPorts = f.machine.portRead(0xCFC, width: .dword)
        precondition(viaECAM == expectedID && viaPorts == expectedID,
                     "target \(f.bus):\(f.devfn >> 3).\(f.devfn & 7) reads ECAM \(viaECAM), CF8/CFC \(viaPorts)")
        return f
    }
}

// Global lets are built lazily, once, on first use (from a benchmark's setup hook, so
// construction and enumeration are never timed), and shared by the ECAM and CF8/CFC cases.
let fixture1 = Fixture.behindBridges(bridges: 1, functionsPerBridge: 1)
let fixture256 = Fixture.behindBridges(bridges: 1, functionsPerBridge: 256)
let fixture4096 = Fixture.behindBridges(bridges: 16, functionsPerBridge: 256)
let fixtureDirect = Fixture.direct()
let fixture16Bridges = Fixture.behindBridges(bridges: 16, functionsPerBridge: 1)

@inline(never)
func ecamRead(_ f: Fixture) -> UInt64 {
    f.machine.mmioRead(f.ecam, width: .dword)
}

@inline(never)
func portRead(_ f: Fixture) -> UInt64 {
    f.machine.portWrite(0xCF8, width: .dword, value: f.cf8)
    return f.machine.portRead(0xCFC, width: .dword)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .instructions, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 10,
        scalingFactor: .kilo,   // 1000 accesses per measured iteration
        maxDuration: .seconds(2),
        maxIterations: 10_000)

    let cases: [(name: String, fixture: @Sendable () -> Fixture)] = [
        ("N=1", { fixture1 }),
        ("N=256", { fixture256 }),
        ("N=4096", { fixture4096 }),
        ("direct N=1", { fixtureDirect }),
        ("16 bridges x1 N=16", { fixture16Bridges }),
    ]
    for (name, fixture) in cases {
        Benchmark("ECAM read \(name)", closure: { benchmark in
            let f = fixture()
            var sum: UInt64 = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { sum &+= ecamRead(f) }
            benchmark.stopMeasurement()
            blackHole(sum)
            precondition(sum == Fixture.expectedID &* UInt64(benchmark.scaledIterations.count))
        }, setup: { _ = fixture() })

        Benchmark("CF8-CFC read \(name)", closure: { benchmark in
            let f = fixture()
            var sum: UInt64 = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { sum &+= portRead(f) }
            benchmark.stopMeasurement()
            blackHole(sum)
            precondition(sum == Fixture.expectedID &* UInt64(benchmark.scaledIterations.count))
        }, setup: { _ = fixture() })
    }
}
