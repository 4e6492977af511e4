import Control
import Synchronization
import Testing

@Suite struct GuestConsoleTests {
    @Test func splitsLinesAcrossTransmitsAndDropsCarriageReturns() {
        let echoed = EchoLog()
        let console = GuestConsole { echoed.append($0) }
        console.transmit(Array("RIG-L2 ini".utf8))
        console.transmit(Array("t uptime=1.00\r\nsecond\npart".utf8))
        #expect(console.lines.map(\.text) == ["RIG-L2 init uptime=1.00", "second"])
        #expect(echoed.lines == ["RIG-L2 init uptime=1.00", "second"])
        let times = console.lines.map(\.nanoseconds)
        #expect(times[0] <= times[1])
    }

    @Test func waitingStartsAtTheCursorAndTimesOut() {
        let console = GuestConsole()
        console.transmit(Array("ready\nplugged cycle=1\nready\n".utf8))
        let first = console.waitForLine(timeoutSeconds: 0) { $0 == "ready" }
        #expect(first?.index == 0)
        let second = console.waitForLine(from: 1, timeoutSeconds: 0) { $0 == "ready" }
        #expect(second?.index == 2)
        #expect(console.waitForLine(from: 3, timeoutSeconds: 0.02) { $0 == "ready" } == nil)
    }

    @Test func aLineArrivingLaterEndsTheWait() async {
        let console = GuestConsole()
        async let waited = Task.detached { console.waitForLine(timeoutSeconds: 5) { $0.hasPrefix("plugged") } }.value
        try? await Task.sleep(for: .milliseconds(20))
        console.transmit(Array("plugged cycle=1\n".utf8))
        #expect(await waited?.line.text == "plugged cycle=1")
    }

    @Test func giveUpEndsTheWaitEarly() {
        let console = GuestConsole()
        let start = ContinuousClock.now
        #expect(console.waitForLine(timeoutSeconds: 30, giveUp: { true }) { _ in true } == nil)
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    /// A guest that never sends a newline cannot make the host buffer grow past 4 KiB.
    @Test func anEndlessLineIsCapped() {
        let console = GuestConsole()
        console.transmit([UInt8](repeating: UInt8(ascii: "x"), count: 1 << 20))
        console.transmit(Array("\n".utf8))
        #expect(console.lines.first?.text.count == 4096)
    }
}

final class EchoLog: Sendable {
    private let stored = Mutex<[String]>([])
    func append(_ s: String) { stored.withLock { $0.append(s) } }
    var lines: [String] { stored.withLock { $0 } }
}
