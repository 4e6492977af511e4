import Interrupts
import Testing
import VMMBase

@Suite struct INTxTests {
    @Test func swizzleRotatesByDeviceNumber() {
        #expect(INTxPin.a.swizzled(throughSlot: 0) == .a)
        #expect(INTxPin.a.swizzled(throughSlot: 1) == .b)
        #expect(INTxPin.d.swizzled(throughSlot: 1) == .a)
        #expect(INTxPin.b.swizzled(throughSlot: 31) == .a)
        // Two levels compose.
        #expect(INTxPin.a.swizzled(throughSlot: 2).swizzled(throughSlot: 3) == .b)
    }

    @Test func pinRegisterValues() {
        #expect(INTxPin(register: 0) == nil)
        #expect(INTxPin(register: 1) == .a)
        #expect(INTxPin(register: 4) == .d)
        #expect(INTxPin(register: 5) == nil)
        #expect(PIRQ.e.apicGSI == GSI(20))
    }

    @Test func recordingSinkTracksLevelEdgesOnly() {
        let sink = RecordingSink()
        sink.setLevel(GSI(16), high: true)
        sink.setLevel(GSI(16), high: true)
        sink.setLevel(GSI(16), high: false)
        #expect(sink.events == [.level(GSI(16), high: true), .level(GSI(16), high: false)])
    }

    struct BlockAll: MSIRemapper {
        func remap(_ message: MSIMessage, from requester: PCIAddress) -> Result<MSIMessage, MSIRemapFault> {
            .failure(MSIRemapFault(reason: "blocked \(requester)"))
        }
    }

    @Test func remappingHookCanBlockAndRewrite() {
        let sink = RecordingSink()
        let requester = PCIAddress(bus: 1, device: 0, function: 0)!
        let faults = RecordingSink()
        let blocking = RemappingSink(downstream: sink, remapper: BlockAll(), requester: requester) { _ in
            faults.signal(MSIMessage(address: 0, data: 0))
        }
        blocking.signal(MSIMessage(address: 0xFEE0_0000, data: 0x30))
        #expect(sink.events.isEmpty)
        #expect(faults.events.count == 1)
        let passing = RemappingSink(downstream: sink, remapper: PassthroughRemapper(), requester: requester) { _ in }
        passing.signal(MSIMessage(address: 0xFEE0_0000, data: 0x30))
        #expect(sink.events == [.msi(MSIMessage(address: 0xFEE0_0000, data: 0x30))])
    }
}

@Suite struct RecordingSinkHistoryTests {
    /// A qtest machine may take millions of MSIs: the history keeps a window of the newest,
    /// in order, and counts what fell out; levels are state and stay exact.
    @Test func historyIsBoundedAndKeepsTheNewest() {
        let sink = RecordingSink(historyLimit: 100)
        for i in 0..<10_000 { sink.signal(MSIMessage(address: 0xFEE0_0000, data: UInt32(i))) }
        sink.setLevel(GSI(5), high: true)
        let events = sink.events
        #expect(events.count == 100)
        #expect(sink.droppedEvents == 9_901)
        #expect(events.first == .msi(MSIMessage(address: 0xFEE0_0000, data: 9_901)))
        #expect(events.last == .level(GSI(5), high: true))
        #expect(sink.isHigh(GSI(5)))
        sink.clearEvents()
        #expect(sink.events.isEmpty)
    }
}
