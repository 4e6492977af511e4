import Chipset
import Synchronization

/// COM1 on a socket or pipe chardev: what the guest transmits goes to every connected client
/// (nothing is kept while none is: a UART with no cable); what a client sends reaches the
/// UART's receive FIFO (`SwitchyardSession.forwardInput`).
public final class SocketSerialBackend: SerialBackend {
    private let clients = Mutex<[SocketConnection]>([])

    public init() {}

    public func attach(_ connection: SocketConnection) {
        clients.withLock { $0.append(connection) }
    }

    public func detach(_ connection: SocketConnection) {
        clients.withLock { $0.removeAll { $0 === connection } }
    }

    public func transmit(_ bytes: [UInt8]) {
        let current = clients.withLock { $0 }
        // A vCPU thread transmits: it never waits on a peer. A client that stops reading is dropped.
        for client in current where !client.write(bytes: bytes, .unsolicited) { detach(client) }
    }
}
