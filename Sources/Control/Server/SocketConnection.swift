import Foundation
import HostOS
import Synchronization

/// One connected client: a socket, or a pair of FIFOs (QEMU's `-chardev pipe`). Reads happen
/// on the client's own thread; writes may come from any thread (replies, and events or IRQ
/// notices caused elsewhere) and are serialized so messages never interleave. After the peer
/// goes away, writes are dropped silently.
public final class SocketConnection: Sendable {
    private let descriptor: FileDescriptor
    /// The FIFO written to, for a pipe pair; nil for a socket (reads and writes on one fd).
    private let pipeOutput: FileDescriptor?
    private let writeState = Mutex(WriteState())

    private struct WriteState {
        var broken = false
    }

    public init(_ descriptor: consuming FileDescriptor) {
        self.descriptor = descriptor
        pipeOutput = nil
    }

    /// A pipe pair: reads from `input`, writes to `output`.
    public init(reading input: consuming FileDescriptor, writing output: consuming FileDescriptor) {
        descriptor = input
        pipeOutput = .some(output)
    }

    /// Reads what is available (blocking until something is). Nil at end of stream, on an
    /// error, or after `close()`.
    public func read(maximum: Int = 64 * 1024) -> [UInt8]? {
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

    /// Sends `text` whole; false once the peer is gone.
    @discardableResult
    public func write(_ text: String) -> Bool { write(bytes: Array(text.utf8)) }

    /// Sends `bytes` whole; false once the peer is gone.
    @discardableResult
    public func write(bytes: [UInt8]) -> Bool {
        writeState.withLock { state in
            guard !state.broken else { return false }
            do {
                switch pipeOutput {
                case .some(let output): try output.writeAll(bytes)
                case .none: try descriptor.sendAll(bytes)
                }
                return true
            } catch {
                state.broken = true
                return false
            }
        }
    }

    /// Wakes a blocked reader and makes further reads and writes fail. The fd itself is closed
    /// when the last reference goes away. A pipe pair only stops writing (a FIFO read cannot be
    /// woken from outside; the reader ends with the process).
    public func close() {
        writeState.withLock { $0.broken = true }
        _ = try? descriptor.shutdown(.both)
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
        listener = try UnixSocket.listen(path: path, replacingExisting: true)
    }

    /// Accepts one client on the calling thread (for wait=on) and serves it on a new thread.
    public func acceptOne(_ handler: @escaping @Sendable (SocketConnection) -> Void) -> Bool {
        guard let fd = try? UnixSocket.accept(listener) else { return false }
        spawn(SocketConnection(fd), handler)
        return true
    }

    /// Starts the accept loop.
    public func start(_ handler: @escaping @Sendable (SocketConnection) -> Void) {
        let thread = Thread { [self] in
            while !stopped.withLock({ $0 }) {
                guard acceptOne(handler) else { break }
            }
        }
        thread.name = "switchyard-accept"
        thread.start()
    }

    private func spawn(_ connection: SocketConnection, _ handler: @escaping @Sendable (SocketConnection) -> Void) {
        let key = ObjectIdentifier(connection)
        clients.withLock { $0[key] = connection }
        let thread = Thread { [self] in
            handler(connection)
            connection.close()
            _ = clients.withLock { $0.removeValue(forKey: key) }
        }
        thread.name = "switchyard-client"
        thread.start()
    }

    public func stop() {
        guard !stopped.withLock({ let was = $0; $0 = true; return was }) else { return }
        _ = try? listener.shutdown(.both)
        for client in clients.withLock({ Array($0.values) }) { client.close() }
        UnixSocket.removeFile(path)
    }

    deinit { stop() }
}

/// Runs `body` on a new thread.
func detach(_ name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.start()
}
