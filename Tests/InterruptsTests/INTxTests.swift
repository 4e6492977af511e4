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
