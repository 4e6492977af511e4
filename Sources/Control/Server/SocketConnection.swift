import Foundation
import HostOS
import Synchronization

/// One connected client: a socket, or a pair of FIFOs (QEMU's `-chardev pipe`). Reads happen
/// on the client's own thread. Writes go through a bounded outbox that a writer thread of the
/// connection's own drains, so no thread of the machine ever waits on a peer: messages never
/// interleave, replies wait for room (back-pressure on the client's own requests), and an
/// unsolicited message (an event, an IRQ notice, serial output) that does not fit drops the
/// client (counting unsolicited bytes only), as QEMU's monitor drops a client that stops reading. After the peer goes away,
/// writes are dropped silently.
public final class SocketConnection: Sendable {
    private let descriptor: FileDescriptor
    /// The FIFO written to, for a pipe pair; nil for a socket (reads and writes on one fd).
    private let pipeOutput: FileDescriptor?
    private let outbox: Outbox
    /// Says why the connection was dropped (a client that stopped reading); nil logs nothing.
    private let dropLog: (@Sendable (String) -> Void)?

    /// - Parameters:
    ///   - outputLimit: the most bytes waiting for the peer before an unsolicited message drops it.
    public init(_ descriptor: consuming FileDescriptor, outputLimit: Int = SocketConnection.defaultOutputLimit,
                dropLog: (@Sendable (String) -> Void)? = SocketConnection.standardErrorLog) {
        self.descriptor = descriptor
        pipeOutput = nil
        outbox = Outbox(limit: outputLimit)
        self.dropLog = dropLog
    }

    /// A pipe pair: reads from `input`, writes to `output`.
    public init(reading input: consuming FileDescriptor, writing output: consuming FileDescriptor,
                outputLimit: Int = SocketConnection.defaultOutputLimit,
                dropLog: (@Sendable (String) -> Void)? = SocketConnection.standardErrorLog) {
        descriptor = input
        pipeOutput = .some(output)
        outbox = Outbox(limit: outputLimit)
        self.dropLog = dropLog
    }

    /// 1 MiB: thousands of events, far more than a client that reads ever lets pile up.
    public static let defaultOutputLimit = 1 << 20

    public static let standardErrorLog: @Sendable (String) -> Void = { line in
        FileHandle.standardError.write(Data("switchyard: \(line)\n".utf8))
    }

    /// Reads what is available (blocking until something is). Nil at end of stream, on an
    /// error, or after `close()`.
    public func read(maximum: Int = 64 * 1024) -> [UInt8]? {
        guard !outbox.isClosed else { return nil }
        var chunk = [UInt8](repeating: 0, count: maximum)
        let n: Int
        do {
            n = try chunk.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) in try descriptor.read(into: raw) }
            }.get()
        } catch {
            return nil
        }
        guard n > 0 else { return nil }
        return Array(chunk[..<n])
    }

    /// How a message waits when the outbox is full.
    public enum Delivery: Sendable {
        /// A reply to the peer's own request: wait for room (the peer's reader thread waits).
        case reply
        /// Unsolicited: never wait; a peer with no room for it is dropped.
        case unsolicited
    }

    /// Queues `text` for the peer; false once the peer is gone or was dropped.
    @discardableResult
    public func write(_ text: String, _ delivery: Delivery = .reply) -> Bool { write(bytes: Array(text.utf8), delivery) }

    /// Queues `bytes` for the peer; false once the peer is gone or was dropped.
    @discardableResult
    public func write(bytes: [UInt8], _ delivery: Delivery = .reply) -> Bool {
        switch outbox.put(bytes, waitForRoom: delivery == .reply) {
        case .queued(let startWriter):
            if startWriter { startWriterThread() }
            return true
        case .closed:
            return false
        case .overflow(let pending):
            dropLog?("dropping a client that stopped reading: \(pending) bytes of events unread (limit \(outbox.limit))")
            close()
            return false
        }
    }

    /// Bytes queued and not yet taken by the peer.
    public var pendingOutput: Int { outbox.pendingBytes }

    private func startWriterThread() {
        detach("switchyard-client-writer", kind: .io) { [self] in
            while let message = outbox.next() {
                do {
                    switch pipeOutput {
                    case .some(let output): try output.writeAll(message.bytes)
                    case .none: try descriptor.sendAll(message.bytes)
                    }
                    outbox.sent(message)
                } catch {
                    outbox.close()
                }
            }
        }
    }

    /// Waits (up to `timeout` seconds) until the peer was handed everything queued, e.g. the
    /// reply to `quit` before the process ends. True when nothing is left.
    @discardableResult
    public func flush(timeout: Double = 1) -> Bool { outbox.drain(until: Date(timeIntervalSinceNow: timeout)) }

    /// Wakes a blocked reader and writer and makes further reads and writes fail. Never waits
    /// on the peer. The fd itself is closed when the last reference goes away. A pipe pair only
    /// stops writing (a FIFO read cannot be woken from outside; the reader ends with the process).
    public func close() {
        outbox.close()
        _ = try? descriptor.shutdown(.both)
    }
}

/// The queue between a connection's writers and its writer thread: bytes pending are bounded,
/// and nothing here waits while holding the lock across I/O. A condition variable is what this
/// needs (wait for work, wait for room); NSCondition is that, so the type is checked by hand:
/// every stored property is touched only with `condition` locked.
final class Outbox: @unchecked Sendable {
    enum PutResult {
        /// Queued; `true` when the writer thread must be started (the first message).
        case queued(Bool)
        case closed
        /// No room for an unsolicited message: `pending` unsolicited bytes were waiting.
        case overflow(Int)
    }

    struct Message {
        let bytes: [UInt8]
        let unsolicited: Bool
    }

    let limit: Int
    private let condition = NSCondition()
    private var queue: [Message] = []
    private var head = 0
    private var pending = 0
    /// The part of `pending` that is unsolicited: what a client that stopped reading piles up.
    /// Replies do not count here, so one large reply read slowly (a qtest read of megabytes)
    /// does not get its client dropped for an event that arrives meanwhile.
    private var pendingUnsolicited = 0
    private var closed = false
    private var writerStarted = false

    init(limit: Int) { self.limit = max(1, limit) }

    func put(_ bytes: [UInt8], waitForRoom: Bool) -> PutResult {
        condition.lock()
        defer { condition.unlock() }
        if waitForRoom {
            // Room means under the limit: one reply larger than the limit still goes out whole.
            while !closed && pending >= limit { condition.wait() }
        } else if !closed && pendingUnsolicited + bytes.count > limit {
            return .overflow(pendingUnsolicited)
        }
        guard !closed else { return .closed }
        queue.append(Message(bytes: bytes, unsolicited: !waitForRoom))
        pending += bytes.count
        if !waitForRoom { pendingUnsolicited += bytes.count }
        condition.broadcast()
        let start = !writerStarted
        writerStarted = true
        return .queued(start)
    }

    /// The next message for the writer thread, waiting for one; nil once closed.
    func next() -> Message? {
        condition.lock()
        defer { condition.unlock() }
        while !closed && head == queue.count { condition.wait() }
        guard !closed else { return nil }
        let message = queue[head]
        queue[head] = Message(bytes: [], unsolicited: false)
        head += 1
        if head > 64 && head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        return message
    }

    /// The writer thread delivered `message`: room for more.
    func sent(_ message: Message) {
        condition.lock()
        if !closed {
            pending -= message.bytes.count
            if message.unsolicited { pendingUnsolicited -= message.bytes.count }
        }
        condition.broadcast()
        condition.unlock()
    }

    func close() {
        condition.lock()
        closed = true
        queue.removeAll()
        head = 0
        pending = 0
        pendingUnsolicited = 0
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until everything queued was delivered, the outbox closed, or `deadline` passed.
    /// True when nothing is left pending.
    func drain(until deadline: Date) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while !closed && pending > 0 {
            guard condition.wait(until: deadline) else { break }
        }
        return pending == 0
    }

    var isClosed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return closed
    }

    var pendingBytes: Int {
        condition.lock()
        defer { condition.unlock() }
        return pending
    }
}

/// Where a monitor's socket comes from: `unix:PATH[,server=on][,wait=off]` as QEMU spells a
/// socket chardev. A client endpoint connects to a test's listening socket (QEMU's default,
/// what libqtest uses); a server endpoint listens and accepts any number of clients.
public struct SocketEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var server: Bool
    /// For a server: wait for the first client before the machine starts (QEMU's wait=on).
    public var wait: Bool

    public init(path: String, server: Bool = false, wait: Bool = true) {
        self.path = path
        self.server = server
        self.wait = wait
    }

    public var description: String {
        "unix:\(path)" + (server ? ",server=on,wait=\(wait ? "on" : "off")" : "")
    }
}

/// A listening socket with an accept loop on its own thread; each client gets `handler` on a
/// thread of its own. `stop()` closes the listener and every client, and removes the path.
public final class SocketListener: Sendable {
    public let path: String
    private let listener: FileDescriptor
    private let clients = Mutex<[ObjectIdentifier: SocketConnection]>([:])
    private let stopped = Mutex(false)

    public init(path: String) throws(SystemError) {
        self.path = path
        // A deep backlog: many clients connecting at once (a test fleet, libvirt and a user) all get in.
        listener = try UnixSocket.listen(path: path, backlog: SOMAXCONN, replacingExisting: true)
    }

    /// Accepts one client on the calling thread (for wait=on) and serves it on a new thread.
    public func acceptOne(_ handler: @escaping @Sendable (SocketConnection) -> Void) -> Bool {
        guard let fd = try? UnixSocket.accept(listener) else { return false }
        spawn(SocketConnection(fd), handler)
        return true
    }

    /// Starts the accept loop.
    public func start(_ handler: @escaping @Sendable (SocketConnection) -> Void) {
        detach("switchyard-accept", kind: .control) { [self] in
            while !stopped.withLock({ $0 }) {
                guard acceptOne(handler) else { break }
            }
        }
    }

    private func spawn(_ connection: SocketConnection, _ handler: @escaping @Sendable (SocketConnection) -> Void) {
        let key = ObjectIdentifier(connection)
        clients.withLock { $0[key] = connection }
        detach("switchyard-client", kind: .control) { [self] in
            handler(connection)
            connection.close()
            _ = clients.withLock { $0.removeValue(forKey: key) }
        }
    }

    public func stop() {
        guard !stopped.withLock({ let was = $0; $0 = true; return was }) else { return }
        _ = try? listener.shutdown(.both)
        // What is already queued (a SHUTDOWN event, the reply to quit) gets a moment to go out;
        // a client that does not read costs at most that moment.
        let deadline = Date(timeIntervalSinceNow: 0.5)
        for client in clients.withLock({ Array($0.values) }) {
            client.flush(timeout: max(0, deadline.timeIntervalSinceNow))
            client.close()
        }
        UnixSocket.removeFile(path)
    }

    deinit { stop() }
}

/// Runs `body` on a new thread of `kind` (its sandbox list once the sandbox is locked down).
func detach(_ name: String, kind: SandboxThreadKind, _ body: @escaping @Sendable () -> Void) {
    do {
        _ = try HostThread(kind: kind, name: name, body)
    } catch {
        FileHandle.standardError.write(Data("switchyard: cannot start thread \(name): \(error)\n".utf8))
    }
}
