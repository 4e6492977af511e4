import Foundation
import Testing

/// INTx routes follow the guest's rewrites of the ICH9 pin routing. The ICH9 datasheet
/// (chipset configuration registers, D28IR at RCBA + 0x3146, reset value 0x3210: INTA-D of
/// device 28 on PIRQA-D) and QEMU's lpc_ich9 (PIRQ A-H drive IOAPIC inputs 16-23 in APIC
/// mode) give the expected IOAPIC inputs; qtest's `irq_intercept_in ioapic` shows them.
@Suite("INTx routing follows D28IR", .serialized)
struct INTxRoutingTests {
    static let rcba: UInt32 = 0xFED1_C000
    static let d28IR = rcba + 0x3146

    /// Enables the chipset configuration block (LPC RCBA, bit 0 = enable).
    static func enableRCBA(_ qt: QTestClient) throws {
        try qt.configWrite(device: 0x1F, offset: 0xF0, width: "l", value: rcba | 1)
    }

    /// A pci-testdev in slot 28 asserts INTA (PIRQA, input 16); the guest moves INTA of slot 28
    /// to PIRQD while the line is high: input 16 drops and input 19 rises at the write, and the
    /// device's deassertion then lowers 19. Nothing stays stuck high.
    @Test func assertedLineMovesWithTheRoute() throws {
        let vm = try QTestProtocolTests.start(["-device", "pci-testdev,id=t0,addr=0x1c"])
        let qt = vm.qtest
        defer { vm.stop() }
        try qt.configWrite(device: 0x1C, offset: 0x14, width: "l", value: 0xC000_0000)   // BAR1
        try qt.configWrite(device: 0x1C, offset: 0x04, width: "w", value: 0x0002)        // memory decode
        try Self.enableRCBA(qt)
        #expect(try qt.command("readw 0x\(String(Self.d28IR, radix: 16))") == "OK 0x0000000000003210")
        #expect(try qt.command("irq_intercept_in ioapic") == "OK")
        #expect(try qt.command("writel 0xc0000100 1") == "OK")
        #expect(qt.takeIRQs() == ["IRQ raise 16"])
        // INTA -> PIRQD (3), the other pins as they were.
        #expect(try qt.command("writew 0x\(String(Self.d28IR, radix: 16)) 0x3213") == "OK")
        #expect(qt.takeIRQs() == ["IRQ lower 16", "IRQ raise 19"])
        // Rewriting other slots' routing or the same value again moves nothing.
        #expect(try qt.command("writew 0x\(String(Self.rcba + 0x3144, radix: 16)) 0x0123") == "OK")   // D29IR
        #expect(try qt.command("writew 0x\(String(Self.d28IR, radix: 16)) 0x3213") == "OK")
        #expect(qt.takeIRQs().isEmpty)
        #expect(try qt.command("writel 0xc0000104 0") == "OK")
        #expect(qt.takeIRQs() == ["IRQ lower 19"])
        #expect(try qt.command("writel 0xc0000100 1") == "OK")
        #expect(qt.takeIRQs() == ["IRQ raise 19"])
        // PIRQx_ROUT steers a link to the 8259s only; the IOAPIC input stays (APIC mode).
        try qt.configWrite(device: 0x1F, offset: 0x63, width: "b", value: 0x0B)
        #expect(qt.takeIRQs().isEmpty)
        #expect(try qt.command("writel 0xc0000104 0") == "OK")
        #expect(qt.takeIRQs() == ["IRQ lower 19"])
    }

    /// Behind a PCI-PCI bridge in slot 28 the pin is swizzled first: device 1's INTA arrives at
    /// the bridge's slot as INTB (PCI-to-PCI Bridge 1.2, table 9-1), which D28IR bits 6:4 route.
    @Test func swizzledPinFollowsItsOwnField() throws {
        let vm = try QTestProtocolTests.start([
            "-device", "pci-bridge,id=br,chassis_nr=1,addr=0x1c,shpc=off",
            "-device", "pci-testdev,id=t1,bus=br,addr=0x1"])
        let qt = vm.qtest
        defer { vm.stop() }
        try qt.configWrite(device: 0x1C, offset: 0x18, width: "l", value: 0x0001_0100)   // buses 0 -> 1..1
        try qt.configWrite(device: 0x1C, offset: 0x20, width: "l", value: 0xC000_C000)   // memory window
        try qt.configWrite(device: 0x1C, offset: 0x04, width: "w", value: 0x0006)
        try qt.configWrite(bus: 1, device: 1, offset: 0x14, width: "l", value: 0xC000_0000)
        try qt.configWrite(bus: 1, device: 1, offset: 0x04, width: "w", value: 0x0002)
        try Self.enableRCBA(qt)
        #expect(try qt.command("irq_intercept_in ioapic") == "OK")
        #expect(try qt.command("writel 0xc0000100 1") == "OK")
        #expect(qt.takeIRQs() == ["IRQ raise 17"])                        // INTB -> PIRQB
        #expect(try qt.command("writew 0x\(String(Self.d28IR, radix: 16)) 0x3260") == "OK")   // INTB -> PIRQG
        #expect(qt.takeIRQs() == ["IRQ lower 17", "IRQ raise 22"])
        #expect(try qt.command("writel 0xc0000104 0") == "OK")
        #expect(qt.takeIRQs() == ["IRQ lower 22"])
    }

    /// Two pcie-root-ports in slot 28 (functions 0 and 1, both INTA) with MSI off raise their
    /// hot-plug interrupts on INTA. A device_add into the first before, and into the second
    /// after, the guest moves INTA of slot 28 from PIRQA to PIRQD (with the lines low) must
    /// raise the same IOAPIC inputs on Switchyard as on QEMU 10.
    static func hotPlugIRQs(_ executable: String, grace: Double, extra: [String]) throws -> [String] {
        let vm = try QTestSession(executable, extra + [
            "-device", "pcie-root-port,id=rp0,chassis=1,slot=1,addr=0x1c.0,multifunction=on",
            "-device", "pcie-root-port,id=rp1,chassis=2,slot=2,addr=0x1c.1",
            // Native PCIe hot-plug: QEMU 10's q35 defaults to ACPI hot-plug, which leaves the slot alone.
            "-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
            "-m", "128M", "-display", "none", "-nodefaults"], monitor: .qmp(negotiated: true), name: "intxdiff", grace: grace)
        defer { vm.stop() }
        let (qt, qmp) = (vm.qtest, vm.qmp!)
        var seen: [String] = []
        try qt.command("irq_intercept_in ioapic")
        try enableRCBA(qt)
        // Slot Control and Slot Status (PCIe capability at 0x54, + 0x18 and + 0x1A).
        func cycle(_ label: String, function: Int, bus: String) throws {
            seen.append("\(label) pin \(try qt.configRead(device: 0x1C, function: function, offset: 0x3C))")
            // Presence Detect Changed Enable and Hot-Plug Interrupt Enable, slot powered.
            try qt.configWrite(device: 0x1C, function: function, offset: 0x6C, width: "w", value: 0x0028)
            let added = try qmp.execute("device_add", #"{"driver": "pci-testdev", "id": "t-\#(bus)", "bus": "\#(bus)"}"#)
            seen.append("\(label) device_add \(added)")
            try qt.command("readl 0x0")   // IRQ notices sent before this reply are in by now
            seen += qt.takeIRQs().map { "\(label) \($0)" }
            try qt.configWrite(device: 0x1C, function: function, offset: 0x6E, width: "w", value: 0x0008)   // clear PDC
            seen += qt.takeIRQs().map { "\(label) \($0)" }
        }
        try cycle("PIRQA", function: 0, bus: "rp0")
        try qt.command("writew 0x\(String(d28IR, radix: 16)) 0x3213")
        seen += qt.takeIRQs().map { "rewrite \($0)" }
        try cycle("PIRQD", function: 1, bus: "rp1")
        return seen
    }

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(2)))
    func hotPlugInterruptUsesTheRewrittenRouteAsOnQEMU() throws {
        let ours = try Self.hotPlugIRQs(switchyardBinary, grace: 5, extra: ["-machine", "q35", "-accel", "qtest"])
        let theirs = try Self.hotPlugIRQs(QTestDifferentialTests.qemu!, grace: 0, extra: [
            "-machine", "q35", "-accel", "tcg", "-S", "-monitor", "none", "-serial", "none"])
        #expect(ours == theirs)
        // The datasheet facts both must show, so that failing alike cannot pass.
        #expect(ours.contains("PIRQA IRQ raise 16") && ours.contains("PIRQA IRQ lower 16"))
        #expect(ours.contains("PIRQD IRQ raise 19") && ours.contains("PIRQD IRQ lower 19"))
        #expect(!ours.contains { $0.hasPrefix("PIRQD") && $0.hasSuffix(" 16") })
    }
}
