import Interrupts
import Machine
import Synchronization
import Testing
import VMMBase

@Suite struct PIRQSteeringTests {
    final class Routes: Sendable {
        let table = Mutex<[PIRQ: UInt8]>([.a: 10, .b: 10, .c: 11, .e: 2])
        func route(_ link: PIRQ) -> UInt8? { table.withLock { $0[link] } }
    }

    @Test func linksReachTheirIOAPICPinAndTheSteeredIRQ() {
        let out = RecordingSink(), routes = Routes()
        let sink = PIRQSteeringSink(downstream: out, route: routes.route)
        sink.setLevel(GSI(16), high: true)          // PIRQA -> IRQ 10
        #expect(out.isHigh(GSI(16)) && out.isHigh(GSI(10)))
        sink.setLevel(GSI(17), high: true)          // PIRQB shares IRQ 10
        sink.setLevel(GSI(16), high: false)
        #expect(!out.isHigh(GSI(16)) && out.isHigh(GSI(10)))
        sink.setLevel(GSI(17), high: false)
        #expect(!out.isHigh(GSI(10)))
        sink.setLevel(GSI(19), high: true)          // PIRQD: routing disabled
        #expect(out.isHigh(GSI(19)) && !out.isHigh(GSI(11)))
        sink.setLevel(GSI(20), high: true)          // PIRQE -> IRQ 2: reserved, not steered
        #expect(out.isHigh(GSI(20)) && !out.isHigh(GSI(2)))
    }

    /// PIRQx_ROUT selects the ISA IRQ a link drives (ICH9 datasheet 13.1.x, bits 3:0, bit 7
    /// disables): rewriting it while the link is asserted moves the level, and disabling the
    /// route lowers the old IRQ; the IOAPIC input is untouched.
    @Test func rewrittenRouteMovesAnAssertedLink() {
        let out = RecordingSink(), routes = Routes()
        let sink = PIRQSteeringSink(downstream: out, route: routes.route)
        sink.setLevel(GSI(16), high: true)          // PIRQA -> IRQ 10
        routes.table.withLock { $0[.a] = 11 }
        sink.routesChanged()
        #expect(!out.isHigh(GSI(10)) && out.isHigh(GSI(11)) && out.isHigh(GSI(16)))
        routes.table.withLock { $0[.a] = nil }
        sink.routesChanged()
        #expect(!out.isHigh(GSI(11)) && out.isHigh(GSI(16)))
        sink.setLevel(GSI(16), high: false)
        #expect(out.events.filter { $0 == .level(GSI(11), high: false) }.count == 1)
        #expect(!out.isHigh(GSI(16)))
    }

    @Test func anISADeviceOnTheSameIRQKeepsItHigh() {
        let out = RecordingSink(), routes = Routes()
        let sink = PIRQSteeringSink(downstream: out, route: routes.route)
        sink.setLevel(GSI(11), high: true)          // an ISA device on IRQ 11
        sink.setLevel(GSI(18), high: true)          // PIRQC -> IRQ 11
        sink.setLevel(GSI(18), high: false)
        #expect(out.isHigh(GSI(11)))
        sink.setLevel(GSI(11), high: false)
        #expect(!out.isHigh(GSI(11)))
        #expect(out.events.filter { $0 == .level(GSI(11), high: true) }.count == 1)
    }

    @Test func aRouteChangeAppliesAtTheNextLevelChange() {
        let out = RecordingSink(), routes = Routes()
        let sink = PIRQSteeringSink(downstream: out, route: routes.route)
        sink.setLevel(GSI(16), high: true)
        routes.table.withLock { $0[.a] = 5 }
        sink.setLevel(GSI(16), high: false)         // lowers where it was steered
        #expect(!out.isHigh(GSI(10)))
        sink.setLevel(GSI(16), high: true)
        #expect(out.isHigh(GSI(5)) && !out.isHigh(GSI(10)))
        let message = MSIMessage(address: 0xFEE0_0000, data: 0x31)
        sink.signal(message)
        #expect(out.events.last == .msi(message))
    }

    @Test func firmwareRoutesSteerPCIInterrupts() throws {
        let machine = try Machine(MachineConfiguration(devices: []))
        try machine.runFirmware()
        let out = RecordingSink()
        let sink = PIRQSteeringSink(downstream: out, lpc: machine.lpc)
        sink.setLevel(GSI(16), high: true)          // SeaBIOS's q35 routes: PIRQA -> IRQ 10
        #expect(out.isHigh(GSI(10)))
        sink.setLevel(GSI(18), high: true)          // PIRQC -> IRQ 11
        #expect(out.isHigh(GSI(11)))
    }
}
