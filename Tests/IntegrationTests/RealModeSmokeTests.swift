import Chipset
import Foundation
import KVM
import Machine
import TestRequirements
import Testing

/// The 16-bit probe in Firmware/realmode-probe walks bus 0 through CF8/CFC and prints what it
/// finds on COM1. Run under the host's KVM with Switchyard's q35 as the exit handler, its
/// output must list exactly the machine's bus-0 devices (function 0 of each).
@Suite struct RealModeSmokeTests {
    static let hasKVM = KVMSystem.isAvailable(path: "/dev/kvm")

    @Test(.requires(hasKVM, "no usable /dev/kvm on this host"), .timeLimit(.minutes(1)))
    func probeListsBusZeroOnTheUART() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let program = try [UInt8](Data(contentsOf: root.appendingPathComponent("Firmware/realmode-probe/probe.bin")))
        let serial = CaptureSerialBackend()
        let machine = try Machine(.defaultMachine, serialBackend: serial)
        let reasons = try machine.runRealModeProgram(program, timeoutMilliseconds: 10_000)
        #expect(reasons == [.halted])
        let lines = serial.text.split(separator: "\n").map(String.init)
        #expect(lines == ["00:00.0 8086:29c0", "00:02.0 1b36:0005", "00:03.0 1b36:0001", "00:04.0 1b36:000c", "00:1f.0 8086:2918"])
    }
}
