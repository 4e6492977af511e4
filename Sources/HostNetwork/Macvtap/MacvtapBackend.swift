import VMMBase
import Glibc
import HostOS
import Synchronization

/// A macvtap link opened as a network backend: its queue fds (one `tapN` open per queue) and
/// what must be undone at exit, the link Switchyard created and the VF settings it changed.
/// `close()` undoes it; so does dropping the last reference. A crash leaves the link behind,
/// named so that the next start's `removeStaleMacvtaps` deletes it.
public final class MacvtapBackend: Sendable {
    public let options: MacvtapNetdevOptions
    /// The macvtap link's name and MAC address (the guest's virtio-net must use this MAC
    /// outside passthru mode, since macvtap delivers by destination address).
    public let linkName: String
    public let address: MACAddress
    public let characterDevice: MacvtapCharacterDevice

    private struct State: ~Copyable {
        var socket: RouteSocket?
        var queues: [Int32]
        var createdLink: String?
        var lease: VirtualFunctionLease?
        var closed = false
    }
    private let state: Mutex<State>

    /// Opens `options` with `socket` (the namespace the links live in): removes stale links of
    /// dead Switchyard processes, creates or finds the macvtap link, opens its queues.
    public init(options: MacvtapNetdevOptions, socket: consuming RouteSocket,
                environment: HostNetworkEnvironment = HostNetworkEnvironment()) throws(HostNetworkError) {
        _ = try? socket.removeStaleMacvtaps()
        let link: LinkInfo
        var created: String?
        var lease: VirtualFunctionLease?
        switch options.source {
        case .existing(let ifname):
            link = try Self.lookUp(ifname, in: socket)
            guard link.kind == "macvtap" else {
                throw .notMacvtap(link: ifname, reason: "it is a \(link.kind ?? "plain") link")
            }
        case .lower(let lowerName):
            let lower = try Self.lookUp(lowerName, in: socket)
            let name = try Self.createMacvtap(on: lower, mode: options.mode, address: options.mac, in: socket)
            created = name
            do throws(HostNetworkError) { link = try Self.lookUp(name, in: socket) } catch {
                try? socket.deleteLink(named: name)
                throw error
            }
        case .virtualFunction(let pf, let choice):
            let acquired = try VirtualFunctionLease.acquire(pf: pf, choice: choice, options: options,
                                                            socket: socket, environment: environment)
            do throws(HostNetworkError) {
                let lower = try Self.lookUp(acquired.netdev, in: socket)
                let name = try Self.createMacvtap(on: lower, mode: .passthru, address: nil, in: socket)
                created = name
                link = try Self.lookUp(name, in: socket)
            } catch {
                if let created { try? socket.deleteLink(named: created) }
                _ = acquired.release(socket: socket)
                throw error
            }
            lease = .some(acquired)
        }
        do throws(HostNetworkError) {
            guard let address = link.address else { throw .notMacvtap(link: link.name, reason: "it has no MAC address") }
            let device = try MacvtapCharacterDevice.of(link: link.name, sysfsNet: environment.sysfsNet)
            var queues: [Int32] = []
            do throws(HostNetworkError) {
                for _ in 0..<options.queues {
                    queues.append(try device.openQueue(devDirectory: environment.devDirectory,
                                                       privateDirectory: environment.privateDeviceDirectory).take())
                }
            } catch {
                queues.forEach { _ = Glibc.close($0) }
                throw error
            }
            self.options = options
            self.linkName = link.name
            self.address = address
            self.characterDevice = device
            self.state = Mutex(State(socket: socket, queues: queues, createdLink: created, lease: lease.take()))
        } catch {
            if let created { try? socket.deleteLink(named: created) }
            if let acquired = lease.take() { _ = acquired.release(socket: socket) }
            throw error
        }
    }

    deinit { _ = try? close() }

    /// The next queue's fd, once each (the caller owns it from then on); nil when all are taken.
    public func takeQueue() -> FileDescriptor? {
        let raw: Int32? = state.withLock { state in state.queues.isEmpty ? nil : state.queues.removeFirst() }
        return raw.map { FileDescriptor(adopting: $0) }
    }

    /// Closes the queues not taken, deletes the link if Switchyard created it, and puts a VF's
    /// previous settings back. Idempotent.
    public func close() throws(HostNetworkError) {
        let failure = state.withLock { (state) -> HostNetworkError? in
            guard !state.closed else { return nil }
            state.closed = true
            state.queues.forEach { _ = Glibc.close($0) }
            state.queues = []
            guard let socket = state.socket.take() else { return nil }
            var failure: HostNetworkError?
            if let created = state.createdLink {
                do throws(NetlinkError) { try socket.deleteLink(named: created) } catch {
                    if !error.isNotFound { failure = .netlink(error) }
                }
            }
            if let lease = state.lease.take(), let error = lease.release(socket: socket) { failure = failure ?? error }
            return failure
        }
        if let failure { throw failure }
    }

    static func lookUp(_ name: String, in socket: borrowing RouteSocket) throws(HostNetworkError) -> LinkInfo {
        do { return try socket.link(named: name) } catch {
            throw error.isNotFound ? .noSuchLink(name) : .netlink(error)
        }
    }

    /// Creates a macvtap on `lower` under a fresh owned name (skipping names that exist).
    static func createMacvtap(on lower: LinkInfo, mode: MacvtapMode, address: MACAddress?,
                              in socket: borrowing RouteSocket) throws(HostNetworkError) -> String {
        var lastError: NetlinkError?
        for _ in 0..<8 {
            let name = OwnedLinkName.next().description
            do {
                try socket.addMacvtap(name: name, lowerIndex: lower.index, mode: mode, address: address)
                return name
            } catch where error.isAlreadyExisting {
                lastError = error
            } catch {
                throw .netlink(error)
            }
        }
        throw .netlink(lastError!)
    }
}
