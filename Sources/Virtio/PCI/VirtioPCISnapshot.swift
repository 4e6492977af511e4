import PCI
import VMMBase

extension VirtioFeatures: Codable {}
extension VirtioDeviceStatus: Codable {}

extension VirtioPCIFunction: SnapshottableFunction {
    public static var snapshotModel: String { "virtio-pci" }
}

extension VirtioPCIFunction: DeviceStateSnapshotting {
    /// The transport's state: config space, MSI-X table and PBA, common config (status,
    /// feature selectors and accepted words, config vector and generation, each queue's
    /// size, vector, enable and ring addresses), the ISR, and, once DRIVER_OK started the
    /// device, each enabled queue's position in its rings; and the device's own state (a
    /// NIC's MAC and filters), which the device encodes. Host backends are not part of it.
    public struct Snapshot: Sendable, Hashable, Codable {
        var config: ConfigSpace
        var interrupts: InterruptArbiter
        var common: VirtioCommonConfiguration
        var isr: UInt8
        /// Empty before DRIVER_OK started the device; else one per queue (nil: not enabled).
        var queuePositions: [VirtQueue.Cursor?]
        /// `VirtioDevice.snapshotState()`; nil for a device that keeps none.
        var device: ModelState?
    }

    public func snapshot() -> Snapshot {
        // Outside the transport's lock: the device takes its own, which its I/O thread holds
        // while it signals through the transport.
        let device = device.snapshotState()
        return state.withLock { s in
            Snapshot(config: s.config, interrupts: s.interrupts, common: s.common, isr: s.isr,
                     queuePositions: s.active.map { queue in queue?.cursor.withLock { $0 } }, device: device)
        }
    }

    /// Resets the device, puts the registers and the device's own state back and, when the
    /// snapshot's device was started, starts it again on the same queues at the same ring
    /// positions, with the restored state from its first frame.
    public func restore(_ snapshot: Snapshot) throws(DeviceStateError) {
        try state.withLock { s throws(DeviceStateError) in try Self.check(snapshot, fits: s, device: name) }
        let restoreDeviceState = try device.prepareRestore(snapshot.device)
        resetDevice()
        // The reset ended the device's activation (its I/O thread is joined), and the new one
        // starts in `activate` below: nothing runs the device in between.
        restoreDeviceState()
        let (delivery, output) = state.withLock { s in
            let delivery = s.interrupts.delivery(restoring: snapshot.interrupts)
            s.config = snapshot.config
            s.interrupts = snapshot.interrupts
            s.common = snapshot.common
            s.isr = snapshot.isr
            return (delivery, s.output)
        }
        delivery.send(to: output)
        syncRoutedVectors()
        guard !snapshot.queuePositions.isEmpty else { return }
        activate(restoring: snapshot.queuePositions)
        if snapshot.common.status.contains(.needsReset) {
            state.withLock { s in for queue in s.active { queue?.stop() } }
        }
    }

    /// Another device, another transport layout, or queue registers this function could
    /// never hold (a snapshot is untrusted input: a bad queue size would trap `VirtQueue`).
    private static func check(_ snapshot: Snapshot, fits s: State, device: String) throws(DeviceStateError) {
        try s.config.checkLayout(of: snapshot.config, device: device)
        try s.interrupts.checkLayout(of: snapshot.interrupts, device: device)
        let identity = { (config: ConfigSpace) in config.get(0, width: 4) }
        guard identity(snapshot.config) == identity(s.config) else {
            throw .layoutMismatch(device: device, reason: "another virtio device type")
        }
        let common = snapshot.common
        guard common.offeredFeatures == s.common.offeredFeatures, common.vectorCount == s.common.vectorCount,
              common.queues.map(\.maximumSize) == s.common.queues.map(\.maximumSize),
              common.driverFeatureWords.count == 2 else {
            throw .layoutMismatch(device: device, reason: "other offered features, vectors or queues")
        }
        let packed = common.negotiatedFeatures.contains(.ringPacked)
        for (index, queue) in common.queues.enumerated()
        where !VirtQueue.acceptsSize(queue.size, packed: packed) || queue.size > queue.maximumSize {
            throw .invalidValue(device: device, reason: "queue \(index) size \(queue.size) is not \(packed ? "a size from 1" : "a power of two") up to \(queue.maximumSize)")
        }
        let positions = snapshot.queuePositions
        guard positions.isEmpty || (positions.count == common.queues.count
                                    && zip(positions, common.queues).allSatisfy { ($0 != nil) == $1.enabled }) else {
            throw .invalidValue(device: device, reason: "queue positions do not match the enabled queues")
        }
    }
}
