import HostNetwork
import HostOS
import Virtio
import VMMBase

/// What a netdev with vhost=on gives its NIC: one /dev/vhost-net instance per backend queue
/// (each serves one queue pair), and guest RAM as vhost must see it (read at each activation).
public struct VhostNetBackend: Sendable {
    public let devices: [any VhostNetIO]
    public let memory: @Sendable () -> [VhostMemoryRegion]

    public init(devices: [any VhostNetIO], memory: @escaping @Sendable () -> [VhostMemoryRegion]) {
        self.devices = devices
        self.memory = memory
    }
}

/// One activation's queue pairs handed to vhost-net: the guest's kicks go straight from KVM's
/// ioeventfds to the kernel's vhost worker, which moves frames between the rings and the tap;
/// its interrupt requests come back on one call eventfd per queue, which the device's I/O
/// thread turns into the queue's interrupt. The control queue stays with the I/O thread.
struct VhostNetSession: Sendable {
    let devices: [any VhostNetIO]
    /// The feature bits vhost takes part in, as negotiated.
    let features: UInt64
    let memory: @Sendable () -> [VhostMemoryRegion]
    /// Per data queue (2i receive, 2i+1 transmit): the ioeventfd KVM signals on a kick.
    let kicks: [Int32]
    /// Per data queue: the eventfd vhost signals for an interrupt.
    let calls: [SharedEventFD]

    /// Why vhost cannot serve this activation, or nil when it can (then the session is made).
    static func plan(_ backend: VhostNetBackend, negotiated: VirtioFeatures, pairs: Int, multiQueue: Bool,
                     tapQueues: Int, kicks: VirtioQueueKicks) -> Result<VhostNetSession, VirtioActivationError> {
        let offered = backend.devices.reduce(UInt64.max) { $0 & $1.features }
        guard let features = VhostNetFeatures.forKernel(negotiated: negotiated.rawValue, offered: offered) else {
            return .failure(VirtioActivationError("the driver negotiated features vhost-net does not serve (0x\(String(negotiated.rawValue, radix: 16)))"))
        }
        // Each tap queue is one vhost instance's: with fewer pairs in use than tap queues, the
        // others' frames would have no reader.
        guard pairs == tapQueues, backend.devices.count == tapQueues else {
            return .failure(VirtioActivationError("\(tapQueues) tap queues but \(pairs) queue pair\(pairs == 1 ? "" : "s") in use\(multiQueue ? "" : " (the driver did not take MQ)")"))
        }
        var kickDescriptors: [Int32] = []
        for queue in 0..<(2 * pairs) {
            guard let fd = kicks.descriptor(of: queue) else {
                return .failure(VirtioActivationError("queue \(queue) has no kick eventfd (kicks exit to the VMM: no KVM ioeventfd)"))
            }
            kickDescriptors.append(fd)
        }
        var calls: [SharedEventFD] = []
        do throws(SystemError) {
            for _ in 0..<(2 * pairs) { calls.append(try SharedEventFD()) }
        } catch {
            return .failure(VirtioActivationError("call eventfds: \(error)"))
        }
        return .success(VhostNetSession(devices: backend.devices, features: features, memory: backend.memory,
                                        kicks: kickDescriptors, calls: calls))
    }

    /// Hands every queue pair to its vhost instance: features, memory table, both vrings, and
    /// the tap queue as their backend. On the I/O thread (its sandbox list has these ioctls).
    func start(queues: [VirtQueue?], taps: [any PacketQueue]) throws(VirtioActivationError) {
        let regions = memory()
        for (pair, device) in devices.enumerated() {
            do throws(SystemError) {
                try device.setFeatures(features)
                try device.setMemoryTable(regions)
            } catch {
                throw VirtioActivationError("vhost-net for queue pair \(pair): \(error)")
            }
            for vring in 0..<2 {
                let index = 2 * pair + vring
                guard let queue = queues[safe: index] ?? nil else { continue }
                let size = UInt64(queue.size)
                let parts = [(queue.addresses.descriptorTable, 16 * size), (queue.addresses.driverArea, 6 + 2 * size),
                             (queue.addresses.deviceArea, 6 + 8 * size)]
                let hosts = parts.map { VhostMemoryRegion.hostAddress(of: $0.0, length: $0.1, in: regions) }
                guard let table = hosts[0], let available = hosts[1], let used = hosts[2] else {
                    throw VirtioActivationError("queue \(index): its rings are not all in guest RAM")
                }
                do throws(SystemError) {
                    try device.setVring(vring, VhostVring(size: queue.size, base: queue.nextAvailableIndex,
                                                          descriptorTable: table, availableRing: available, usedRing: used,
                                                          kick: kicks[index], call: calls[index].rawValue))
                    try device.setBackend(vring, descriptor: taps[pair].pollDescriptor)
                } catch {
                    throw VirtioActivationError("vhost-net for queue \(index): \(error)")
                }
            }
        }
    }

    /// Takes the queues back (detaches the taps, stops the vrings); failures are logged.
    func stop(device name: String) {
        for (pair, device) in devices.enumerated() {
            for vring in 0..<2 {
                do throws(SystemError) {
                    try device.setBackend(vring, descriptor: -1)
                    _ = try device.stopVring(vring)
                } catch {
                    GuestErrorLog.report(device: name, kind: "vhost", "stopping queue \(2 * pair + vring): \(error)")
                }
            }
        }
    }
}
