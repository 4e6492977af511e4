/// The machine's set of devices at one moment — their QOM paths and the naming of anonymous
/// devices — so that a machine can be put back to it (`removeDevices(addedSince:)`) before
/// `restoreDevices` puts back their state.
public struct DeviceSetMark: Sendable, Hashable {
    let paths: Set<String>
    let anonymousDevicesNamed: Int
}

extension Machine {
    public func deviceSetMark() -> DeviceSetMark {
        DeviceSetMark(paths: Set(devices.map(\.qomPath)), anonymousDevicesNamed: topology.anonymousDevicesNamed)
    }

    /// Detaches every device that is not in `mark`, at once and with no hot-plug controller
    /// asked or told (their state is what `restoreDevices` puts back next), and names anonymous
    /// devices from where `mark` did. No DEVICE_DELETED is sent: no guest saw a removal.
    /// Returns whether the machine now has exactly the mark's devices (false when one of them
    /// went meanwhile, or shared a slot with an added one).
    public func removeDevices(addedSince mark: DeviceSetMark) -> Bool {
        var removed: [PlacedDevice] = []
        for placed in devices where !mark.paths.contains(placed.qomPath) {
            removed += topology.removeSlot(busName: placed.busName, device: placed.devfn >> 3)
        }
        if !removed.isEmpty {
            for placed in removed { disconnectOutputs(placed) }
            topologyChanged(attachingOrDetaching: removed)
        }
        topology.anonymousDevicesNamed = mark.anonymousDevicesNamed
        return deviceSetMark() == mark
    }
}
