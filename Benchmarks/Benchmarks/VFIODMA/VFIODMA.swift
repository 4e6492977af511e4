// Assigning a host device maps guest RAM for DMA. Measured: our side only, against the VFIO
// twin (Sources/VFIO/Twin), which keeps maps in a table: the group and container calls, the
// RAM-bank plan from the committed memory view and the DMA mirror, for a 1 GiB guest (one bank)
// and a 4 GiB guest (2 GiB below 4 GiB, 2 GiB above). Not measured: the kernel's page pinning
// in VFIO_IOMMU_MAP_DMA, which grows with RAM size; it needs a host with VFIO (the rig).
// Timed, per iteration: `MachineVFIO.openDevice` (maps RAM) then `release` (unmaps it).
// `report.sh` prints the medians and the 4 GiB / 1 GiB ratio from the same run.

import Benchmark
import Foundation
import Machine
import VFIO
import VMMBase

/// SWITCHYARD_BENCH_SMOKE=1: one iteration each (`make test` keeps the workload running).
let smoke = ProcessInfo.processInfo.environment["SWITCHYARD_BENCH_SMOKE"] == "1"

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .microseconds,
        warmupIterations: smoke ? 0 : 10,
        maxDuration: smoke ? .milliseconds(100) : .seconds(5),
        maxIterations: smoke ? 1 : 2000)

    for gib in [1, 4] {
        Benchmark("VFIO DMA map+unmap \(gib) GiB") { benchmark in
            let machine = try Machine(MachineConfiguration(memorySize: UInt64(gib) << 30))
            let address = PCIAddress(bus: 1, device: 0, function: 0)!
            let identity = VFIOTwinIdentity(name: "bench", config: [UInt8](repeating: 0, count: 256),
                                            bars: [.init(index: 0, kind: .memory32(prefetchable: false), size: 0x1000)])
            let twin = try VFIOTwinDevice(name: "\(address)", identity: identity)
            let vfio = try machine.vfio(kernel: VFIOTwinKernel(devices: [.init(address: address, group: 1, device: twin)]))
            for _ in benchmark.scaledIterations {
                let assignment = try vfio.openDevice(address)
                precondition(vfio.dmaMappings.count == (gib == 1 ? 1 : 2))
                vfio.release(assignment)
            }
        }
    }
}
