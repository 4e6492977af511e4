import Chipset
import Foundation
import KVM
import Machine
import TestRequirements
import Testing

/// Firmware/pam-probe programs PAM and SMRAM through CF8/CFC from a real-mode guest on the
/// host's KVM, and reads and writes the legacy segments; Switchyard's q35 handles the config
/// cycles, commits the new memory map and keeps KVM's memory slots in step before the vCPU
/// resumes. Each line must say what the Intel 3 Series MCH datasheet says those accesses reach.
@Suite struct PAMProbeTests {
    static let hasKVM = KVMSystem.isAvailable(path: "/dev/kvm")
    static let probeDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Firmware/pam-probe")

    /// The datasheet's PAM table: 00 DRAM disabled (reads and writes go to PCI, where nothing
    /// answers: reads all-ones, writes vanish), 01 read only (reads DRAM, writes go to PCI),
    /// 10 write only (writes DRAM, reads from PCI), 11 normal. The probe reads r1 after
    /// selecting the attribute over DRAM holding a5, r2 after writing 5a, r3 (DRAM) after
    /// going back to 11.
    static let pamTable: [(attribute: Int, r1: String, r2: String, r3: String)] = [
        (0, "ff", "ff", "a5"),
        (1, "a5", "a5", "a5"),
        (2, "ff", "ff", "5a"),
        (3, "a5", "5a", "5a"),
    ]

    @Test(.requires(hasKVM, "no usable /dev/kvm on this host"), .timeLimit(.minutes(1)))
    func legacySegmentsFollowTheDatasheet() throws {
        let program = try [UInt8](Data(contentsOf: Self.probeDirectory.appendingPathComponent("probe.bin")))
        let serial = CaptureSerialBackend()
        let machine = try Machine(MachineConfiguration(memorySize: 64 << 20), serialBackend: serial)
        let reasons = try machine.runRealModeProgram(program, timeoutMilliseconds: 20_000)
        #expect(reasons == [.halted])
        var expected: [String] = []
        for segment in ["f000", "c000"] {
            expected += Self.pamTable.map { "\(segment) \($0.attribute) \($0.r1) \($0.r2) \($0.r3)" }
        }
        // SMRAM: open, DRAM at 0xA0000 (a5 written and read); closed, non-SMM reads miss DRAM
        // and the write does not reach it; open again, DRAM still holds a5.
        expected.append("a000 s a5 ff a5")
        #expect(serial.text.split(separator: "\n").map(String.init) == expected)
    }

    @Test(.requires(ProbeAssembler.available, ProbeAssembler.unavailable))
    func committedBytesMatchAFreshAssembly() throws {
        #expect(try ProbeAssembler.assemble(probe: "pam-probe") == ProbeAssembler.committed(probe: "pam-probe"),
                "Firmware/pam-probe/probe.bin is stale; rebuild it (see its README)")
    }
}
