import PCI
import VMMBase

extension AssignedPCIFunction: SnapshottableFunction {
    public static var snapshotModel: String { "vfio-pci" }
}

extension AssignedPCIFunction: DeviceStateSnapshotting {
    /// The overlay's state: the emulated config registers (and the mirror of those the VMM
    /// follows) and the virtual MSI-X table and PBA. The device's own registers and BAR
    /// contents are the device's, not part of it.
    public struct Snapshot: Sendable, Hashable, Codable {
        var cells: ConfigSpace
        var arbiter: InterruptArbiter
    }

    public func snapshot() -> Snapshot { state.withLock { Snapshot(cells: $0.config.cells, arbiter: $0.arbiter) } }

    /// Puts the overlay back, hands the device the mirrored registers, and asks VFIO for the
    /// interrupts the restored MSI/MSI-X state enables (eventfds and routes as a guest write
    /// would set them up).
    public func restore(_ snapshot: Snapshot) throws(DeviceStateError) {
        let (desired, generation) = try state.withLock { s throws(DeviceStateError) in
            try s.config.cells.checkLayout(of: snapshot.cells, device: name)
            try s.arbiter.checkLayout(of: snapshot.arbiter, device: name)
            guard snapshot.cells.get(0, width: 4) == s.config.cells.get(0, width: 4) else {
                throw .layoutMismatch(device: name, reason: "another vendor or device ID")
            }
            s.config.restore(cells: snapshot.cells, host: host)
            s.arbiter = snapshot.arbiter
            return Self.desired(&s, limits: limits, name: name)
        }
        interrupts.apply(desired, generation: generation)
    }
}
