import Synchronization

/// Where hostile or broken guest input is reported: the guest sees an error in the device's
/// own terms (a status bit, an all-ones read, a dropped write); the operator sees one line
/// here. Rate-limited per message kind so a looping guest cannot flood the log.
public enum GuestErrorLog {
    public struct Entry: Sendable, Hashable {
        public let device: String
        public let message: String
    }

    private struct State {
        var counts: [String: Int] = [:]
        var recent: [Entry] = []
        var sink: (@Sendable (String) -> Void)? = nil
    }
    private static let state = Mutex(State())
    /// Lines per (device, kind) before the log goes quiet for that kind.
    public static let limitPerKind = 10

    /// Reports one piece of bad guest input. `kind` groups messages for rate limiting.
    public static func report(device: String, kind: String, _ message: @autoclosure () -> String) {
        let line: String? = state.withLock { s in
            let key = device + "/" + kind
            s.counts[key, default: 0] += 1
            let n = s.counts[key]!
            guard n <= limitPerKind else { return nil }
            let text = message()
            s.recent.append(Entry(device: device, message: text))
            if s.recent.count > 256 { s.recent.removeFirst(s.recent.count - 256) }
            let suffix = n == limitPerKind ? " (further '\(kind)' reports from \(device) suppressed)" : ""
            return "switchyard: guest error: \(device): \(text)\(suffix)"
        }
        guard let line else { return }
        let sink = state.withLock { $0.sink }
        if let sink { sink(line) } else { printToStandardError(line) }
    }

    /// How many reports of `kind` from `device` came so far, printed or not (for tests: past
    /// `limitPerKind` a report leaves no line and no entry).
    public static func reportCount(device: String, kind: String) -> Int {
        state.withLock { $0.counts[device + "/" + kind, default: 0] }
    }

    /// The most recent entries (for tests and monitors).
    public static var recent: [Entry] { state.withLock { $0.recent } }

    /// Redirects the lines (tests; a monitor). Nil restores standard error.
    public static func setSink(_ sink: (@Sendable (String) -> Void)?) { state.withLock { $0.sink = sink } }
}

#if canImport(Glibc)
import Glibc
private func printToStandardError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { buffer in _ = write(2, buffer.baseAddress, buffer.count) }
}
#else
private func printToStandardError(_ line: String) { print(line) }
#endif
