// Hot-plug N endpoints and enumerate them: the cost per device and how it grows with N.
//
// Topology (built and enumerated once per measurement, untimed): pcie.0 has S pcie-root-ports,
// each with an x3130-upstream switch port behind it and 32 xio3130-downstream ports behind that;
// every downstream port is one native hot-plug slot. An endpoint is one pci-testdev function;
// endpoints go in 8 to a slot (multi-function devices: functions 1-7 first, then function 0,
// whose arrival signals the slot, as QEMU does it).
//   N=32:   1 switch, 4 slots       N=256:  1 switch, 32 slots       N=1024: 4 switches, 128 slots
// Timed, per measured iteration: N `Machine.hotPlug` calls, a reset (slots no guest powered hide
// their devices until then), then one firmware enumeration of the whole machine (bus numbering, BAR sizing and placement, for every function present).
// `report.sh` prints wall-clock time per device (median / N) and the growth N=1024 vs N=32.

import Benchmark
import Foundation
import Machine

func switchTopology(switches: Int) -> MachineConfiguration {
    var devices: [DeviceSpec] = []
    for s in 0..<switches {
        devices.append(DeviceSpec(driver: "pcie-root-port", id: "rp\(s)", bus: "pcie.0", devfn: UInt8(s + 1) << 3,
                                  properties: ["chassis": "\(s + 1)", "slot": "0"]))
        devices.append(DeviceSpec(driver: "x3130-upstream", id: "up\(s)", bus: "rp\(s)", devfn: 0))
        for d in 0..<32 {
            devices.append(DeviceSpec(driver: "xio3130-downstream", id: "dp\(s)-\(d)", bus: "up\(s)", devfn: UInt8(d) << 3,
                                      properties: ["chassis": "\(100 + s)", "slot": "\(d)"]))
        }
    }
    // Endpoints get 1 MiB of 64-bit prefetchable space each; give the switches room.
    var config = MachineConfiguration(devices: devices)
    config.memorySize = 64 << 20
    return config
}

func plugAndEnumerate(_ machine: Machine, endpoints: Int) throws -> Int {
    let slots = (endpoints + 7) / 8
    for slot in 0..<slots {
        let s = slot / 32, d = slot % 32
        let count = min(8, endpoints - slot * 8)
        for f in (0..<count).reversed() {
            try machine.hotPlug(DeviceSpec(driver: "pci-testdev", id: "t\(slot)-\(f)", bus: "dp\(s)-\(d)",
                                           devfn: UInt8(f), multifunction: count > 1 && f == 0))
        }
    }
    // No guest powers the slots on: a reset does (occupied slots come out of reset powered, as
    // firmware expects), so enumeration sees what was plugged behind them.
    machine.reset()
    return try machine.runFirmware().functions.count
}

/// SWITCHYARD_BENCH_SMOKE=1: one iteration each (`make test` keeps the workload running).
let smoke = ProcessInfo.processInfo.environment["SWITCHYARD_BENCH_SMOKE"] == "1"

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .microseconds,
        warmupIterations: smoke ? 0 : 1,
        maxDuration: smoke ? .milliseconds(100) : .seconds(10),
        maxIterations: smoke ? 1 : 20)

    for (n, switches) in [(32, 1), (256, 1), (1024, 4)] {
        Benchmark("HotPlug+enumerate N=\(n)", closure: { benchmark in
            let machine = try Machine(switchTopology(switches: switches))
            try machine.runFirmware()
            benchmark.startMeasurement()
            let functions = try plugAndEnumerate(machine, endpoints: n)
            benchmark.stopMeasurement()
            blackHole(functions)
            precondition(functions >= n)
        })
    }
}
