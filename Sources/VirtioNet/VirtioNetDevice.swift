import HostNetwork
import Synchronization
import Virtio
import VMMBase

/// The virtio network device (virtio 1.x, 5.1) over a packet backend: one tap queue per
/// queue pair. Queues 2i and 2i+1 are pair i's receive and transmit queues; the control
/// queue is the last one (index 2 when the driver did not take MQ).
///
/// All queue work runs on one I/O thread per activation (`NetDatapath`): a kick only wakes it.
public final class VirtioNetDevice: VirtioDevice {
    public let name: String
    public var deviceType: VirtioDeviceType { .network }
    public let deviceFeatures: VirtioFeatures
    public let queueMaximumSizes: [UInt16]
    public var configurationSize: Int { VirtioNetConfig.size }
    /// Its I/O thread waits on the kick eventfds with the tap fds.
    public var answersKicksItself: Bool { true }
    /// The queue pairs offered (max_virtqueue_pairs).
    public let maximumPairs: Int
    let backend: [any PacketQueue]
    /// vhost=on: the kernel moves the frames when an activation allows it (else the I/O thread does).
    let vhost: VhostNetBackend?

    /// Receive and transmit queue size (QEMU's default rx/tx_queue_size).
    public static let dataQueueSize: UInt16 = 256
    /// Control queue size (QEMU's).
    public static let controlQueueSize: UInt16 = 64

    /// The MAC from the command line, which a reset puts back.
    public let configuredMAC: MACAddress
    /// The device's own state: one copy, which its I/O thread also uses.
    let shared: SharedNetState
    /// The current activation's I/O thread.
    private let datapath = Mutex<NetDatapath?>(nil)

    /// - Parameters:
    ///   - backend: one packet queue per queue pair, or none (frames sent are dropped,
    ///     nothing is received: QEMU's virtio-net without netdev=).
    ///   - pairs: queue pairs offered; MQ is offered when more than one. Pair i sends on
    ///     backend queue i; frames from every backend queue are received (queue j feeds
    ///     pair j modulo the pairs in use).
    ///   - vhost: one vhost-net instance per backend queue, or nil for the userspace datapath.
    public init(name: String, mac: MACAddress, backend: [any PacketQueue], pairs: Int, vhost: VhostNetBackend? = nil) {
        precondition((1...256).contains(pairs) && (backend.isEmpty || backend.count >= pairs), "a backend queue per pair")
        self.name = name
        self.backend = backend
        self.vhost = vhost
        self.maximumPairs = pairs
        configuredMAC = mac
        deviceFeatures = VirtioFeatures(rawValue: VirtioNetFeatures.offered(multiQueue: pairs > 1).rawValue)
        queueMaximumSizes = Array(repeating: Self.dataQueueSize, count: 2 * pairs) + [Self.controlQueueSize]
        shared = SharedNetState(control: .powerOn(mac: mac), linkUp: true)
    }

    public var config: VirtioNetConfig {
        let control = shared.control.withLock { $0 }
        return VirtioNetConfig(mac: control.filter.mac, linkUp: shared.linkUp.load(ordering: .acquiring),
                               announcing: control.announcing, maximumPairs: UInt16(maximumPairs))
    }

    public func readConfiguration(at offset: Int, width: AccessWidth) -> UInt64 {
        let bytes = config.read(offset: offset, count: width.bytes)
        return bytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    /// The driver cannot write mac, status or max_virtqueue_pairs in virtio 1.x.
    public func writeConfiguration(at offset: Int, width: AccessWidth, value: UInt64) {
        GuestErrorLog.report(device: name, kind: "config-write", "write to read-only device configuration at \(offset)")
    }

    public func activate(_ activation: VirtioActivation) throws(VirtioActivationError) {
        let negotiated = VirtioNetFeatures(rawValue: activation.features.rawValue & VirtioFeatures.deviceSpecificMask.rawValue)
        let pairs = negotiated.contains(.multiQueue) ? maximumPairs : 1
        let controlIndex = negotiated.contains(.controlQueue) ? (negotiated.contains(.multiQueue) ? 2 * maximumPairs : 2) : nil
        // A previous activation's thread ends first, outside the lock its callbacks take.
        datapath.withLock { path in
            defer { path = nil }
            return path
        }?.stop()
        // The state is the reset's or a restored one (`prepareRestore`), kept as it is.
        shared.control.withLock { $0.fit(negotiated: negotiated, maximumPairs: pairs) }
        var session: VhostNetSession?
        if let vhost {
            switch VhostNetSession.plan(vhost, negotiated: activation.features, pairs: pairs,
                                        multiQueue: negotiated.contains(.multiQueue), tapQueues: backend.count, kicks: activation.kicks,
                                        interruptEvents: activation.queueInterruptEvents) {
            case .success(let planned): session = planned
            case .failure(let reason):
                GuestErrorLog.report(device: name, kind: "vhost", "vhost-net cannot serve this activation: \(reason); using the userspace datapath")
            }
        }
        let started = datapath.withLock { path -> Result<NetDatapath, VirtioActivationError> in
            do {
                let started = try NetDatapath(device: name, negotiated: negotiated, queues: activation.queues, pairs: pairs,
                                              controlIndex: controlIndex, backend: backend, shared: shared,
                                              interrupts: activation.interrupts, kicks: activation.kicks, vhost: session)
                path = started
                return .success(started)
            } catch {
                return .failure(VirtioActivationError("\(name): cannot start its I/O thread: \(error)"))
            }
        }
        // Buffers made available before DRIVER_OK are served now.
        try started.get().kickAll()
    }

    public func queueNotified(_ index: Int) {
        datapath.withLock { $0 }?.kick(index)
    }

    /// Ends the activation's I/O thread, then returns the control state to power-on (the
    /// configured MAC included, as QEMU's reset); the link is the host's and stays.
    public func reset() {
        datapath.withLock { path in
            defer { path = nil }
            return path
        }?.stop()
        shared.control.withLock { $0 = .powerOn(mac: configuredMAC) }
    }

    /// QMP set_link: the cable plugged in or pulled. The config status changes and a driver
    /// that negotiated STATUS gets a configuration interrupt; while down, frames are dropped
    /// both ways, as QEMU drops them.
    public func setLink(up: Bool) {
        let changed = shared.linkUp.exchange(up, ordering: .acquiringAndReleasing) != up
        guard changed, let path = datapath.withLock({ $0 }) else { return }
        path.linkChanged()
    }
}

/// virtio-net's own state, held once and shared by the device (config reads, QMP set_link,
/// snapshots) and its I/O thread (control commands, filtering, steering).
final class SharedNetState: Sendable {
    /// What the control queue sets; the I/O thread applies each command whole under the lock.
    let control: Mutex<ControlState>
    /// The config status's LINK_UP: frames pass both ways only while set.
    let linkUp: Atomic<Bool>

    init(control: ControlState, linkUp: Bool) {
        self.control = Mutex(control)
        self.linkUp = Atomic(linkUp)
    }
}
