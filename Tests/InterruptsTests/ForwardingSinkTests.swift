import Interrupts
import Testing
import VMMBase

@Suite struct ForwardingSinkTests {
    @Test func forwardsToTheAttachedSink() {
        let first = RecordingSink(), second = RecordingSink()
        let sink = ForwardingSink(first)
        sink.setLevel(GSI(4), high: true)
        let previous = sink.attach(second)
        #expect(previous === first)
        #expect(sink.downstream === second)
        sink.setLevel(GSI(4), high: false)
        let message = MSIMessage(address: 0xFEE0_0000, data: 0x41)
        sink.signal(message)
        #expect(first.events == [.level(GSI(4), high: true)])
        #expect(second.events == [.msi(message)])  // a low level on a line it never saw high is no change
        #expect(!second.isHigh(GSI(4)))
    }
}
