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
        /// A macvtap link (and VF) this netdev holds: closed with the machine's networks.
        let macvtap: MacvtapBackend?
        /// vhost=on: one /dev/vhost-net instance per queue (empty: the userspace datapath).
        let vhost: [any VhostNetIO]
        var user: String?
        var nic: VirtioNetDevice?
    }
    private let backends: Mutex<[String: Backend]>
    /// NICs made so far, for QEMU's default MACs (52:54:00:12:34:56 + n).
    private let nicCount = Mutex(0)

    init(_ specs: [NetdevSpec]) throws(MachineConfigurationError) {
        var opened: [String: Backend] = [:]
        do {
            for spec in specs {
                if spec.type == "macvtap" {
                    let (macvtap, queues, vhost) = try Self.openMacvtap(spec)
                    opened[spec.id] = Backend(spec: spec, queues: queues, macvtap: macvtap,
                                              vhost: vhost ? Self.openVhost(spec, queues: queues.count) : [], user: nil, nic: nil)
                } else {
                    let (queues, vhost) = try Self.open(spec)
                    opened[spec.id] = Backend(spec: spec, queues: queues, macvtap: nil,
                                              vhost: vhost ? Self.openVhost(spec, queues: queues.count) : [], user: nil, nic: nil)
                }
            }
        } catch {
            for backend in opened.values { try? backend.macvtap?.close() }
            throw error
        }
        backends = Mutex(opened)
    }

    /// Opens a macvtap netdev (an existing link, a new one on a lower device, or a passthru one
    /// on a free SR-IOV VF) and adopts each of its queues as a tap queue; and whether it asked
    /// for vhost=on.
    private static func openMacvtap(_ spec: NetdevSpec) throws(MachineConfigurationError) -> (MacvtapBackend, [any PacketQueue], vhost: Bool) {
        let label = "macvtap,id=\(spec.id)"
        let backend: MacvtapBackend
        let options: MacvtapNetdevOptions
        do {
            options = try MacvtapNetdevOptions(properties: spec.macvtapProperties)
            backend = try MacvtapBackend(options: options, socket: try RouteSocket())
        } catch {
            throw .netdev(label, reason: "\(error)")
        }
        var queues: [any PacketQueue] = []
        do throws(TapError) {
            while let fd = backend.takeQueue() { queues.append(try TapQueue(adopting: fd)) }
        } catch {
            try? backend.close()
            throw .netdev(label, reason: "\(error)")
        }
        return (backend, queues, options.vhost)
    }

    /// Guest RAM as vhost-net must see it, from the machine once its memory exists.
    private let guestRAM = Mutex<(@Sendable () -> [VhostMemoryRegion])?>(nil)

    func provideGuestRAM(_ regions: @escaping @Sendable () -> [VhostMemoryRegion]) {
        guestRAM.withLock { $0 = regions }
    }

    /// vhost=on: one /dev/vhost-net instance per tap (or macvtap) queue, opened and owned now (set-up, before
    /// the sandbox). Where it cannot be opened the userspace datapath serves, with a line saying why.
    private static func openVhost(_ spec: NetdevSpec, queues: Int) -> [any VhostNetIO] {
        var devices: [any VhostNetIO] = []
        do throws(SystemError) {
            for _ in 0..<queues { devices.append(try VhostNetDevice()) }
        } catch {
            let fix = error.errno.rawValue == ENOENT ? " (modprobe vhost_net)" : ""
            log("switchyard: -netdev \(spec.type),id=\(spec.id): vhost=on: /dev/vhost-net: \(error)\(fix); using the userspace datapath")
            return []
        }
        return devices
    }

    /// The vhost-net instances of netdev `id` with guest RAM's table, or nil when it has none.
    func vhostBackend(of id: String) -> VhostNetBackend? {
        guard let devices = backends.withLock({ $0[id]?.vhost }), !devices.isEmpty else { return nil }
        return VhostNetBackend(devices: devices, memory: { [weak self] in self?.guestRAM.withLock { $0 }?() ?? [] })
    }

    /// Deletes the macvtap links Switchyard made and gives SR-IOV VFs their settings back.
    /// A failure is said on standard error (a VF left with the guest's MAC, a link left behind:
    /// the operator's to clean up), and the others still close.
    func close() {
        for (id, backend) in backends.withLock({ Array($0) }).sorted(by: { $0.key < $1.key }) {
            do { try backend.macvtap?.close() } catch {
                let line = "switchyard: netdev \(id): closing it failed: \(error)\n"
                _ = line.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
            }
        }
    }

    /// The MAC a NIC on netdev `id` must use when none is given: a macvtap link outside
    /// passthru mode delivers by destination address, so the NIC takes the link's.
    func linkAddress(of id: String) -> MACAddress? {
        backends.withLock { $0[id]?.macvtap?.address }
    }

    /// Opens a tap netdev's queues: by interface name (IFF_MULTI_QUEUE when queues > 1) or by
    /// adopting the fds the caller passed; and whether it asked for vhost=on.
    private static func open(_ spec: NetdevSpec) throws(MachineConfigurationError) -> (queues: [any PacketQueue], vhost: Bool) {
        let options: TapNetdevOptions
        do {
            options = try TapNetdevOptions(spec.properties)
        } catch {
            throw .netdev("tap,id=\(spec.id)", reason: error.reason)
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
        return (queues, options.vhost)
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

    /// NIC `user` was unplugged: netdev `id` is free for another NIC (QEMU frees a netdev's
    /// peer when its NIC is deleted).
    func release(_ id: String, from user: String) {
        backends.withLock { b in
            guard var backend = b[id], backend.user == user else { return }
            backend.user = nil
            backend.nic = nil
            b[id] = backend
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
