import Interrupts
import Testing
import VMMBase

/// The q35 IOAPIC has 24 inputs (ICH9 datasheet, 82093AA-compatible I/O APIC with 24
/// redirection entries); KVM accepts at most 4096 routes (KVM_MAX_IRQ_ROUTES).
@Suite struct GSIRouteTableTests {
    /// QEMU's PC wiring (hw/i386/kvm/ioapic.c, kvm_pc_setup_irq_routing) and the MADT's
    /// IRQ 0 -> GSI 2 override: the PIT reaches IOAPIC pin 2, the cascade IRQ 2 goes nowhere.
    @Test func pcWiringIsFixed() {
        var table = GSIRouteTable.pc
        #expect(table.routes.count == 23)
        #expect(table.routes[GSI(0)] == .controllers(ioapic: 2, pic: 0))
        #expect(table.routes[GSI(2)] == nil)
        #expect(table.routes[GSI(9)] == .controllers(ioapic: 9, pic: 9))
        #expect(table.routes[GSI(20)] == .ioapic(20))
        #expect(throws: GSIRouteError.fixed(GSI(2))) { try table.update(GSI(2), to: .ioapic(6)) }
        table.release(GSI(5))
        #expect(table.routes[GSI(5)] == .controllers(ioapic: 5, pic: 5))
    }

    @Test func allocationTakesTheLowestFreeGSIAboveTheIOAPIC() throws {
        var table = GSIRouteTable.pc
        let message = MSIMessage(address: 0xFEE0_0000, data: 0x41)
        #expect(try table.allocate(.msi(message)) == GSI(24))
        #expect(try table.allocate(.msi(message)) == GSI(25))
        table.release(GSI(24))
        #expect(try table.allocate(.ioapic(3)) == GSI(24))
        try table.update(GSI(25), to: .msi(MSIMessage(address: 0xFEE0_1000, data: 0x42)))
        #expect(table.routes[GSI(25)] == .msi(MSIMessage(address: 0xFEE0_1000, data: 0x42)))
        #expect(throws: GSIRouteError.notAllocated(GSI(26))) { try table.update(GSI(26), to: .msi(message)) }
        #expect(table.sorted.map(\.gsi.number) == [0, 1] + Array(3...25))
    }

    @Test func badRoutesAndExhaustionAreRefused() throws {
        var table = GSIRouteTable(fixed: [:], limit: 26)
        #expect(throws: GSIRouteError.noSuchInput(.ioapic(24))) { try table.allocate(.ioapic(24)) }
        #expect(throws: GSIRouteError.noSuchInput(.controllers(ioapic: nil, pic: 16))) {
            try table.allocate(.controllers(ioapic: nil, pic: 16))
        }
        _ = try table.allocate(.ioapic(1))
        _ = try table.allocate(.ioapic(2))
        #expect(throws: GSIRouteError.exhausted(limit: 26)) { try table.allocate(.ioapic(1)) }
        #expect("\(GSIRouteError.exhausted(limit: 26))" == "no free GSI: all 26 are routed")
    }
}
