// Config-space read cost as the number of PCI functions grows.
//
// Each access reads a random dword register of a random function of the machine (every
// function present: endpoints, bridges, ports and the chipset's own), the way a vCPU exit
// would: through ECAM (one MMIO dword read dispatched through the machine's memory map) or
// through CF8/CFC (one dword write to port 0xCF8, one dword read of port 0xCFC). The sequence of
// (function, register) pairs is drawn once per machine from a seeded generator, so no single
// target stays hot in a cache and every N runs the same kind of walk. One inner iteration is
// one access; the per-iteration figures the tool prints (scaled, marked `*`) are per access,
// wall clock and mallocs alike.
//
// Topologies. N counts pci-testdev endpoint functions.
//   Conventional (ECAM and CF8-CFC, registers 0x00-0xFC):
//     N=1:    pcie.0 has one pci-bridge; behind it one pci-testdev.
//     N=256:  one pci-bridge with 32 slots x 8 functions of multi-function pci-testdev.
//     N=4096: 16 pci-bridges, each with 32 slots x 8 functions behind it (buses 1-16).
//   PCIe ("PCIe ECAM", registers 0x000-0xFFC, so half the reads are in extended config space):
//     N=1:    one pcie-root-port, an x3130-upstream switch port behind it, one
//             xio3130-downstream port, one pci-testdev behind that.
//     N=256:  one root port and switch, 32 downstream ports, each with an 8-function pci-testdev.
//     N=1024: four such root ports with switches (136 buses).
//
// BAR MMIO dispatch ("BAR MMIO read N=..."): one dword read of a random endpoint's BAR 1
// through the machine's memory map, N = 1, 256, 4096 pci-testdev functions behind pci-bridges,
// each with its BAR 1 mapped (see MappedBARs).
//
// Setup, untimed, numbers the buses as firmware does (depth first, through ECAM) and lists
// every function by scanning all buses. `Machine.runFirmware()` is not used: it also assigns
// BARs and throws when thousands of pci-testdevs' I/O BARs do not fit the I/O window; BARs do
// not take part in config-space decoding.
//
// SWITCHYARD_BENCH_SMOKE=1 runs every benchmark for two short iterations: `make test` uses it
// to keep this package building and its workloads running (Benchmarks/report.sh --smoke).

import Benchmark
import Foundation
import Machine  // the SwitchyardMachine product
import Synchronization

/// A seeded SplitMix64: the same access sequence on every run.
struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A machine with ECAM enabled and bus numbers assigned, and the accesses to make.
struct Fixture: Sendable {
    let machine: Machine
    /// Every function present, as (bus, devfn).
    let functions: [(bus: UInt8, devfn: UInt8)]
    /// ECAM addresses and CF8 values of the random (function, register) sequence.
    let ecamAddresses: [UInt64]
    let cf8Values: [UInt64]

    static let ecamBase: UInt64 = 0xB000_0000
    static let accesses = 4096

    static func ecam(_ bus: UInt8, _ devfn: UInt8, _ offset: UInt64) -> UInt64 {
        ecamBase + UInt64(bus) << 20 + UInt64(devfn) << 12 + offset
    }

    init(_ devices: [DeviceSpec], extendedRegisters: Bool) {
        do {
            machine = try Machine(MachineConfiguration(devices: devices))
        } catch {
            fatalError("cannot build the benchmark machine: \(error)")
        }
        // PCIEXBAR (MCH 00:00.0, 0x60/0x64) through CF8/CFC: high dword first, then
        // base | length 256 MiB (0) | enable.
        machine.portWrite(0xCF8, width: .dword, value: 0x8000_0064)
        machine.portWrite(0xCFC, width: .dword, value: 0)
        machine.portWrite(0xCF8, width: .dword, value: 0x8000_0060)
        machine.portWrite(0xCFC, width: .dword, value: Self.ecamBase | 1)
        var next: UInt8 = 1
        Self.number(machine, bus: 0, next: &next)
        var found: [(bus: UInt8, devfn: UInt8)] = []
        for bus in 0..<Int(next) {
            for devfn in 0..<256 where machine.mmioRead(Self.ecam(UInt8(bus), UInt8(devfn), 0), width: .dword) & 0xFFFF != 0xFFFF {
                found.append((UInt8(bus), UInt8(devfn)))
            }
        }
        functions = found
        var rng = SplitMix64(state: 0x5317_C4A1)
        var ecam: [UInt64] = [], cf8: [UInt64] = []
        for _ in 0..<Self.accesses {
            let f = found[Int(rng.next() % UInt64(found.count))]
            let register = (rng.next() % (extendedRegisters ? 1024 : 64)) * 4
            ecam.append(Self.ecam(f.bus, f.devfn, register))
            cf8.append(0x8000_0000 | UInt64(f.bus) << 16 | UInt64(f.devfn) << 8 | register & 0xFC)
        }
        ecamAddresses = ecam
        cf8Values = cf8
    }

    /// Depth-first bus numbering through ECAM, as firmware does it: each bridge (header type 1)
    /// gets the next bus as secondary, the subordinate is set after its subtree is numbered.
    private static func number(_ machine: Machine, bus: UInt8, next: inout UInt8) {
        for devfn in 0..<256 {
            let address = ecam(bus, UInt8(devfn), 0)
            guard machine.mmioRead(address, width: .dword) & 0xFFFF != 0xFFFF,
                  machine.mmioRead(address + 0x0C, width: .dword) >> 16 & 0x7F == 1 else { continue }
            let secondary = next
            next += 1
            machine.mmioWrite(address + 0x18, width: .dword, value: UInt64(bus) | UInt64(secondary) << 8 | 0xFF << 16)
            number(machine, bus: secondary, next: &next)
            machine.mmioWrite(address + 0x18, width: .dword,
                              value: UInt64(bus) | UInt64(secondary) << 8 | UInt64(next - 1) << 16)
        }
    }

    /// `bridges` pci-bridges on pcie.0, each with `functionsPerBridge` pci-testdev functions
    /// behind it, 8 functions to a slot (function 0 multifunction=on when the slot has more).
    static func behindBridges(bridges: Int, functionsPerBridge: Int) -> Fixture {
        var devices: [DeviceSpec] = []
        for b in 0..<bridges {
            devices.append(DeviceSpec(driver: "pci-bridge", id: "br\(b)", bus: "pcie.0", devfn: UInt8(b + 1) << 3))
            for f in 0..<functionsPerBridge {
                devices.append(DeviceSpec(driver: "pci-testdev", id: "t\(b)-\(f)", bus: "br\(b)", devfn: UInt8(f),
                                          multifunction: functionsPerBridge > 1 && f % 8 == 0))
            }
        }
        return checked(Fixture(devices, extendedRegisters: false), endpoints: bridges * functionsPerBridge)
    }

    /// `switches` root ports, each with a switch (upstream port, `downstreamPorts` downstream
    /// ports), each downstream port with a pci-testdev of `functionsPerPort` functions.
    static func pcie(switches: Int, downstreamPorts: Int, functionsPerPort: Int) -> Fixture {
        var devices: [DeviceSpec] = []
        for s in 0..<switches {
            devices.append(DeviceSpec(driver: "pcie-root-port", id: "rp\(s)", bus: "pcie.0", devfn: UInt8(s + 1) << 3,
                                      properties: ["chassis": "\(s + 1)", "slot": "0"]))
            devices.append(DeviceSpec(driver: "x3130-upstream", id: "up\(s)", bus: "rp\(s)", devfn: 0))
            for d in 0..<downstreamPorts {
                devices.append(DeviceSpec(driver: "xio3130-downstream", id: "dp\(s)-\(d)", bus: "up\(s)", devfn: UInt8(d) << 3,
                                          properties: ["chassis": "\(100 + s)", "slot": "\(d)"]))
                for f in 0..<functionsPerPort {
                    devices.append(DeviceSpec(driver: "pci-testdev", id: "t\(s)-\(d)-\(f)", bus: "dp\(s)-\(d)", devfn: UInt8(f),
                                              multifunction: functionsPerPort > 1 && f == 0))
                }
            }
        }
        return checked(Fixture(devices, extendedRegisters: true), endpoints: switches * downstreamPorts * functionsPerPort)
    }

    /// Every endpoint must be reachable (1b36:0005) before anything is timed.
    private static func checked(_ f: Fixture, endpoints: Int) -> Fixture {
        let testdevs = f.functions.filter { f.machine.mmioRead(ecam($0.bus, $0.devfn, 0), width: .dword) == 0x0005_1B36 }
        precondition(testdevs.count == endpoints, "\(testdevs.count) of \(endpoints) pci-testdev functions reachable")
        return f
    }
}

/// A `behindBridges` fixture whose endpoints decode memory: bridge b (on pcie.0, secondary bus
/// b + 1) forwards a 2 MiB window at 0xC000_0000 + 2 MiB * b; endpoint i behind it has its 4 KiB
/// BAR 1 at window + 4 KiB * i, memory decode on. Every endpoint's BAR is checked by a write
/// and a read of its scratch register through the machine's memory map.
struct MappedBARs: Sendable {
    let fixture: Fixture
    /// The endpoint whose BAR moves, and the two places it alternates between.
    let mover: (bus: UInt8, devfn: UInt8)
    let places: (UInt64, UInt64)
    /// A random sequence of BAR 1 addresses of endpoints other than the mover (which stay put),
    /// for the MMIO dispatch benchmark.
    let barAddresses: [UInt64]

    static let windowBase: UInt64 = 0xC000_0000
    static let windowSize: UInt64 = 2 << 20

    init(bridges: Int, functionsPerBridge: Int) {
        fixture = Fixture.behindBridges(bridges: bridges, functionsPerBridge: functionsPerBridge)
        let machine = fixture.machine
        for b in 0..<bridges {
            let bridge = Fixture.ecam(0, UInt8(b + 1) << 3, 0), window = Self.windowBase + UInt64(b) * Self.windowSize
            // Memory base/limit (0x20): address bits 31:20 in bits 15:4 of each half.
            let limit = window + Self.windowSize - 1
            machine.mmioWrite(bridge + 0x20, width: .dword, value: (limit >> 16 & 0xFFF0) << 16 | window >> 16 & 0xFFF0)
            machine.mmioWrite(bridge + 0x04, width: .word, value: 0x0006)
            for i in 0..<functionsPerBridge {
                let endpoint = Fixture.ecam(UInt8(b + 1), UInt8(i), 0), bar = window + 4096 * UInt64(i)
                machine.mmioWrite(endpoint + 0x14, width: .dword, value: bar)
                // BAR 2 (64-bit, 1 MiB) out of everyone's way above 4 GiB, as firmware would
                // place it (no window forwards it here: it is decoded on its bus only).
                let high = 0x1_0000_0000 + (UInt64(b) * UInt64(functionsPerBridge) + UInt64(i)) << 20
                machine.mmioWrite(endpoint + 0x18, width: .dword, value: high & 0xFFFF_FFFF)
                machine.mmioWrite(endpoint + 0x1C, width: .dword, value: high >> 32)
                machine.mmioWrite(endpoint + 0x04, width: .word, value: 0x0002)
                machine.mmioWrite(bar, width: .dword, value: 0x5A00_0000 | UInt64(i))
                precondition(machine.mmioRead(bar, width: .dword) == 0x5A00_0000 | UInt64(i), "BAR 1 of \(b + 1):\(i) not reachable")
            }
        }
        mover = (1, 0)
        // The second MiB of bridge 0's window is free: 256 endpoints fill the first.
        places = (Self.windowBase, Self.windowBase + (1 << 20))
        var rng = SplitMix64(state: 0xBA5E_0001)
        let endpoints = bridges * functionsPerBridge
        barAddresses = (0..<Fixture.accesses).map { _ in
            // With one endpoint, it is the mover: read it where set-up put it (no move runs
            // between set-up and this benchmark's reads on that fixture's own copy).
            let e = endpoints == 1 ? 0 : 1 + Int(rng.next() % UInt64(endpoints - 1))
            let b = e / functionsPerBridge, i = e % functionsPerBridge
            return Self.windowBase + UInt64(b) * Self.windowSize + 4096 * UInt64(i)
        }
    }
}

/// One BAR move: BAR 1 of the mover rewritten with decode on, so the PCI address space commits
/// a new view (and, under KVM, its listeners update their slots) before the write returns.
@inline(never)
func moveBAR(_ m: MappedBARs, to address: UInt64) {
    m.fixture.machine.mmioWrite(Fixture.ecam(m.mover.bus, m.mover.devfn, 0x14), width: .dword, value: address)
}

/// The workloads, one access each: ECAM is one MMIO read, CF8/CFC a port write and a port read.
@inline(never)
func ecamRead(_ f: Fixture, _ i: Int) -> UInt64 {
    f.machine.mmioRead(f.ecamAddresses[i], width: .dword)
}

/// One MMIO read of an endpoint's BAR, dispatched through the machine's memory map to the
/// function (pci-testdev answers the scratch register written at set-up).
@inline(never)
func barRead(_ m: MappedBARs, _ i: Int) -> UInt64 {
    m.fixture.machine.mmioRead(m.barAddresses[i], width: .dword)
}

@inline(never)
func portRead(_ f: Fixture, _ i: Int) -> UInt64 {
    f.machine.portWrite(0xCF8, width: .dword, value: f.cf8Values[i])
    return f.machine.portRead(0xCFC, width: .dword)
}

// Global lets are built lazily, once, on first use (from a benchmark's setup hook, so
// construction is never timed).
let fixture1 = Fixture.behindBridges(bridges: 1, functionsPerBridge: 1)
let fixture256 = Fixture.behindBridges(bridges: 1, functionsPerBridge: 256)
let fixture4096 = Fixture.behindBridges(bridges: 16, functionsPerBridge: 256)
let pcie1 = Fixture.pcie(switches: 1, downstreamPorts: 1, functionsPerPort: 1)
let pcie256 = Fixture.pcie(switches: 1, downstreamPorts: 32, functionsPerPort: 8)
let pcie1024 = Fixture.pcie(switches: 4, downstreamPorts: 32, functionsPerPort: 8)

let moves1 = MappedBARs(bridges: 1, functionsPerBridge: 1)
let moves256 = MappedBARs(bridges: 1, functionsPerBridge: 256)
let moves4096 = MappedBARs(bridges: 16, functionsPerBridge: 256)
// The MMIO dispatch benchmark has its own machines: the move benchmarks leave their mover
// anywhere.
let reads1 = MappedBARs(bridges: 1, functionsPerBridge: 1)
let reads256 = MappedBARs(bridges: 1, functionsPerBridge: 256)
let reads4096 = MappedBARs(bridges: 16, functionsPerBridge: 256)

let smoke = ProcessInfo.processInfo.environment["SWITCHYARD_BENCH_SMOKE"] == "1"

/// `scaledIterations` BAR moves, back and forth; afterwards the scratch register written at
/// set-up must answer at the BAR's last address and nothing at the other.
func measureMoves(_ benchmark: Benchmark, _ m: MappedBARs) {
    // Where the BAR is now (the last iteration left it there), read untimed from the device.
    var at = m.fixture.machine.mmioRead(Fixture.ecam(m.mover.bus, m.mover.devfn, 0x14), width: .dword) & ~0xF
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
        at = at == m.places.0 ? m.places.1 : m.places.0
        moveBAR(m, to: at)
    }
    benchmark.stopMeasurement()
    let other = at == m.places.0 ? m.places.1 : m.places.0
    let machine = m.fixture.machine
    precondition(machine.mmioRead(at, width: .dword) == 0x5A00_0000, "the moved BAR does not answer at \(at)")
    precondition(machine.mmioRead(other, width: .dword) != 0x5A00_0000, "the BAR still answers at \(other)")
    // What the same move costs in KVM memory-slot ioctls with a VM following the machine
    // (untimed; counted once per benchmark, as it takes a fresh VM, and given to every run:
    // the first run is a warm-up whose measurements are dropped). Where /dev/kvm is unusable
    // the metric has no sample.
    let counted = slotFigures.withLock { figures -> Int?? in
        if let known = figures[benchmark.name] { return known }
        let ioctls = try? machine.kvmMemorySlotUpdates(during: { moveBAR(m, to: other); moveBAR(m, to: at) })
        figures[benchmark.name] = ioctls
        return ioctls
    }
    if let ioctls = counted ?? nil { benchmark.measurement(slotIoctlsPerMove, ioctls / 2) }
}

/// KVM_SET_USER_MEMORY_REGION calls per BAR move, and the benchmarks that measured it.
let slotFigures = Mutex<[String: Int?]>([:])
let slotIoctlsPerMove = BenchmarkMetric.custom("KVM slot ioctls per move", polarity: .prefersSmaller, useScalingFactor: false)

/// One measured iteration: `scaledIterations` accesses from the sequence, checked against an
/// untimed pass over the same accesses (the reads cannot be optimized away or go astray).
func measure<F>(_ benchmark: Benchmark, _ f: F, _ access: (F, Int) -> UInt64) {
    let count = benchmark.scaledIterations.count
    precondition(count <= Fixture.accesses)
    var expected: UInt64 = 0
    for i in 0..<count { expected &+= access(f, i) }
    var sum: UInt64 = 0
    benchmark.startMeasurement()
    for i in benchmark.scaledIterations { sum &+= access(f, i) }
    benchmark.stopMeasurement()
    blackHole(sum)
    precondition(sum == expected, "timed reads differ from the untimed pass")
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .instructions, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: smoke ? 0 : 10,
        scalingFactor: .kilo,   // 1000 accesses per measured iteration
        maxDuration: smoke ? .milliseconds(100) : .seconds(2),
        maxIterations: smoke ? 2 : 10_000)

    let conventional: [(name: String, fixture: @Sendable () -> Fixture)] = [
        ("N=1", { fixture1 }), ("N=256", { fixture256 }), ("N=4096", { fixture4096 }),
    ]
    for (name, fixture) in conventional {
        Benchmark("ECAM read \(name)", closure: { measure($0, fixture(), ecamRead) }, setup: { _ = fixture() })
        Benchmark("CF8-CFC read \(name)", closure: { measure($0, fixture(), portRead) }, setup: { _ = fixture() })
    }
    let express: [(name: String, fixture: @Sendable () -> Fixture)] = [
        ("N=1", { pcie1 }), ("N=256", { pcie256 }), ("N=1024", { pcie1024 }),
    ]
    for (name, fixture) in express {
        Benchmark("PCIe ECAM read \(name)", closure: { measure($0, fixture(), ecamRead) }, setup: { _ = fixture() })
    }
    // MMIO dispatch to a BAR as the number of mapped BARs grows: random endpoints' BAR 1.
    let mapped: [(name: String, fixture: @Sendable () -> MappedBARs)] = [
        ("N=1", { reads1 }), ("N=256", { reads256 }), ("N=4096", { reads4096 }),
    ]
    for (name, fixture) in mapped {
        Benchmark("BAR MMIO read \(name)", closure: { measure($0, fixture(), barRead) }, setup: { _ = fixture() })
    }
    // A BAR move commits a new PCI address-space view: its cost as the number of mapped BARs
    // grows (each endpoint's BAR 1 is mapped), one move per measured iteration.
    let moves: [(name: String, fixture: @Sendable () -> MappedBARs)] = [
        ("N=1", { moves1 }), ("N=256", { moves256 }), ("N=4096", { moves4096 }),
    ]
    for (name, fixture) in moves {
        Benchmark("BAR move \(name)",
                  configuration: .init(metrics: [.wallClock, .mallocCountTotal, slotIoctlsPerMove], timeUnits: .microseconds,
                                       warmupIterations: smoke ? 0 : 5, scalingFactor: .one,
                                       maxDuration: smoke ? .milliseconds(100) : .seconds(3), maxIterations: smoke ? 2 : 2000),
                  closure: { measureMoves($0, fixture()) }, setup: { _ = fixture() })
    }
}
