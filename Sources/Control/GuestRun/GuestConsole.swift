import Chipset
import HostOS
import Synchronization

/// COM1 of a guest as a stream of timestamped lines that a host-side script can wait on
/// (the guest's own clock is not trusted for latency: the line's arrival time on the host is).
/// Every complete line is also handed to `echo`, e.g. to print it.
public final class GuestConsole: SerialBackend {
    public struct Line: Sendable, Hashable {
        public let text: String
        /// Host CLOCK_MONOTONIC when its newline arrived.
        public let nanoseconds: UInt64
    }

    private struct State {
        var partial: [UInt8] = []
        var lines: [Line] = []
    }
    private let state = Mutex(State())
    private let echo: @Sendable (String) -> Void

    public init(echo: @escaping @Sendable (String) -> Void = { _ in }) {
        self.echo = echo
    }

    public func transmit(_ bytes: [UInt8]) {
        let now = HostClock.monotonicNanoseconds()
        let complete: [String] = state.withLock { state in
            var done: [String] = []
            for byte in bytes {
                if byte == UInt8(ascii: "\n") {
                    if state.partial.last == UInt8(ascii: "\r") { state.partial.removeLast() }
                    let text = String(decoding: state.partial, as: UTF8.self)
                    state.lines.append(Line(text: text, nanoseconds: now))
                    state.partial.removeAll(keepingCapacity: true)
                    done.append(text)
                } else if state.partial.count < 4096 {
                    // A guest that never sends a newline cannot grow host memory without bound.
                    state.partial.append(byte)
                }
            }
            return done
        }
        for line in complete { echo(line) }
    }

    public var lines: [Line] { state.withLock { $0.lines } }

    /// The first line at or after position `from` that satisfies `matches`, with its position;
    /// nil when none arrived within the timeout or once `giveUp` says so (the guest died).
    /// Polls every millisecond: the figures this serves are tenths of seconds.
    public func waitForLine(from: Int = 0, timeoutSeconds: Double, giveUp: () -> Bool = { false },
                            where matches: (String) -> Bool) -> (line: Line, index: Int)? {
        let deadline = HostClock.monotonicNanoseconds() + UInt64(timeoutSeconds * 1e9)
        var next = from
        while true {
            let fresh = state.withLock { Array($0.lines.dropFirst(next)) }
            for (offset, line) in fresh.enumerated() where matches(line.text) {
                return (line, next + offset)
            }
            next += fresh.count
            if HostClock.monotonicNanoseconds() >= deadline || giveUp() { return nil }
            HostClock.sleep(milliseconds: 1)
        }
    }
}
