import Foundation
import Testing
@testable import switchyard_fuzz

/// The `vfio` target's seeds get past assignment and firmware to the guest's accesses (a target
/// that refused every input would fuzz nothing), with the BARs QEMU's devices have, and a
/// capability chain that points at itself is assigned and walked without hanging.
@Suite struct VFIOFuzzSeedTests {
    @Test(arguments: [("igb-msix-table-trapped", [0x20000, 0x20000, 32, 0x4000] as [UInt64]),
                      ("nvme-sriov-pf", [0x4000]), ("capability-loop", [0x1000])])
    func seedsReachTheGuestsAccesses(_ name: String, _ sizes: [UInt64]) throws {
        let input = try ReusedMachineTests.input("vfio", name)
        var run = try #require(VFIOFuzzRun(input), "\(name): assignment or firmware refused the seed")
        #expect(run.bars.map(\.size) == sizes)
        #expect(!run.bytes.isEmpty, "\(name) has no operations")
        run.run()
        #expect(run.bytes.isEmpty)
    }
}
