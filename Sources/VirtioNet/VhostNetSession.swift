import HostNetwork
import HostOS
import Virtio
import VMMBase

/// What a netdev with vhost=on gives its NIC: one /dev/vhost-net instance per backend queue
/// (each serves one queue pair), and guest RAM as vhost must see it (read at each activation;
/// the rings' own addresses come through the queues' DMA ports).
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
/// its interrupt requests go to each queue's call eventfd: under MSI-X the queue's vector
/// eventfd, which KVM turns into the message (an irqfd: no thread of ours wakes), else one the
/// device's I/O thread answers with the queue's interrupt (INTx, or no in-kernel routes). The
/// control queue stays with the I/O thread.
struct VhostNetSession: Sendable {
    let devices: [any VhostNetIO]
    /// The feature bits vhost takes part in, as negotiated.
    let features: UInt64
    let memory: @Sendable () -> [VhostMemoryRegion]
    /// Per data queue (2i receive, 2i+1 transmit): the ioeventfd KVM signals on a kick.
    let kicks: [SharedEventFD]
    /// Per data queue: the eventfd vhost signals for an interrupt.
    let calls: [Int32]
    /// The call eventfds the I/O thread answers (queues without an in-kernel vector route).
    let relayed: [(queue: Int, event: SharedEventFD)]

    /// Why vhost cannot serve this activation, or nil when it can (then the session is made).
    /// - Parameter interruptEvents: the activation's in-kernel interrupt eventfds per queue.
    static func plan(_ backend: VhostNetBackend, negotiated: VirtioFeatures, pairs: Int, multiQueue: Bool,
                     tapQueues: Int, kicks: VirtioQueueKicks, interruptEvents: [Int32?]) -> Result<VhostNetSession, VirtioActivationError> {
        let offered = backend.devices.reduce(UInt64.max) { $0 & $1.features }
        guard let features = VhostNetFeatures.forKernel(negotiated: negotiated.rawValue, offered: offered) else {
            return .failure(VirtioActivationError("the driver negotiated features vhost-net does not serve (0x\(String(negotiated.rawValue, radix: 16)))"))
        }
        // Each tap queue is one vhost instance's; the pairs the driver has serve the first ones,
        // and the tap queues past them are detached (NetDatapath), so the host sends them nothing.
        guard pairs <= tapQueues, backend.devices.count == tapQueues else {
            return .failure(VirtioActivationError("\(tapQueues) tap queues and \(backend.devices.count) vhost-net instances for \(pairs) queue pair\(pairs == 1 ? "" : "s")\(multiQueue ? "" : " (the driver did not take MQ)")"))
        }
        var kickEvents: [SharedEventFD] = []
        for queue in 0..<(2 * pairs) {
            guard let event = kicks.event(of: queue) else {
                return .failure(VirtioActivationError("queue \(queue) has no kick eventfd (kicks exit to the VMM: no KVM ioeventfd)"))
            }
            kickEvents.append(event)
        }
        var calls: [Int32] = []
        var relayed: [(queue: Int, event: SharedEventFD)] = []
        do throws(SystemError) {
            for queue in 0..<(2 * pairs) {
                if let routed = interruptEvents[safe: queue] ?? nil {
                    calls.append(routed)
                } else {
                    let event = try SharedEventFD()
                    relayed.append((queue, event))
                    calls.append(event.rawValue)
                }
            }
        } catch {
            return .failure(VirtioActivationError("call eventfds: \(error)"))
        }
        return .success(VhostNetSession(devices: Array(backend.devices.prefix(pairs)), features: features, memory: backend.memory,
                                        kicks: kickEvents, calls: calls, relayed: relayed))
    }

    /// Hands every queue pair to its vhost instance: features, memory table, both vrings, and
    /// the tap queue as their backend (while the link is up). On the I/O thread (its sandbox list has these ioctls).
    /// - Parameter attached: whether the vrings get their tap now (the link is up).
    func start(queues: [VirtQueue?], taps: [any PacketQueue], attached: Bool) throws(VirtioActivationError) {
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
                let rings = try queue.hostRings()
                do throws(SystemError) {
                    try device.setVring(vring, VhostVring(size: queue.size, base: queue.nextAvailableIndex,
                                                          descriptorTable: rings.descriptorTable, availableRing: rings.availableRing,
                                                          usedRing: rings.usedRing,
                                                          kick: kicks[index].rawValue, call: calls[index]))
                    if attached { try device.setBackend(vring, descriptor: taps[pair].pollDescriptor) }
                } catch {
                    throw VirtioActivationError("vhost-net for queue \(index): \(error)")
                }
            }
        }
    }

    /// Attaches every vring to its pair's tap queue, or detaches them (the link is down, as
    /// QMP's set_link set it: vhost then moves nothing, as QEMU stops vhost while the link is
    /// down; frames the driver queued meanwhile go once the link is up). Failures are logged.
    func attach(_ attached: Bool, taps: [any PacketQueue], device name: String) {
        for (pair, device) in devices.enumerated() {
            for vring in 0..<2 {
                do throws(SystemError) {
                    try device.setBackend(vring, descriptor: attached ? taps[pair].pollDescriptor : -1)
                } catch {
                    GuestErrorLog.report(device: name, kind: "vhost", "\(attached ? "attaching" : "detaching") queue \(2 * pair + vring): \(error)")
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
