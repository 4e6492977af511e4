import Interrupts
import Testing
import VMMBase

/// The q35 IOAPIC has 24 inputs (ICH9 datasheet, 82093AA-compatible I/O APIC with 24
/// redirection entries); KVM accepts at most 4096 routes (KVM_MAX_IRQ_ROUTES).
@Suite struct GSIRouteTableTests {
    @Test func ioapicInputsAreRoutedOneToOneAndFixed() {
        var table = GSIRouteTable()
        #expect(table.routes.count == 24)
        #expect((0..<24).allSatisfy { table.routes[GSI($0)] == .ioapic(pin: $0) })
        #expect(throws: GSIRouteError.fixed(GSI(5))) { try table.update(GSI(5), to: .ioapic(pin: 6)) }
        table.release(GSI(5))
        #expect(table.routes[GSI(5)] == .ioapic(pin: 5))
    }

    @Test func allocationTakesTheLowestFreeGSIAboveTheIOAPIC() throws {
        var table = GSIRouteTable()
        let message = MSIMessage(address: 0xFEE0_0000, data: 0x41)
        #expect(try table.allocate(.msi(message)) == GSI(24))
        #expect(try table.allocate(.msi(message)) == GSI(25))
        table.release(GSI(24))
        #expect(try table.allocate(.ioapic(pin: 3)) == GSI(24))
        try table.update(GSI(25), to: .msi(MSIMessage(address: 0xFEE0_1000, data: 0x42)))
        #expect(table.routes[GSI(25)] == .msi(MSIMessage(address: 0xFEE0_1000, data: 0x42)))
        #expect(throws: GSIRouteError.notAllocated(GSI(26))) { try table.update(GSI(26), to: .msi(message)) }
        #expect(table.sorted.map(\.gsi.number) == Array(0...25))
    }

    @Test func badRoutesAndExhaustionAreRefused() throws {
        var table = GSIRouteTable(ioapicPins: 24, limit: 26)
        #expect(throws: GSIRouteError.noSuchPin(24, pins: 24)) { try table.allocate(.ioapic(pin: 24)) }
        _ = try table.allocate(.ioapic(pin: 1))
        _ = try table.allocate(.ioapic(pin: 2))
        #expect(throws: GSIRouteError.exhausted(limit: 26)) { try table.allocate(.ioapic(pin: 1)) }
        #expect("\(GSIRouteError.exhausted(limit: 26))" == "no free GSI: all 26 are routed")
    }
}
