import VMMBase

/// A virtio device as the transport sees it: what it offers, its configuration space, and its
/// queues once the driver has set them up. The transport (`VirtioPCIFunction`) owns feature
/// negotiation, the status state machine, queue registers and interrupts; a device only
/// serves requests.
///
/// Threads: `queueNotified` comes from a vCPU (an MMIO write to the notify area) or, for a
/// kick KVM caught (an ioeventfd), from the shared `virtio-kicks` thread or, when
/// `answersKicksItself`, from the device's own event loop; config accesses from vCPUs. A device locks
/// its own state. The transport never holds its lock while calling the device.
public protocol VirtioDevice: AnyObject, Sendable {
    /// For logs and guest-error lines ("virtio-rng", "net0").
    var name: String { get }
    var deviceType: VirtioDeviceType { get }
    /// Device-type feature bits it offers (0-23, 50-63). The transport adds
    /// `VirtioFeatures.transport`; reserved bits here are ignored.
    var deviceFeatures: VirtioFeatures { get }
    /// The largest size of each queue (a power of two, 1...32768); the count is the number
    /// of queues.
    var queueMaximumSizes: [UInt16] { get }
    /// Bytes of device-specific configuration (0 for none).
    var configurationSize: Int { get }
    /// The device waits on its queues' kick eventfds (`VirtioActivation.kicks`) on its own
    /// event loop; otherwise the shared kick thread answers them.
    var answersKicksItself: Bool { get }

    /// A driver read of the device configuration; `offset + width <= configurationSize`.
    func readConfiguration(at offset: Int, width: AccessWidth) -> UInt64
    /// A driver write of the device configuration; `offset + width <= configurationSize`.
    func writeConfiguration(at offset: Int, width: AccessWidth, value: UInt64)

    /// The driver set DRIVER_OK: start serving `activation.queues`. Throwing leaves the device
    /// inactive; the transport then reports the error and sets NEEDS_RESET.
    func activate(_ activation: VirtioActivation) throws(VirtioActivationError)
    /// The driver kicked queue `index` (an enabled queue of the current activation).
    func queueNotified(_ index: Int)
    /// The driver reset the device (status 0, a function reset, or the machine's): stop using
    /// the queues of the last activation and return to the power-on state. Called also when
    /// no activation happened.
    func reset()

    /// The device's own guest-visible state beyond the transport's (a NIC's MAC and
    /// filters), for the transport's snapshot; nil when it has none.
    func snapshotState() -> ModelState?
    /// Checks `state` (untrusted) and returns what puts it in. The transport's restore calls
    /// it before changing anything, and runs the result after resetting the device and
    /// before activating it again, so the activation starts from the restored state.
    func prepareRestore(_ state: ModelState?) throws(DeviceStateError) -> @Sendable () -> Void
}

extension VirtioDevice {
    public var configurationSize: Int { 0 }
    public var answersKicksItself: Bool { false }
    public func readConfiguration(at offset: Int, width: AccessWidth) -> UInt64 { 0 }
    public func writeConfiguration(at offset: Int, width: AccessWidth, value: UInt64) {}
    public func snapshotState() -> ModelState? { nil }
    public func prepareRestore(_ state: ModelState?) throws(DeviceStateError) -> @Sendable () -> Void {
        guard state == nil else { throw .layoutMismatch(device: name, reason: "device state of a device that keeps none") }
        return {}
    }
}

/// What a device gets when the driver sets DRIVER_OK.
public struct VirtioActivation: Sendable {
    /// The features both sides agreed on (FEATURES_OK was accepted for exactly these).
    public let features: VirtioFeatures
    /// Indexed by queue number: nil for a queue the driver did not enable.
    public let queues: [VirtQueue?]
    /// Configuration-change interrupts (queue interrupts go through `VirtQueue`).
    public let interrupts: any VirtioInterruptSignaller
    /// The enabled queues' kick eventfds, for a device that `answersKicksItself` (else none).
    public let kicks: VirtioQueueKicks
    /// Indexed by queue: an eventfd whose signal raises the queue's MSI-X vector in the kernel
    /// (a KVM irqfd), for a backend that signals interrupts itself (vhost); nil where the
    /// queue's interrupts go through `VirtQueue`/`signalQueue` (no vector, MSI-X off). Empty
    /// when the machine routes no vectors in the kernel (qtest). The transport owns them.
    public let queueInterruptEvents: [Int32?]

    public init(features: VirtioFeatures, queues: [VirtQueue?], interrupts: any VirtioInterruptSignaller,
                kicks: VirtioQueueKicks = .none, queueInterruptEvents: [Int32?] = []) {
        self.features = features
        self.queues = queues
        self.interrupts = interrupts
        self.kicks = kicks
        self.queueInterruptEvents = queueInterruptEvents
    }
}

/// Why a device refused to start.
public struct VirtioActivationError: Error, Hashable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// How a device (or one of its queues) interrupts the driver. Call without holding a lock
/// the transport could need (it takes its own).
public protocol VirtioInterruptSignaller: Sendable {
    /// Used buffers in queue `index`: ISR bit 0 and the queue's MSI-X vector (or INTx).
    func signalQueue(_ index: Int)
    /// The device configuration changed: config_generation moves on, ISR bit 1 and the
    /// configuration MSI-X vector (or INTx).
    func signalConfigurationChange()
    /// Bad guest input made the device unusable: NEEDS_RESET is set, a configuration
    /// interrupt is sent and one rate-limited guest-error line is logged. Queues stop
    /// serving until the driver resets the device.
    func deviceNeedsReset(_ reason: String)
}
