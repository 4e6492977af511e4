import Synchronization
import VMMBase

/// A thread that waits on watched file descriptors (eventfds) and runs each one's handler when
/// it becomes readable, off the vCPUs. Started by the first watch; lives as long as the process.
/// The handler must clear what made the descriptor readable (consume the eventfd), or it runs
/// again at once.
public final class ReadinessThread: Sendable {
    private final class Loop: Sendable {
        let epoll: Epoll
        let thread = Mutex<HostThread?>(nil)
        init() throws(SystemError) { epoll = try Epoll() }
    }
    private struct Watch: Sendable {
        let descriptor: Int32
        let handler: @Sendable () -> Void
    }

    /// What ps and gdb show, and what its log lines name.
    public let name: String
    private let watches = Mutex<(next: UInt64, table: [UInt64: Watch])>((1, [:]))
    private let loop = Mutex<Loop?>(nil)

    public init(name: String) { self.name = name }

    /// Runs `handler` on this thread whenever `descriptor` is readable, until `unwatch` with the
    /// token returned. The caller keeps the descriptor open until then.
    public func watch(_ descriptor: Int32, _ handler: @escaping @Sendable () -> Void) throws(SystemError) -> UInt64 {
        let running = try startedLoop()
        return try watches.withLock { (w) throws(SystemError) -> UInt64 in
            let token = w.next
            try running.epoll.add(descriptor, events: .readable, data: token)
            w.next += 1
            w.table[token] = Watch(descriptor: descriptor, handler: handler)
            return token
        }
    }

    /// Stops watching. A handler already running finishes; it never runs for this token again.
    public func unwatch(_ token: UInt64) {
        guard let running = loop.withLock({ $0 }) else { return }
        watches.withLock { w in
            guard let watch = w.table.removeValue(forKey: token) else { return }
            try? running.epoll.remove(watch.descriptor)
        }
    }

    private func startedLoop() throws(SystemError) -> Loop {
        try loop.withLock { (current) throws(SystemError) -> Loop in
            if let current { return current }
            let created = try Loop()
            let thread = try HostThread(kind: .io, name: name) { [self] in run(created) }
            created.thread.withLock { $0 = thread }
            current = created
            return created
        }
    }

    private func run(_ running: Loop) {
        while true {
            let events: [Epoll.Event]
            do {
                events = try running.epoll.wait(maxEvents: 32)
            } catch {
                GuestErrorLog.report(device: name, kind: "io-thread", "epoll_wait failed: \(error); its events are no longer answered")
                return
            }
            for event in events {
                // Looked up per event: a watch removed since the wait returned is skipped.
                guard let watch = watches.withLock({ $0.table[event.data] }) else { continue }
                watch.handler()
            }
        }
    }
}
