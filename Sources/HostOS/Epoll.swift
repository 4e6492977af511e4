import CLinux
import Glibc

/// An owned epoll instance. Each registration carries a 64-bit `data` word that comes back with
/// its events (an index, a token).
public struct Epoll: ~Copyable, Sendable {
    public let descriptor: FileDescriptor

    public struct Events: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: EPOLLIN.rawValue)
        public static let writable = Events(rawValue: EPOLLOUT.rawValue)
        public static let priority = Events(rawValue: EPOLLPRI.rawValue)
        public static let error = Events(rawValue: EPOLLERR.rawValue)
        public static let hangUp = Events(rawValue: EPOLLHUP.rawValue)
        public static let readHangUp = Events(rawValue: EPOLLRDHUP.rawValue)
        public static let edgeTriggered = Events(rawValue: EPOLLET.rawValue)
        public static let oneShot = Events(rawValue: EPOLLONESHOT.rawValue)
    }

    public struct Event: Sendable, Hashable {
        public var events: Events
        public var data: UInt64
        public init(events: Events, data: UInt64) {
            self.events = events
            self.data = data
        }
    }

    /// epoll_create1(EPOLL_CLOEXEC).
    public init() throws(SystemError) {
        let fd = try valueOrError("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        descriptor = FileDescriptor(adopting: fd)
    }

    public borrowing func add(_ fd: Int32, events: Events, data: UInt64) throws(SystemError) {
        try control(EPOLL_CTL_ADD, "add", fd, events, data)
    }

    public borrowing func modify(_ fd: Int32, events: Events, data: UInt64) throws(SystemError) {
        try control(EPOLL_CTL_MOD, "modify", fd, events, data)
    }

    public borrowing func remove(_ fd: Int32) throws(SystemError) {
        try control(EPOLL_CTL_DEL, "remove", fd, [], 0)
    }

    private borrowing func control(_ op: Int32, _ name: String, _ fd: Int32,
                                   _ events: Events, _ data: UInt64) throws(SystemError) {
        let epfd = descriptor.rawValue
        var event = epoll_event()
        event.events = events.rawValue
        event.data.u64 = data
        try nothingOrError("epoll_ctl(\(name))", "fd \(fd)") { epoll_ctl(epfd, op, fd, &event) }
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever, 0: poll) for at most `maxEvents` events.
    /// A wait interrupted by a signal returns no events rather than restarting, so a timeout is
    /// never stretched; callers loop.
    public borrowing func wait(maxEvents: Int = 32, timeoutMilliseconds: Int32 = -1) throws(SystemError) -> [Event] {
        precondition(maxEvents > 0)
        let epfd = descriptor.rawValue
        var raw = [epoll_event](repeating: epoll_event(), count: maxEvents)
        let n: Int32
        do throws(SystemError) {
            n = try valueOrError("epoll_wait", retryOnInterrupt: false) {
                epoll_wait(epfd, &raw, Int32(maxEvents), timeoutMilliseconds)
            }
        } catch where error.errno == .interrupted {
            return []
        }
        return raw[..<Int(n)].map { Event(events: Events(rawValue: $0.events), data: $0.data.u64) }
    }
}
