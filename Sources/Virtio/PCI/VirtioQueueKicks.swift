import HostOS
import Synchronization
import VMMBase

/// The kick eventfds of an activation's enabled queues, for a device that waits on them on its
/// own event loop (virtio-net's I/O thread). `answer` is the only way to act on one: it takes
/// the count and runs the transport's notify path, the one a trapped write to the notify
/// address runs, so a kick means the same whichever way it arrived.
public struct VirtioQueueKicks: Sendable {
    let events: [SharedEventFD?]
    weak var transport: VirtioPCIFunction?

    /// No kick eventfds: every kick arrives as a trapped write (qtest, tests without a transport).
    public static let none = VirtioQueueKicks(events: [], transport: nil)

    init(events: [SharedEventFD?], transport: VirtioPCIFunction?) {
        self.events = events
        self.transport = transport
    }

    /// The eventfd to wait on (readable when kicked) for each queue that has one.
    public var descriptors: [(queue: Int, descriptor: Int32)] {
        events.enumerated().compactMap { queue, event in event.map { (queue, $0.rawValue) } }
    }

    /// Queue `queue`'s kick eventfd (for a backend that waits on it itself: vhost), or nil.
    public func event(of queue: Int) -> SharedEventFD? { events.indices.contains(queue) ? events[queue] : nil }

    /// Queue `queue`'s eventfd was readable: clears it, then notifies as a trapped write would
    /// (dropped when the queue is not live or the device needs a reset). Clearing first means a
    /// kick that lands meanwhile leaves the fd readable again and is not lost.
    public func answer(_ queue: Int) {
        guard let event = event(of: queue) else { return }
        do {
            _ = try event.eventFD.consume()
        } catch {
            GuestErrorLog.report(device: "virtio-kicks", kind: "read", "queue \(queue) kick eventfd: \(error)")
        }
        transport?.notify(queue: queue)
    }
}

/// The thread that answers kicks for devices without an event loop of their own (virtio-rng):
/// one per process, started at the first activation that needs it, running
/// `VirtioQueueKicks.answer` for the kick eventfd that fired, off the vCPUs.
enum VirtioKickThread {
    static let shared = ReadinessThread(name: "virtio-kicks")

    /// Starts answering queue `queue` of `kicks`; returns the token that ends it (`unwatch`),
    /// or nil (logged) when the queue has no eventfd or the thread cannot wait on it. A kick
    /// already being answered when it ends finishes; the transport's notify path drops it when
    /// the queue is no longer live.
    static func watch(_ kicks: VirtioQueueKicks, queue: Int) -> UInt64? {
        guard let event = kicks.event(of: queue) else { return nil }
        do throws(SystemError) {
            return try shared.watch(event.rawValue) { kicks.answer(queue) }
        } catch {
            GuestErrorLog.report(device: "virtio-kicks", kind: "watch", "queue \(queue): \(error)")
            return nil
        }
    }

    static func unwatch(_ token: UInt64) { shared.unwatch(token) }
}
