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

    /// Receive and transmit queue size (QEMU's default rx/tx_queue_size).
    public static let dataQueueSize: UInt16 = 256
    /// Control queue size (QEMU's).
    public static let controlQueueSize: UInt16 = 64

    struct State {
        var config: VirtioNetConfig
        var datapath: NetDatapath?
    }
    private let state: Mutex<State>

    /// - Parameters:
    ///   - backend: one packet queue per queue pair, or none (frames sent are dropped,
    ///     nothing is received: QEMU's virtio-net without netdev=).
    ///   - pairs: queue pairs offered; MQ is offered when more than one. Pair i sends on
    ///     backend queue i; frames from every backend queue are received (queue j feeds
    ///     pair j modulo the pairs in use).
    public init(name: String, mac: MACAddress, backend: [any PacketQueue], pairs: Int) {
        precondition((1...256).contains(pairs) && (backend.isEmpty || backend.count >= pairs), "a backend queue per pair")
        self.name = name
        self.backend = backend
        self.maximumPairs = pairs
        deviceFeatures = VirtioFeatures(rawValue: VirtioNetFeatures.offered(multiQueue: pairs > 1).rawValue)
        queueMaximumSizes = Array(repeating: Self.dataQueueSize, count: 2 * pairs) + [Self.controlQueueSize]
        state = Mutex(State(config: VirtioNetConfig(mac: mac, maximumPairs: UInt16(pairs)), datapath: nil))
    }

    public var config: VirtioNetConfig { state.withLock { $0.config } }

    public func readConfiguration(at offset: Int, width: AccessWidth) -> UInt64 {
        let bytes = state.withLock { $0.config }.read(offset: offset, count: width.bytes)
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
        let previous = state.withLock { s -> NetDatapath? in
            defer { s.datapath = nil }
            return s.datapath
        }
        previous?.stop()
        let datapath = state.withLock { s -> Result<NetDatapath, VirtioActivationError> in
            do {
                let control = ControlState(filter: ReceiveFilter(mac: s.config.mac, filtersVLANs: negotiated.contains(.controlVLAN)),
                                           maximumPairs: pairs)
                let path = try NetDatapath(device: name, negotiated: negotiated, queues: activation.queues, pairs: pairs,
                                           controlIndex: controlIndex, backend: backend, control: control,
                                           linkUp: s.config.linkUp, interrupts: activation.interrupts, kicks: activation.kicks,
                                           controlChanged: { [weak self] control in
                                               self?.state.withLock { s in
                                                   s.config.mac = control.filter.mac
                                                   s.config.announcing = control.announcing
                                               }
                                           })
                s.datapath = path
                return .success(path)
            } catch {
                return .failure(VirtioActivationError("\(name): cannot start its I/O thread: \(error)"))
            }
        }
        // Buffers made available before DRIVER_OK are served now.
        try datapath.get().kickAll()
    }

    public func queueNotified(_ index: Int) {
        state.withLock { $0.datapath }?.kick(index)
    }

    public func reset() {
        let path = state.withLock { s -> NetDatapath? in
            let path = s.datapath
            s.datapath = nil
            s.config.announcing = false
            return path
        }
        path?.stop()
    }

    /// QMP set_link: the cable plugged in or pulled. The config status changes and a driver
    /// that negotiated STATUS gets a configuration interrupt; while down, frames are dropped
    /// both ways, as QEMU drops them.
    public func setLink(up: Bool) {
        let (changed, path) = state.withLock { s -> (Bool, NetDatapath?) in
            let changed = s.config.linkUp != up
            s.config.linkUp = up
            return (changed, s.datapath)
        }
        guard changed, let path else { return }
        path.setLink(up: up)
    }
}
