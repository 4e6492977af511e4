import Foundation
import Testing

/// The userspace IOAPIC against QEMU 10's (q35, TCG): one qtest script reads and writes its
/// registers through IOREGSEL/IOWIN at 0xFEC00000, drives inputs with `set_irq_in`, and sends
/// EOIs through the EOI register; every reply must be the same on both.
@Suite("IOAPIC differential against QEMU")
struct IOAPICDifferentialTests {
    static func script(_ executable: String, grace: Double, extra: [String]) throws -> [(String, String)] {
        let listener = try TestListener(name: "ioapicdiff")
        let child = try ChildProcess(executable, extra + ["-m", "128M", "-display", "none", "-nodefaults",
                                                          "-qtest", "unix:\(listener.path)", "-qtest-log", "none"])
        defer { child.stop(grace: grace) }
        let qt = QTestClient(try listener.accept())
        var seen: [(String, String)] = []
        func read(_ name: String, _ index: Int) throws {
            try qt.command("writel 0xfec00000 0x\(String(index, radix: 16))")
            seen.append((name, try qt.command("readl 0xfec00010")))
        }
        func write(_ index: Int, _ value: UInt32) throws {
            try qt.command("writel 0xfec00000 0x\(String(index, radix: 16))")
            try qt.command("writel 0xfec00010 0x\(String(value, radix: 16))")
        }
        func step(_ name: String, _ command: String) throws { seen.append((name, try qt.command(command))) }

        for (name, index) in [("id", 0), ("version", 1), ("arbitration", 2), ("index 3", 3), ("entry 0 low", 0x10),
                              ("entry 0 high", 0x11), ("entry 23 low", 0x3E), ("entry 23 high", 0x3F), ("index 0x40", 0x40)] {
            try read("reset \(name)", index)
        }
        try step("IOREGSEL keeps 8 bits", "writel 0xfec00000 0x1ff")
        try step("IOREGSEL read", "readl 0xfec00000")
        try step("IOREGSEL byte read", "readb 0xfec00000")
        try write(0, 0xFFFF_FFFF)
        try read("id after all ones", 0)
        try write(1, 0xFFFF_FFFF)
        try read("version is read-only", 1)
        try write(0x10, 0xFFFF_FFFF)
        try read("entry 0 low: delivery status and remote IRR read-only", 0x10)
        try write(0x11, 0xFFFF_FFFF)
        try read("entry 0 high", 0x11)
        // Entry 4: vector 0x30, level-triggered, unmasked.
        try write(0x18, 0x8030)
        try step("raise input 4", "set_irq_in ioapic unnamed-gpio-in 4 1")
        try read("entry 4 after raise: remote IRR", 0x18)
        try step("EOI 0x30 while high", "writel 0xfec00040 0x30")
        try read("entry 4 after EOI while high: delivered again", 0x18)
        try step("lower input 4", "set_irq_in ioapic unnamed-gpio-in 4 0")
        try read("entry 4 after lower", 0x18)
        try step("EOI 0x31 (other vector)", "writel 0xfec00040 0x31")
        try read("entry 4 after another vector's EOI", 0x18)
        try step("EOI 0x30", "writel 0xfec00040 0x30")
        try read("entry 4 after EOI", 0x18)
        // Entry 6 masked and level-triggered: a raised input waits; unmasking delivers it.
        try write(0x1C, 0x1_8040)
        try step("raise input 6 (masked)", "set_irq_in ioapic unnamed-gpio-in 6 1")
        try read("entry 6 masked", 0x1C)
        try write(0x1C, 0x8040)
        try read("entry 6 unmasked", 0x1C)
        // Entry 5 edge-triggered: no remote IRR, even if software writes it.
        try write(0x1A, 0x4031)
        try step("raise input 5", "set_irq_in ioapic unnamed-gpio-in 5 1")
        try read("entry 5 edge", 0x1A)
        // ISA IRQ 0 arrives on pin 2.
        try write(0x14, 0x8050)
        try step("raise input 0", "set_irq_in ioapic unnamed-gpio-in 0 1")
        try read("entry 2 after input 0", 0x14)
        try step("window byte read", "readb 0xfec00010")
        try step("EOI register read", "readl 0xfec00040")
        try step("offset 0x20 read", "readl 0xfec00020")
        return seen
    }

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(1)))
    func registersAndDeliveryMatchQEMU() throws {
        let ours = try Self.script(switchyardBinary, grace: 5, extra: ["-machine", "q35", "-accel", "qtest"])
        let theirs = try Self.script(QTestDifferentialTests.qemu!, grace: 0, extra: [
            "-machine", "q35", "-accel", "tcg", "-S", "-monitor", "none", "-serial", "none"])
        #expect(ours.map(\.0) == theirs.map(\.0))
        for (a, b) in zip(ours, theirs) where a.1 != b.1 {
            Issue.record("\(a.0): switchyard '\(a.1)', QEMU '\(b.1)'")
        }
        // Datasheet facts both must show (82093AA: version 0x20, 24 entries; masked at reset;
        // Remote IRR set while a level interrupt is in service).
        let reply = Dictionary(ours, uniquingKeysWith: { a, _ in a })
        #expect(reply["reset version"] == "OK 0x0000000000170020")
        #expect(reply["reset entry 0 low"] == "OK 0x0000000000010000")
        #expect(reply["entry 4 after raise: remote IRR"] == "OK 0x000000000000c030")
        #expect(reply["entry 4 after EOI"] == "OK 0x0000000000008030")
    }
}
