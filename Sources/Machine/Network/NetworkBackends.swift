import Glibc
import HostNetwork
import HostOS
import Synchronization
import VirtioNet
import VMMBase

/// The machine's -netdev backends, opened at start-up, and which NIC uses each: a netdev
/// serves one device (QEMU's rule), and QMP set_link finds a NIC by its id or its netdev's.
final class NetworkBackends: Sendable {
    struct Backend: Sendable {
        let spec: NetdevSpec
        let queues: [any PacketQueue]
        var user: String?
        var nic: VirtioNetDevice?
    }
    private let backends: Mutex<[String: Backend]>
    /// NICs made so far, for QEMU's default MACs (52:54:00:12:34:56 + n).
    private let nicCount = Mutex(0)

    init(_ specs: [NetdevSpec]) throws(MachineConfigurationError) {
        var opened: [String: Backend] = [:]
        for spec in specs {
            opened[spec.id] = Backend(spec: spec, queues: try Self.open(spec), user: nil, nic: nil)
        }
        backends = Mutex(opened)
    }

    /// Opens a tap netdev's queues: by interface name (IFF_MULTI_QUEUE when queues > 1) or by
    /// adopting the fds the caller passed.
    private static func open(_ spec: NetdevSpec) throws(MachineConfigurationError) -> [any PacketQueue] {
        let options: TapNetdevOptions
        do {
            options = try TapNetdevOptions(spec.properties)
        } catch {
            throw .netdev("tap,id=\(spec.id)", reason: error.reason)
        }
        if options.vhost {
            let reason = access("/dev/vhost-net", F_OK) == 0 ? "vhost-net is not implemented yet" : "/dev/vhost-net is missing"
            log("switchyard: -netdev tap,id=\(spec.id): vhost=on: \(reason); using the userspace datapath")
        }
        var queues: [any PacketQueue] = []
        do throws(TapError) {
            switch options.source {
            case .interface(let name):
                // The kernel names an unnamed tap; the other queues join that one.
                let first = try TapQueue.open(interfaceName: name, multiQueue: options.queues > 1)
                queues.append(first)
                for _ in 1..<options.queues {
                    queues.append(try TapQueue.open(interfaceName: first.interfaceName, multiQueue: true))
                }
            case .descriptors(let fds):
                for fd in fds {
                    guard fcntl(fd, F_GETFD) != -1 else {
                        throw TapError.system(.current("fcntl(F_GETFD)", "fd \(fd)"), hint: "fd=\(fd) is not open in this process; pass the tap's fd to switchyard")
                    }
                    queues.append(try TapQueue(adopting: FileDescriptor(adopting: fd)))
                }
            }
        } catch {
            throw .netdev("tap,id=\(spec.id)", reason: "\(error)")
        }
        return queues
    }

    /// Claims netdev `id` for NIC `user`: its queues. QEMU's error when it is unknown or taken.
    func claim(_ id: String, for user: String) throws(MachineConfigurationError) -> [any PacketQueue] {
        try backends.withLock { (b: inout [String: Backend]) throws(MachineConfigurationError) in
            guard var backend = b[id] else { throw Self.unknown(id, user: user) }
            if let owner = backend.user {
                throw .invalidProperty(device: user, property: "netdev", reason: "Property 'virtio-net-device.netdev' can't take value '\(id)', it's in use (by '\(owner)')")
            }
            backend.user = user
            b[id] = backend
            return backend.queues
        }
    }

    /// QEMU's error for a netdev= that no -netdev defined.
    static func unknown(_ id: String, user: String) -> MachineConfigurationError {
        .invalidProperty(device: user, property: "netdev", reason: "Property 'virtio-net-device.netdev' can't find value '\(id)'; define it with -netdev tap,id=\(id),...")
    }

    /// Records the NIC made on netdev `id` (for set_link).
    func attach(_ nic: VirtioNetDevice, to id: String?) {
        guard let id else { return }
        backends.withLock { $0[id]?.nic = nic }
    }

    /// QEMU's default MAC for the next NIC without mac=.
    func nextDefaultMAC() -> MACAddress {
        nicCount.withLock { n in
            defer { n += 1 }
            return .qemuDefault(index: n)
        }
    }

    /// The NIC on netdev `name`, for set_link by netdev id.
    func nic(onNetdev name: String) -> VirtioNetDevice? { backends.withLock { $0[name]?.nic } }

    private static func log(_ line: String) {
        var text = line + "\n"
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
