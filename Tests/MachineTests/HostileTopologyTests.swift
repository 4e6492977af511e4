import Machine
import Testing
import VMMBase

/// Issue 12's bad-input list: a guest that programs overlapping BARs, BARs over RAM or ECAM,
/// bridge windows that wrap, MSI addresses outside the interrupt window, or bus numbers that
/// form loops. Each must leave the machine serving (no trap, no hang), keep RAM and ECAM
/// intact, and where the guest made a real mistake say so in a guest-error line. Expected
/// behaviour comes from the PCI specs: a window whose base is above its limit forwards
/// nothing (PCI-PCI Bridge 1.2, 3.2.5.8), a bridge forwards type-1 cycles only for buses in
/// secondary...subordinate (3.2.5.3), and RAM is not a BAR's to take.
@Suite(.serialized) struct HostileTopologyTests {
    /// pcie.0: t0 (02.0), t1 (05.0); a bridge (03.0) with t2 (01.0) and t3 (02.0) behind it.
    /// Ids start with `prefix`, so that a test finds its own guest-error lines (the log keeps
    /// the latest 256 and rate-limits per device and kind across the whole test process).
    struct Rig {
        let machine: Machine
        let ecam: ECAMConfigCycles
        let report: EnumerationReport

        init(_ prefix: String = "hostile") throws {
            machine = try Machine(MachineConfiguration(devices: [
                DeviceSpec(driver: "pci-testdev", id: "\(prefix)-t0", bus: "pcie.0", devfn: 2 << 3),
                DeviceSpec(driver: "pci-bridge", id: "\(prefix)-br", bus: "pcie.0", devfn: 3 << 3),
                DeviceSpec(driver: "pci-testdev", id: "\(prefix)-t2", bus: "\(prefix)-br", devfn: 1 << 3),
                DeviceSpec(driver: "pci-testdev", id: "\(prefix)-t3", bus: "\(prefix)-br", devfn: 2 << 3),
                DeviceSpec(driver: "pci-testdev", id: "\(prefix)-t1", bus: "pcie.0", devfn: 5 << 3),
            ]))
            report = try machine.runFirmware()
            ecam = ECAMConfigCycles(machine, base: machine.configuration.layout.ecamBase)
        }

        /// BAR 1 (4 KiB, 32-bit memory) of the pci-testdev at bus:devfn, as firmware placed it.
        func bar1(bus: UInt8, devfn: UInt8) throws -> AddressRange {
            let f = try #require(report.functions.first { $0.address.bus == bus && $0.address.devfn == devfn })
            return try #require(f.bars.first { $0.index == 1 }?.range)
        }

        func moveBAR1(bus: UInt8, devfn: UInt8, to address: UInt64) {
            ecam.write(bus: bus, devfn: devfn, offset: 0x14, width: .dword, value: UInt32(truncatingIfNeeded: address))
        }
    }

    static func logged(by device: String, _ text: String) -> Bool {
        GuestErrorLog.recent.contains { $0.device == device && $0.message.contains(text) }
    }

    @Test func overlappingBARsAreReportedAndOneAnswers() throws {
        let rig = try Rig("overlap")
        let t2 = try rig.bar1(bus: 1, devfn: 1 << 3), t3 = try rig.bar1(bus: 1, devfn: 2 << 3)
        rig.machine.mmioWrite(t2.base, width: .dword, value: 0x1111_1111)
        rig.machine.mmioWrite(t3.base, width: .dword, value: 0x2222_2222)
        rig.moveBAR1(bus: 1, devfn: 2 << 3, to: t2.base)
        #expect(Self.logged(by: "pci bus overlap-br", "overlaps"), "no guest-error line for two BARs at \(t2)")
        let answer = rig.machine.mmioRead(t2.base, width: .dword)
        #expect(answer == 0x1111_1111 || answer == 0x2222_2222, "neither device answers at the overlap: \(hex(answer, 8))")
        #expect(rig.machine.mmioRead(t3.base, width: .dword) == 0xFFFF_FFFF, "t3 still answers where it left")
        // Moved apart again, both answer with their own data.
        rig.moveBAR1(bus: 1, devfn: 2 << 3, to: t3.base)
        #expect(rig.machine.mmioRead(t2.base, width: .dword) == 0x1111_1111)
        #expect(rig.machine.mmioRead(t3.base, width: .dword) == 0x2222_2222)
    }

    @Test func aBAROverRAMOrECAMTakesNeither() throws {
        let rig = try Rig()
        let ramAddress: UInt64 = 0x10_0000
        try rig.machine.guestMemory.write(at: GuestAddress(ramAddress), bytes: [0xA5, 0x5A, 0xC3, 0x3C])
        rig.moveBAR1(bus: 0, devfn: 2 << 3, to: ramAddress)
        rig.machine.mmioWrite(ramAddress + 4, width: .dword, value: 0xDEAD_BEEF)
        #expect(rig.machine.mmioRead(ramAddress, width: .dword) == 0x3CC3_5AA5, "RAM under the BAR no longer reads back")
        #expect(try rig.machine.guestMemory.read(at: GuestAddress(ramAddress + 4), count: 4) == [0xEF, 0xBE, 0xAD, 0xDE],
                "a write to RAM under the BAR did not reach RAM")
        let ecamBase = rig.machine.configuration.layout.ecamBase
        rig.moveBAR1(bus: 0, devfn: 5 << 3, to: ecamBase)
        #expect(rig.machine.mmioRead(ecamBase, width: .dword) == 0x29C0_8086, "ECAM at bus 0 device 0 is shadowed by a BAR")
        #expect(rig.ecam.read(bus: 0, devfn: 5 << 3, offset: 0, width: .dword) == 0x0005_1B36)
    }

    @Test func aWindowWithBaseAboveLimitForwardsNothing() throws {
        let rig = try Rig()
        let t2 = try rig.bar1(bus: 1, devfn: 1 << 3)
        rig.machine.mmioWrite(t2.base, width: .dword, value: 0x3333_3333)
        #expect(rig.machine.mmioRead(t2.base, width: .dword) == 0x3333_3333)
        let window = rig.ecam.read(bus: 0, devfn: 3 << 3, offset: 0x20, width: .dword)
        // Base 0xFFF0_0000, limit 0x0000_0000: "wraps"; the bridge must forward nothing.
        rig.ecam.write(bus: 0, devfn: 3 << 3, offset: 0x20, width: .dword, value: 0x0000_FFF0)
        #expect(rig.machine.mmioRead(t2.base, width: .dword) == 0xFFFF_FFFF, "a closed window still forwards to t2")
        for probe: UInt64 in [0, 0xFFF0_0000, 0xFFFF_FFFC] { _ = rig.machine.mmioRead(probe, width: .dword) }
        rig.ecam.write(bus: 0, devfn: 3 << 3, offset: 0x20, width: .dword, value: window)
        #expect(rig.machine.mmioRead(t2.base, width: .dword) == 0x3333_3333, "the window reopened but t2 does not answer")
    }

    @Test func busNumbersThatLoopEndNowhere() throws {
        let rig = try Rig()
        let numbers = rig.ecam.read(bus: 0, devfn: 3 << 3, offset: 0x18, width: .dword)
        // Secondary 0 (the bridge's own bus), subordinate 0; then secondary above subordinate.
        for value: UInt32 in [0x0000_0000, 0x0001_0500, 0x00FF_0000, 0x0000_0101] {
            rig.ecam.write(bus: 0, devfn: 3 << 3, offset: 0x18, width: .dword, value: value)
            // Every bus must answer (or master-abort) at once: no cycle may go round forever.
            for bus: UInt8 in [0, 1, 2, 5, 0xFF] {
                _ = rig.ecam.read(bus: bus, devfn: 1 << 3, offset: 0, width: .dword)
            }
            #expect(rig.ecam.read(bus: 0, devfn: 2 << 3, offset: 0, width: .dword) == 0x0005_1B36, "bus 0 lost t0")
        }
        rig.ecam.write(bus: 0, devfn: 3 << 3, offset: 0x18, width: .dword, value: numbers)
        #expect(rig.ecam.read(bus: 1, devfn: 1 << 3, offset: 0, width: .dword) == 0x0005_1B36, "t2 not back behind br1")
    }

    @Test func anMSIOutsideTheInterruptWindowIsAMemoryWriteAndReported() throws {
        let rig = try Rig("msi")
        let t0 = try rig.bar1(bus: 0, devfn: 2 << 3)
        try rig.machine.guestMemory.write(at: GuestAddress(0x2000), bytes: [UInt8](repeating: 0, count: 16))
        // MSI-X vector 0 of t0 (table at BAR 1 + 0x800): address 0x2000 (RAM), data 0x41, unmasked.
        rig.machine.mmioWrite(t0.base + 0x800, width: .dword, value: 0x2000)
        rig.machine.mmioWrite(t0.base + 0x804, width: .dword, value: 0)
        rig.machine.mmioWrite(t0.base + 0x808, width: .dword, value: 0x41)
        rig.machine.mmioWrite(t0.base + 0x80C, width: .dword, value: 0)
        // MSI-X enable (capability's message control bit 15) and bus mastering, then ring vector 0.
        let msix = try #require(Self.capability(0x11, rig: rig, devfn: 2 << 3))
        let control = rig.ecam.read(bus: 0, devfn: 2 << 3, offset: msix + 2, width: .word)
        rig.ecam.write(bus: 0, devfn: 2 << 3, offset: msix + 2, width: .word, value: control | 0x8000)
        rig.ecam.write(bus: 0, devfn: 2 << 3, offset: 0x04, width: .word, value: 0x0006)
        rig.machine.mmioWrite(t0.base + 0x100, width: .dword, value: 0)
        #expect(Self.logged(by: "msi-t0", "outside the interrupt window"), "no guest-error line for an MSI to 0x2000")
        // An MSI is a dword memory write (PCI Local Bus 3.0, 6.8): one aimed at RAM writes RAM,
        // inside guest memory, and interrupts nobody.
        #expect(try rig.machine.guestMemory.read(at: GuestAddress(0x2000), count: 8) == [0x41, 0, 0, 0, 0, 0, 0, 0])
    }

    static func capability(_ id: UInt32, rig: Rig, devfn: UInt8) -> Int? {
        var offset = Int(rig.ecam.read(bus: 0, devfn: devfn, offset: 0x34, width: .byte))
        for _ in 0..<48 where offset >= 0x40 {
            if rig.ecam.read(bus: 0, devfn: devfn, offset: offset, width: .byte) == id { return offset }
            offset = Int(rig.ecam.read(bus: 0, devfn: devfn, offset: offset + 1, width: .byte))
        }
        return nil
    }
}
