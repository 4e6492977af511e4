import Foundation
import HostOS
import KVM
import TestRequirements
import Testing
import VMMBase

private let probeDirectory = repositoryRoot + "/Firmware/realmode-probe"

@Suite struct RealModeProbeTests {
    @Test(.requires(kvmAvailable, noKVM))
    func probeListsBusZeroOnTheUART() throws {
        let code = try FileSystem.readFile(probeDirectory + "/probe.bin")
        let platform = FakePlatform(functions: [
            0x00: (0x8086, 0x29C0),  // q35 host bridge
            0x02: (0x1B36, 0x0005),  // QEMU PCI test device
            0x1F: (0x8086, 0x2918),  // ICH9 LPC
        ])
        let (vm, vcpu) = try makeRealModeGuest(code)
        let reasons = try runWithWatchdog([vcpu], handler: platform)
        withExtendedLifetime(vm) {}

        #expect(reasons == [.halted], "the probe did not reach its hlt in 5 s: \(platform.uartOutput.debugDescription)")
        #expect(platform.uartOutput == """
            00:00.0 8086:29c0
            00:02.0 1b36:0005
            00:1f.0 8086:2918

            """)
        #expect(platform.unexpectedAccesses == [])
        print("realmode-probe printed:\n\(platform.uartOutput)", terminator: "")
    }

    @Test(.requires(kvmAvailable, noKVM))
    func probeWithNoDevicesPrintsNothingAndHalts() throws {
        let code = try FileSystem.readFile(probeDirectory + "/probe.bin")
        let platform = FakePlatform(functions: [:])
        let (vm, vcpu) = try makeRealModeGuest(code)
        let reasons = try runWithWatchdog([vcpu], handler: platform)
        withExtendedLifetime(vm) {}
        #expect(reasons == [.halted])
        #expect(platform.uartOutput == "")
    }

    @Test(.requires(ProbeAssembler.available, ProbeAssembler.unavailable))
    func committedBytesMatchAFreshAssembly() throws {
        #expect(try ProbeAssembler.assemble(probe: "realmode-probe") == ProbeAssembler.committed(probe: "realmode-probe"),
                "Firmware/realmode-probe/probe.bin is stale; rebuild it (see its README)")
    }
}
