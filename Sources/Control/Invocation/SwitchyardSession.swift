import Foundation
import HostOS
import Machine
import Synchronization

/// A running QEMU-style invocation: the machine, its QMP monitors and qtest server on their
/// sockets. It serves until QMP `quit` or until the qtest connection closes.
public final class SwitchyardSession: Sendable {
    public let invocation: QEMUInvocation
    public let controller: VMController
    public let qmp: QMPMonitor
    public let qtest: QTestServer?
    private let listeners = Mutex<[SocketListener]>([])
    private let connections = Mutex<[SocketConnection]>([])

    /// Builds the machine (reset state: firmware does not run, as under QEMU's qtest).
    public init(_ invocation: QEMUInvocation) throws {
        self.invocation = invocation
        let machine = try Machine(invocation.machine)
        controller = VMController(machine: machine, startPaused: invocation.startPaused)
        qmp = QMPMonitor(controller: controller)
        if invocation.qtest != nil {
            qtest = QTestServer(machine: machine, virtualClock: invocation.accelerator == .qtest,
                                log: try QTestLog.open(invocation.qtestLog))
        } else {
            qtest = nil
        }
    }

    /// Opens every socket: client endpoints connect now; server endpoints listen, and with
    /// wait=on the first client is accepted before this returns.
    public func start() throws {
        for endpoint in invocation.qmp {
            try open(endpoint, name: "qmp") { [qmp] connection in qmp.serve(connection) }
        }
        if let endpoint = invocation.qtest, let qtest {
            try open(endpoint, name: "qtest") { [controller] connection in
                qtest.serve(connection)
                controller.requestExit(code: 0)
            }
        }
    }

    private func open(_ endpoint: SocketEndpoint, name: String,
                      _ handler: @escaping @Sendable (SocketConnection) -> Void) throws {
        if endpoint.server {
            let listener: SocketListener
            do {
                listener = try SocketListener(path: endpoint.path)
            } catch {
                throw InvocationError("\(name) \(endpoint): \(error)")
            }
            listeners.withLock { $0.append(listener) }
            if endpoint.wait {
                guard listener.acceptOne(handler) else { throw InvocationError("\(name) \(endpoint): accept failed") }
            }
            listener.start(handler)
        } else {
            let fd: FileDescriptor
            do {
                fd = try UnixSocket.connect(path: endpoint.path)
            } catch {
                throw InvocationError("\(name) \(endpoint): cannot connect: \(error)")
            }
            let connection = SocketConnection(fd)
            connections.withLock { $0.append(connection) }
            detach("switchyard-\(name)") { handler(connection) }
        }
    }

    /// Serves until exit is requested; closes every socket; returns the exit code.
    /// SIGTERM, SIGINT and SIGHUP end the session cleanly (sockets removed), as QEMU ends on them.
    public func run() throws -> Int32 {
        try SignalSet.termination.block()
        detach("switchyard-signals") { [controller] in
            _ = SignalSet.termination.wait()
            controller.requestExit(code: 0)
        }
        try start()
        let code = controller.waitForExit()
        stop()
        return code
    }

    public func stop() {
        for listener in listeners.withLock({ $0 }) { listener.stop() }
        for connection in connections.withLock({ $0 }) { connection.close() }
    }
}
